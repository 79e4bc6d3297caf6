"""Historian test helpers: a tag, a series of points, and the check that both aggregate layers equal the raw
points (on plain PostgreSQL and TimescaleDB alike)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from ingestion import partitions

Conn = psycopg.AsyncConnection[Any]

# what each layer must equal: the raw points bucketed on the same origin (time_bucket's and date_bin's agree
# for 1 minute and 1 hour); avg rounded, the hour's being a weighted mean of its minutes
EXPECTED = (
    "SELECT date_bin(%(w)s::interval, time, TIMESTAMPTZ '2000-01-01') AS bucket, tag_id, min(value), max(value),"
    " round(avg(value)::numeric, 6), (array_agg(value ORDER BY time DESC))[1], count(*), count(value)"
    " FROM nexus.points GROUP BY 1, 2 ORDER BY 1, 2"
)
LAYER = ("SELECT bucket, tag_id, min, max, round(avg::numeric, 6), last, samples, value_count"
         " FROM nexus.{} ORDER BY 1, 2")


async def add_tag(conn: Conn, tag: str = "temp") -> int:
    row = await (await conn.execute(
        "INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag)"
        " VALUES (%s, 'acme', 'berlin', 'stamping', 'line-1', 'press-1', %s) RETURNING id",
        (f"acme/berlin/stamping/line-1/press-1/{tag}", tag))).fetchone()
    assert row is not None
    return int(str(row[0]))


async def insert_series(conn: Conn, tag_id: int, start: datetime, end: datetime, step_s: int) -> int:
    await cover(conn, start, end)
    cur = await conn.execute(
        "INSERT INTO nexus.points (time, tag_id, value)"
        " SELECT t, %s, extract(epoch FROM t)::bigint %% 1000 FROM generate_series(%s, %s, %s::interval) t"
        " WHERE t < %s", (tag_id, start, end, f"{step_s} seconds", end))
    return cur.rowcount


async def assert_layers_match_raw(conn: Conn) -> None:
    for layer, width in (("points_1m", "1 minute"), ("points_1h", "1 hour")):
        want = await (await conn.execute(EXPECTED, {"w": width})).fetchall()
        got = await (await conn.execute(LAYER.format(layer))).fetchall()
        assert got == want, layer




async def cover(conn: Conn, lo: datetime, hi: datetime) -> None:
    """Make the day partitions of [lo, hi) on plain PostgreSQL (nexus.points has no DEFAULT partition: a hand
    insert into a day without one fails, as it would for an operator; ingestion makes its own). A no-op on
    TimescaleDB, whose chunks come by themselves."""
    if await partitions.present(conn):
        await conn.execute("SELECT nexus.add_partitions(%s, %s)", (lo, hi))


def cover_sync(conn: psycopg.Connection[Any], lo: datetime, hi: datetime) -> None:
    """:func:`cover` for a synchronous connection."""
    row = conn.execute("SELECT to_regprocedure('nexus.add_partitions(timestamptz, timestamptz)') IS NOT NULL"
                       ).fetchone()
    if row and row[0]:
        conn.execute("SELECT nexus.add_partitions(%s, %s)", (lo, hi))
