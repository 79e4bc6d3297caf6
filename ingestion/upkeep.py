"""The plain-PostgreSQL historian's upkeep, done by one worker at a time: the leader.

Every worker runs :meth:`Upkeep.run` beside its flush loop, on a connection of its own (a long rollup
statement never holds a batch up). It tries for a session-level advisory lock (:data:`LEADER_LOCK`); the
worker holding it is the leader and, every ``db.upkeep_interval`` seconds:

1. creates the day partitions of today and the days ahead (:func:`ingestion.partitions.ensure`; a worker
   makes those of a backfill itself when its COPY needs them), and drops the ones past the raw retention
   (:func:`ingestion.partitions.drop_expired`);
2. rolls the 1-minute and 1-hour layers up, late data included (:func:`ingestion.rollups.refresh`, in
   bounded steps, until caught up or ``ROUND_STEPS`` steps), and deletes rollup buckets past their retention.

The lock goes with the connection: a leader that dies or loses its database frees it, and another worker
takes over at its next try. Every statement is bounded (``db.upkeep_timeout``) and cut short by ``stop``. On
TimescaleDB its background jobs do all of this, and the daemon does not start an Upkeep.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from ingestion import metrics as m
from ingestion import partitions, rollups
from ingestion.settings import DbSettings
from nexus import pg
from nexus.report import describe
from nexus.runtime import Backoff, sleep_or_stop

log = logging.getLogger("ingestion.upkeep")

LEADER_LOCK = 0x6E78756C  #: "nxul": held (session level) by the upkeep leader's connection
ROUND_STEPS = 24  #: rollup steps per round at most (catching up after an upgrade takes several rounds)


class Upkeep:
    def __init__(self, db: DbSettings, *, worker: str) -> None:
        self.db = db
        self.worker = worker
        self.leader = False  #: this worker holds the leader lock
        self.rounds = 0  #: rounds done as the leader

    async def run(self, stop: Any) -> None:
        """Until ``stop``: connect, try for the lead, do the rounds; any failure means a new connection
        after a backoff (the lead is given up with the old one). Never raises."""
        backoff = Backoff(first=1.0, cap=30.0)
        while not stop.is_set():
            conn = await pg.connect(self.db.dsn, connect_timeout=self.db.connect_timeout, stop=stop)
            if conn is None:
                return
            try:
                await self._serve(conn, stop, backoff)
            except pg.Stopped:
                return
            except (psycopg.Error, TimeoutError) as exc:
                m.UPKEEP_ERRORS.inc()
                log.warning("historian upkeep failed (%s); reconnecting", describe(exc, 300))
            except Exception as exc:  # the upkeep must never take the worker down
                m.UPKEEP_ERRORS.inc()
                log.exception("historian upkeep: unexpected %s", describe(exc, 300))
            finally:
                if self.leader:
                    log.info("upkeep leader: %s gives the lead up", self.worker)
                self.leader = False
                m.UPKEEP_LEADER.set(0)
                await conn.close()
            if await backoff.wait(stop):
                return

    async def _serve(self, conn: psycopg.AsyncConnection[Any], stop: Any, backoff: Backoff) -> None:
        while not stop.is_set():
            if not self.leader and await self._bounded(_try_lead(conn), stop):
                self.leader = True
                m.UPKEEP_LEADER.set(1)
                log.info("upkeep leader: %s (partitions, retention, rollups)", self.worker)
            if self.leader:
                await self.round(conn, stop)
                backoff.reset()
            if await sleep_or_stop(self.db.upkeep_interval, stop):
                return

    async def _bounded(self, op: Any, stop: Any) -> Any:
        return await pg.bounded(op, timeout=self.db.upkeep_timeout, stop=stop)

    async def round(self, conn: psycopg.AsyncConnection[Any], stop: Any) -> rollups.RefreshResult:
        """One round of upkeep (the leader's; also called directly by tests)."""
        db, t0 = self.db, time.perf_counter()
        parts = await self._bounded(partitions.ensure(conn, ahead_days=db.partition_ahead_days), stop)
        await self._bounded(partitions.drop_expired(conn, keep_days=db.retention_days, res=parts), stop)
        total = rollups.RefreshResult()
        for _ in range(ROUND_STEPS):
            res = await self._bounded(rollups.refresh(conn, keep_raw_days=db.retention_days,
                                                      keep_1m_days=db.retention_1m_days), stop)
            total.buckets += res.buckets
            total.ranges += res.ranges
            total.behind = res.behind
            if not res.behind:
                break
        expired = await self._bounded(rollups.drop_expired(conn, keep_1m_days=db.retention_1m_days,
                                                           keep_1h_days=db.retention_1h_days), stop)
        lag = await self._bounded(_rollup_lag(conn), stop)
        self.rounds += 1
        m.UPKEEP_ROUNDS.inc()
        m.UPKEEP_SECONDS.observe(time.perf_counter() - t0)
        m.PARTITIONS_CREATED.inc(parts.created)
        m.PARTITIONS_DROPPED.inc(len(parts.dropped))
        m.ROLLUP_BUCKETS.inc(total.buckets)
        m.ROLLUP_LAG.set(lag)
        if parts.created or parts.dropped or total.ranges or expired:
            log.info("upkeep: %d partitions created, %d dropped; %d rollup buckets written, %d late ranges "
                     "re-aggregated, %d expired buckets deleted%s", parts.created, len(parts.dropped),
                     total.buckets, total.ranges, expired, "; still catching up" if total.behind else "")
        return total


async def _try_lead(conn: psycopg.AsyncConnection[Any]) -> bool:
    row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))).fetchone()
    return bool(row and row[0])


async def _rollup_lag(conn: psycopg.AsyncConnection[Any]) -> float:
    """Seconds between now and the minute layer's watermark (what the views compute at query time)."""
    row = await (await conn.execute(
        "SELECT CASE WHEN isfinite(watermark) THEN watermark END FROM nexus.rollup_state WHERE layer = 1")).fetchone()
    if not row or row[0] is None:
        return 0.0
    return max(0.0, float((datetime.now(UTC) - row[0]).total_seconds()))
