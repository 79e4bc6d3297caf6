"""The day partitions of ``nexus.points`` on plain PostgreSQL (migration 009), kept by the upkeep leader.

- :func:`ensure` creates the partitions of today and the next ``ahead_days`` days, and of every day that has
  points in the DEFAULT partition (a backfill, a clock off), moving those rows in: the table is created
  alone, filled, then attached, each day in its own transaction. A day partition is never created for a day
  whose raw points retention would drop at once.
- :func:`drop_expired` drops the partitions wholly older than the raw retention (detached first) and deletes
  the DEFAULT partition's rows older than it, without marking the rollups stale (their buckets stay).

DDL waits at most ``lock_timeout`` for its locks (a dashboard's long query holds one) and is tried again
at the next round rather than queueing every writer behind it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("ingestion.partitions")

DAY = timedelta(days=1)


def day_start(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    return datetime(t.year, t.month, t.day, tzinfo=UTC)


def partition_name(day: datetime) -> str:
    return f"points_{day:%Y%m%d}"


@dataclass
class PartitionResult:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved_rows: int = 0  #: rows moved from the DEFAULT partition into a new day partition
    expired_default_rows: int = 0  #: rows of the DEFAULT partition older than the retention, deleted
    unpartitioned_rows: int = 0  #: rows left in the DEFAULT partition (days beyond the ones created ahead)


async def present(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``nexus.points`` is partitioned here (plain PostgreSQL, migration 009)."""
    row = await (await conn.execute("SELECT to_regclass('nexus.point_partitions') IS NOT NULL")).fetchone()
    return bool(row and row[0])


async def partitions(conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, datetime, datetime]]:
    rows = await (await conn.execute("SELECT name, lo, hi FROM nexus.point_partitions ORDER BY lo")).fetchall()
    return [(str(n), lo, hi) for n, lo, hi in rows]


async def ensure(conn: psycopg.AsyncConnection[Any], *, ahead_days: int, keep_days: int = 0,
                 lock_timeout_ms: int = 2000, now: datetime | None = None) -> PartitionResult:
    """Create the missing day partitions (see the module's doc); ``conn`` in autocommit mode."""
    now = now or datetime.now(UTC)
    today, res = day_start(now), PartitionResult()
    last = today + ahead_days * DAY
    oldest = day_start(now - keep_days * DAY) if keep_days > 0 else None
    wanted = {today + i * DAY for i in range(ahead_days + 1)}
    cur = await conn.execute(
        "SELECT DISTINCT nexus.day_start(time) FROM nexus.points_default WHERE time < %s", (last + DAY,))
    wanted |= {r[0] for r in await cur.fetchall()}
    have = await partitions(conn)
    for day in sorted(wanted):
        if (oldest is not None and day < oldest) or any(lo <= day < hi for _, lo, hi in have):
            continue
        name = partition_name(day)
        try:
            async with conn.transaction():
                await conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
                ident = sql.Identifier("nexus", name)
                # no insert into the DEFAULT partition between the move and the attach (which would then fail):
                # writers wait for this transaction, a moment, readers do not
                await conn.execute("LOCK TABLE nexus.points_default IN EXCLUSIVE MODE")
                await conn.execute(sql.SQL("CREATE TABLE {} (LIKE nexus.points INCLUDING DEFAULTS)").format(ident))
                moved = await conn.execute(sql.SQL(
                    "WITH moved AS (DELETE FROM nexus.points_default WHERE time >= %s AND time < %s RETURNING *)"
                    " INSERT INTO {} SELECT * FROM moved").format(ident), (day, day + DAY))
                await conn.execute(sql.SQL("ALTER TABLE nexus.points ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})")
                                   .format(ident, sql.Literal(day.isoformat()), sql.Literal((day + DAY).isoformat())))
        except psycopg.errors.LockNotAvailable:
            log.warning("partition %s not created yet: a lock was busy for %d ms; next round", name, lock_timeout_ms)
            continue
        res.created.append(name)
        res.moved_rows += max(moved.rowcount, 0)
        log.info("partition nexus.%s created%s", name,
                 f" with {moved.rowcount} rows from the default partition" if moved.rowcount > 0 else "")
    row = await (await conn.execute("SELECT count(*) FROM nexus.points_default")).fetchone()
    res.unpartitioned_rows = int(row[0]) if row else 0
    return res


async def drop_expired(conn: psycopg.AsyncConnection[Any], *, keep_days: int, lock_timeout_ms: int = 2000,
                       now: datetime | None = None, res: PartitionResult | None = None) -> PartitionResult:
    """Drop what the raw retention (``keep_days``; 0 = forever) no longer keeps."""
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
                await conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
                await conn.execute(sql.SQL("ALTER TABLE nexus.points DETACH PARTITION {}").format(ident))
                await conn.execute(sql.SQL("DROP TABLE {}").format(ident))
        except psycopg.errors.LockNotAvailable:
            log.warning("partition %s not dropped yet: a lock was busy for %d ms; next round", name, lock_timeout_ms)
            continue
        res.dropped.append(name)
        log.info("partition nexus.%s dropped (retention %d days)", name, keep_days)
    async with conn.transaction():
        await conn.execute("SET LOCAL nexus.upkeep = 'on'")  # not a change of history: the rollups keep it
        cur = await conn.execute("DELETE FROM nexus.points_default WHERE time < %s", (cutoff,))
        res.expired_default_rows += max(cur.rowcount, 0)
    return res
