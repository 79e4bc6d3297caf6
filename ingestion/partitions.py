"""The day partitions of ``nexus.points`` on plain PostgreSQL (migration 009).

Every day partition is made by ``nexus.add_partitions(lo, hi)`` (one caller at a time, advisory lock):

- :func:`ensure`, by the upkeep leader each round: today and the next ``ahead_days`` days;
- :func:`add_for_points`, by a worker whose COPY met a day without a partition (a backfill, a spool replay
  after a long outage, a clock off): the days of its points, then the transaction is tried again. Days
  more than ``future_days`` ahead are not made (a clock years off would otherwise make a table per day it
  invents): those messages go to the dead letters with the database's error naming the missing partition.
- :func:`drop_expired`, by the leader: the partitions wholly older than the raw retention, detached then
  dropped (no trigger runs: the rollups keep their buckets).

DDL waits at most ``lock_timeout_ms`` for its locks (a dashboard's long query holds one) and is tried again
at the next round rather than queueing every writer behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from nexus import pg

log = logging.getLogger("ingestion.partitions")

DAY = timedelta(days=1)
_DAY_MS = 86_400_000


def day_start(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


def partition_name(day: datetime) -> str:
    return f"points_{day:%Y%m%d}"


@dataclass
class PartitionResult:
    created: int = 0
    dropped: list[str] = field(default_factory=list)


async def present(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``nexus.points`` is partitioned here (plain PostgreSQL, migration 009)."""
    row = await (await conn.execute("SELECT to_regprocedure('nexus.add_partitions(timestamptz, timestamptz)')"
                                    " IS NOT NULL")).fetchone()
    return bool(row and row[0])


async def partitions(conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, datetime, datetime]]:
    rows = await (await conn.execute("SELECT name, lo, hi FROM nexus.point_partitions ORDER BY lo")).fetchall()
    return [(str(n), lo, hi) for n, lo, hi in rows]


async def _add(conn: psycopg.AsyncConnection[Any], spans: Iterable[tuple[datetime, datetime]],
               lock_timeout_ms: int) -> int:
    """``nexus.add_partitions`` over each span, in one transaction; how many partitions it made."""
    made = 0
    async with conn.transaction():
        await pg.lock_timeout(conn, lock_timeout_ms)
        for lo, hi in spans:
            row = await (await conn.execute("SELECT nexus.add_partitions(%s, %s)", (lo, hi))).fetchone()
            made += int(row[0]) if row else 0
    return made


async def ensure(conn: psycopg.AsyncConnection[Any], *, ahead_days: int, lock_timeout_ms: int = 2000,
                 now: datetime | None = None) -> PartitionResult:
    """The partitions of today and the next ``ahead_days`` days; ``conn`` in autocommit mode."""
    today = day_start(now or datetime.now(UTC))
    res = PartitionResult()
    try:
        res.created = await _add(conn, [(today, today + (ahead_days + 1) * DAY)], lock_timeout_ms)
    except psycopg.errors.LockNotAvailable:
        log.warning("partitions ahead not created yet: a lock was busy for %d ms; next round", lock_timeout_ms)
    if res.created:
        log.info("%d day partitions created ahead", res.created)
    return res


def is_missing_partition(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's "no partition of relation ... found for row"."""
    return isinstance(exc, psycopg.errors.CheckViolation) and "no partition of relation" in str(exc)


async def add_for_points(conn: psycopg.AsyncConnection[Any], times_ms: Iterable[int], *, future_days: int,
                         lock_timeout_ms: int = 10_000, now: datetime | None = None) -> tuple[int, int]:
    """The missing partitions of the days of ``times_ms`` (Unix ms), those up to ``future_days`` ahead (made
    here, or by another worker meanwhile); (days that may have one, partitions made here). No day: the rows
    concerned are refused."""
    limit_ms = int((day_start(now or datetime.now(UTC)) + (future_days + 1) * DAY).timestamp() * 1000)
    days = sorted({t // _DAY_MS for t in times_ms if t < limit_ms})
    spans = [(datetime.fromtimestamp(d * 86_400, UTC), datetime.fromtimestamp((d + 1) * 86_400, UTC)) for d in days]
    made = await _add(conn, spans, lock_timeout_ms) if spans else 0
    if made:
        log.info("%d day partitions created for points of days without one (%s .. %s)", made,
                 spans[0][0].date(), spans[-1][0].date())
    return len(days), made


async def drop_expired(conn: psycopg.AsyncConnection[Any], *, keep_days: int, lock_timeout_ms: int = 2000,
                       now: datetime | None = None, res: PartitionResult | None = None) -> PartitionResult:
    """Drop the partitions the raw retention (``keep_days``; 0 = forever) no longer keeps."""
    res = res or PartitionResult()
    if keep_days <= 0:
        return res
    cutoff = (now or datetime.now(UTC)) - keep_days * DAY
    for name, _lo, hi in await partitions(conn):
        if hi > cutoff:
            continue
        ident = sql.Identifier("nexus", name)
        try:
            async with conn.transaction():
                await pg.lock_timeout(conn, lock_timeout_ms)
                await conn.execute(sql.SQL("ALTER TABLE nexus.points DETACH PARTITION {}").format(ident))
                await conn.execute(sql.SQL("DROP TABLE {}").format(ident))
        except psycopg.errors.LockNotAvailable:
            log.warning("partition %s not dropped yet: a lock was busy for %d ms; next round", name, lock_timeout_ms)
            continue
        res.dropped.append(name)
        log.info("partition nexus.%s dropped (retention %d days)", name, keep_days)
    return res
