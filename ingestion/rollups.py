"""The 1-minute and 1-hour rollups of plain PostgreSQL (migration 009), kept up to date by the upkeep leader.

Per layer (1: minutes from ``nexus.points``; 2: hours from ``nexus.rollup_1m``), ``nexus.rollup_state`` holds
a *watermark* (every bucket before it is in the rollup table; the views ``nexus.points_1m``/``_1h`` compute
the rest from the layer below at query time) and a *horizon* (where the leader is rolling up to). One
:func:`refresh`:

1. **advances** each layer in steps of at most ``step``: announce the new horizon (a moment under the
   exclusive advisory lock that the points trigger takes shared: every writer either committed before the
   read below or sees the new horizon and records its rows as late), aggregate ``[watermark, horizon)``
   from the layer below, move the watermark and redefine the layer's view with it (:func:`define_views`),
   in one transaction;
2. **re-aggregates** the ranges in ``nexus.rollup_invalid`` (changes below the horizon: late points, a
   spool replay, a backfill, a delete), whole buckets from the layer below, each range in one transaction
   with its invalidation rows deleted; a minute range re-done below the hour's horizon invalidates its hours.

Ranges whose raw points are gone (retention) are never re-aggregated: their rollups stay as they were.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from nexus import pg

log = logging.getLogger("ingestion.rollups")

#: the advisory lock key nexus.points_changed() takes shared ("nxru"); the leader takes it exclusive
HORIZON_LOCK = 0x6E787275

MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # date_bin's origin in the views


@dataclass(frozen=True)
class Layer:
    number: int
    width: timedelta
    table: str
    source: str  #: what a bucket is aggregated from, for [lo, hi)
    #: the layer whose source this is: its ranges re-done here invalidate the next layer's
    invalidates: int | None


#: one bucket of each layer from the layer below: the rollup's rows and the views' live part alike
_MINUTE_OF = (
    "SELECT date_bin('1 minute', time, TIMESTAMPTZ '2000-01-01') AS bucket, tag_id,"
    " min(value) AS min, max(value) AS max, avg(value) AS avg,"
    " (array_agg(value ORDER BY time DESC))[1] AS last, count(*) AS samples,"
    " sum(value) AS value_sum, count(value) AS value_count FROM nexus.points WHERE time >= {lo}"
)
_HOUR_OF = (
    "SELECT date_bin('1 hour', bucket, TIMESTAMPTZ '2000-01-01') AS bucket, tag_id,"
    " min(min) AS min, max(max) AS max, sum(value_sum) / nullif(sum(value_count), 0)::double precision AS avg,"
    " (array_agg(last ORDER BY bucket DESC))[1] AS last, sum(samples)::bigint AS samples,"
    " sum(value_sum) AS value_sum, sum(value_count)::bigint AS value_count FROM {source} WHERE bucket >= {lo}"
)
_RANGE = " AND {col} < %(hi)s GROUP BY 1, 2"
LAYERS = (
    Layer(1, MINUTE, "nexus.rollup_1m", _MINUTE_OF.format(lo="%(lo)s") + _RANGE.format(col="time"), 2),
    Layer(2, HOUR, "nexus.rollup_1h",
          _HOUR_OF.format(source="nexus.rollup_1m", lo="%(lo)s") + _RANGE.format(col="bucket"), None),
)

#: the real-time views, the layer's watermark written in as a constant ({w}): the planner prunes and
#: estimates with it. Same columns and types as TimescaleDB's continuous aggregates (migration 007).
_COLUMNS = "bucket, tag_id, min, max, avg, last, samples, value_sum, value_count"
_VIEWS = {
    1: (f"CREATE OR REPLACE VIEW nexus.points_1m AS SELECT {_COLUMNS} FROM nexus.rollup_1m WHERE bucket < {{w}}"
        " UNION ALL " + _MINUTE_OF.format(lo="{w}") + " GROUP BY 1, 2"),
    2: (f"CREATE OR REPLACE VIEW nexus.points_1h AS SELECT {_COLUMNS} FROM nexus.rollup_1h WHERE bucket < {{w}}"
        " UNION ALL " + _HOUR_OF.format(source="nexus.points_1m", lo="{w}") + " GROUP BY 1, 2"),
}
VIEW_LOCK_TIMEOUT_MS = 2000  #: a view is redefined only when no query holds it longer than this (next round)


def floor(t: datetime, width: timedelta) -> datetime:
    return _EPOCH + (t - _EPOCH) // width * width


@dataclass
class RefreshResult:
    buckets: int = 0  #: rollup rows written (advances and re-aggregations)
    ranges: int = 0  #: invalidated ranges re-aggregated
    behind: bool = False  #: a layer is still more than one step behind: call again

    def __bool__(self) -> bool:
        return self.buckets > 0 or self.ranges > 0


async def define_views(conn: psycopg.AsyncConnection[Any], layers: tuple[int, ...] = (1, 2)) -> None:
    """(Re)define the views of ``layers`` with their current watermarks; in the caller's transaction when
    there is one (the watermark's), so a reader sees the rollup rows and the view that counts them together."""
    for layer in layers:
        row = await (await conn.execute(
            "SELECT quote_literal(watermark::text) FROM nexus.rollup_state WHERE layer = %s", (layer,))).fetchone()
        assert row is not None, "migration 009 inserts both layers"
        await conn.execute(_VIEWS[layer].format(w=f"{row[0]}::timestamptz"))


async def present(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether this historian has the rollups (plain PostgreSQL, migration 009)."""
    row = await (await conn.execute("SELECT to_regclass('nexus.rollup_state') IS NOT NULL")).fetchone()
    return bool(row and row[0])


async def refresh(conn: psycopg.AsyncConnection[Any], *, keep_raw_days: int = 0, keep_1m_days: int = 0,
                  end_offset: timedelta = MINUTE, step: timedelta = timedelta(hours=6),
                  now: datetime | None = None) -> RefreshResult:
    """One bounded round of rollup upkeep (see the module's doc); ``conn`` in autocommit mode, one caller at
    a time (the upkeep leader). Buckets are rolled up once they ended ``end_offset`` ago; nothing is rolled
    up again from a layer below past its retention (``keep_raw_days``, ``keep_1m_days``; 0 = forever)."""
    now = now or datetime.now(UTC)
    res = RefreshResult()
    minutes_target = floor(now - end_offset, MINUTE)
    for layer in LAYERS:
        keep = keep_raw_days if layer.number == 1 else keep_1m_days
        cutoff = now - timedelta(days=keep) if keep > 0 else None
        if layer.number == 1:
            target = minutes_target
        else:  # hours only from minutes already rolled up
            minutes = await _watermark(conn, 1)
            if minutes is None:
                continue
            target = floor(minutes, HOUR)
        await _advance(conn, layer, target, step, cutoff, res)
        await _reaggregate(conn, layer, step, cutoff, res)
    return res


async def refresh_all(conn: psycopg.AsyncConnection[Any], **kw: Any) -> RefreshResult:
    """:func:`refresh` until nothing is left to do (tests, benchmarks, a manual catch-up)."""
    total = RefreshResult()
    while (res := await refresh(conn, **kw)) or res.behind:
        total.buckets += res.buckets
        total.ranges += res.ranges
    return total


async def _watermark(conn: psycopg.AsyncConnection[Any], layer: int) -> datetime | None:
    """The layer's watermark; None while it is -infinity (nothing rolled up yet)."""
    row = await (await conn.execute(
        "SELECT CASE WHEN isfinite(watermark) THEN watermark END FROM nexus.rollup_state WHERE layer = %s",
        (layer,))).fetchone()
    assert row is not None, "migration 009 inserts both layers"
    return row[0]  # type: ignore[no-any-return]


async def _advance(conn: psycopg.AsyncConnection[Any], layer: Layer, target: datetime, step: timedelta,
                   cutoff: datetime | None, res: RefreshResult) -> None:
    mark = await _watermark(conn, layer.number)
    if mark is None:  # nothing rolled up yet: from the oldest data on
        mark = floor(await _oldest(conn, layer) or target, layer.width)
    if cutoff is not None:
        mark = max(mark, floor(cutoff, layer.width))
    if mark >= target:
        return
    hi = min(target, mark + max(step, layer.width))
    res.behind = res.behind or hi < target
    async with conn.transaction():
        if layer.number == 1:  # writers take the lock shared: after this, each either committed or sees hi
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (HORIZON_LOCK,))
        await conn.execute("UPDATE nexus.rollup_state SET horizon = greatest(horizon, %s) WHERE layer = %s",
                           (hi, layer.number))
    try:
        async with conn.transaction():
            rows = await _rebuild(conn, layer, mark, hi)
            await conn.execute("UPDATE nexus.rollup_state SET watermark = %s WHERE layer = %s", (hi, layer.number))
            await pg.lock_timeout(conn, VIEW_LOCK_TIMEOUT_MS)
            await define_views(conn, (layer.number,))
    except psycopg.errors.LockNotAvailable:  # a long query on the view: nothing moved, the next round tries
        log.info("rollup of %s not advanced: a query held its view for %d ms", layer.table, VIEW_LOCK_TIMEOUT_MS)
        res.behind = False
        return
    res.buckets += rows


async def _rebuild(conn: psycopg.AsyncConnection[Any], layer: Layer, lo: datetime, hi: datetime) -> int:
    """The layer's buckets of [lo, hi) aggregated again from the layer below (in the caller's transaction);
    how many rows."""
    await conn.execute(f"DELETE FROM {layer.table} WHERE bucket >= %s AND bucket < %s", (lo, hi))
    cur = await conn.execute(f"INSERT INTO {layer.table} {layer.source}", {"lo": lo, "hi": hi})
    return max(cur.rowcount, 0)


async def _oldest(conn: psycopg.AsyncConnection[Any], layer: Layer) -> datetime | None:
    sql = ("SELECT min(time) FROM nexus.points" if layer.number == 1 else "SELECT min(bucket) FROM nexus.rollup_1m")
    row = await (await conn.execute(sql)).fetchone()
    return row[0] if row else None


async def _reaggregate(conn: psycopg.AsyncConnection[Any], layer: Layer, step: timedelta, cutoff: datetime | None,
                       res: RefreshResult) -> None:
    rows = await (await conn.execute(
        "SELECT id, lo, hi FROM nexus.rollup_invalid WHERE layer = %s ORDER BY lo", (layer.number,))).fetchall()
    if not rows:
        return
    mark = await _watermark(conn, layer.number)
    next_mark = await _watermark(conn, layer.invalidates) if layer.invalidates else None
    if mark is None:  # nothing rolled up: the views read the layer below
        await conn.execute("DELETE FROM nexus.rollup_invalid WHERE id = ANY(%s)", ([r[0] for r in rows],))
        return
    for ids, lo, hi in _merge(rows, layer.width):
        lo = max(lo, floor(cutoff, layer.width)) if cutoff is not None else lo
        hi = min(hi, mark)  # above the watermark the view reads the layer below anyway
        async with conn.transaction():  # the range and its invalidations at once, in statements of one step
            while lo < hi:
                part = min(hi, lo + max(step, layer.width))
                res.buckets += await _rebuild(conn, layer, lo, part)
                if layer.invalidates and next_mark is not None and lo < next_mark:
                    await conn.execute("INSERT INTO nexus.rollup_invalid (layer, lo, hi) VALUES (%s, %s, %s)",
                                       (layer.invalidates, lo, part - timedelta(microseconds=1)))
                lo = part
            await conn.execute("DELETE FROM nexus.rollup_invalid WHERE id = ANY(%s)", (ids,))
        res.ranges += 1


def _merge(rows: list[tuple[Any, ...]], width: timedelta) -> list[tuple[list[int], datetime, datetime]]:
    """Invalidated ranges (inclusive times, sorted by start) as bucket-aligned [lo, hi) ranges, those that
    touch or overlap merged, with the ids they came from."""
    out: list[tuple[list[int], datetime, datetime]] = []
    for rid, lo, hi in rows:
        a, b = floor(lo, width), floor(hi, width) + width
        if out and a <= out[-1][2]:
            ids, first, last = out[-1]
            out[-1] = ([*ids, rid], first, max(last, b))
        else:
            out.append(([rid], a, b))
    return out


async def drop_expired(conn: psycopg.AsyncConnection[Any], *, keep_1m_days: int, keep_1h_days: int,
                       now: datetime | None = None) -> int:
    """Delete the rollup buckets older than each layer's retention (0 = forever); how many."""
    now = now or datetime.now(UTC)
    deleted = 0
    for table, days in (("nexus.rollup_1m", keep_1m_days), ("nexus.rollup_1h", keep_1h_days)):
        if days > 0:
            cur = await conn.execute(f"DELETE FROM {table} WHERE bucket < %s", (now - timedelta(days=days),))
            deleted += max(cur.rowcount, 0)
    return deleted
