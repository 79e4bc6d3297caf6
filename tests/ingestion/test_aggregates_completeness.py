"""The 1-minute and 1-hour layers (nexus.points_1m, nexus.points_1h) hold what the raw points say, on plain
PostgreSQL and on TimescaleDB alike: every bucket after upgrading a historian with 3 days of history, a point
arriving 2 hours late after one refresh, the newest (not yet materialized) minute, the hour built from its
minutes. Refreshes are run directly (tests.plugins.timescale.run_refresh_jobs), not left to the scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import ingestion.schema as schema
from ingestion.schema import migrate
from tests.plugins.timescale import Historian, run_refresh_jobs
from tests.support.historian import add_tag, assert_layers_match_raw, insert_series

Conn = psycopg.AsyncConnection[tuple[object, ...]]

@pytest.fixture
async def conn(historian: Historian) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(historian.dsn, autocommit=True) as c:
        yield c


def now_minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


async def test_layers_hold_the_raw_points(historian: Historian, conn: Conn) -> None:
    await migrate(conn)
    temp, pressure = await add_tag(conn, "temp"), await add_tag(conn, "pressure")
    end = now_minute() - timedelta(hours=1)
    await insert_series(conn, temp, end - timedelta(hours=3), end, 7)
    await insert_series(conn, pressure, end - timedelta(minutes=90), end, 60)
    # a BAD point without value: a sample, not a value (min/max/avg/value_count ignore it; it is the last)
    await conn.execute("INSERT INTO nexus.points (time, tag_id, value, status) VALUES (%s, %s, NULL, %s)",
                       (end + timedelta(seconds=5), temp, 0x800A0000))
    await assert_layers_match_raw(conn)  # before any refresh: real time on TimescaleDB, views on PostgreSQL
    await run_refresh_jobs(conn)
    await assert_layers_match_raw(conn)
    row = await (await conn.execute(
        "SELECT last, samples, value_count FROM nexus.points_1m WHERE tag_id = %s AND bucket = %s",
        (temp, end))).fetchone()
    assert row == (None, 1, 0)


async def test_upgrade_of_a_historian_with_three_days_of_history(
        historian: Historian, conn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    # the historian as the previous release left it: migrations 001..005, and on the TimescaleDB cluster
    # a plain one (extension not yet installed), as in the upgrade
    every = schema.migrations()
    monkeypatch.setattr(schema, "migrations", lambda: [m for m in every if m.version <= 5])
    monkeypatch.setattr(schema, "timescale_available", _unavailable)
    assert not (await migrate(conn)).timescale
    tag = await add_tag(conn)
    end = now_minute().replace(minute=0) - timedelta(hours=1)
    rows = await insert_series(conn, tag, end - timedelta(days=3), end, 30)
    assert rows == 3 * 24 * 120
    monkeypatch.undo()

    state = await migrate(conn)
    assert state.timescale == historian.timescale
    assert state.applied == ((2, 5, 6, 7, 8) if historian.timescale else (6, 8, 9))
    for layer, buckets in (("points_1m", 3 * 24 * 60), ("points_1h", 3 * 24)):
        n, samples, first, last = (await (await conn.execute(
            f"SELECT count(*), sum(samples), min(bucket), max(bucket) FROM nexus.{layer}")).fetchone()) or ()
        assert (n, samples, first, last) == (
            buckets, rows, end - timedelta(days=3), end - (timedelta(minutes=1) if layer == "points_1m"
                                                            else timedelta(hours=1))), layer
    if historian.timescale:  # materialized by the refresh after the migration, not computed at query time
        for layer, buckets in (("points_1m", 3 * 24 * 60), ("points_1h", 3 * 24)):
            row = await (await conn.execute(
                "SELECT format('%%I.%%I', materialization_hypertable_schema, materialization_hypertable_name)"
                " FROM timescaledb_information.continuous_aggregates WHERE view_name = %s", (layer,))).fetchone()
            assert row is not None
            stored = await (await conn.execute(f"SELECT count(*) FROM {row[0]}")).fetchone()
            assert stored == (buckets,), layer
        assert await (await conn.execute("SELECT count(*) FROM nexus.aggregate_refresh")).fetchone() == (0,)
    await assert_layers_match_raw(conn)


async def _unavailable(conn: Conn) -> bool:
    return False


async def test_a_point_two_hours_late_is_in_both_layers_after_one_refresh(conn: Conn) -> None:
    await migrate(conn)
    tag = await add_tag(conn)
    end = now_minute()
    await insert_series(conn, tag, end - timedelta(hours=4), end, 60)
    await run_refresh_jobs(conn)
    late = end - timedelta(hours=2) + timedelta(seconds=30)  # a spool replay: 2 h after its source time
    await conn.execute("INSERT INTO nexus.points (time, tag_id, value) VALUES (%s, %s, 5000.0)", (late, tag))
    await run_refresh_jobs(conn)
    minute = late.replace(second=0)
    assert await (await conn.execute(
        "SELECT samples, max, last FROM nexus.points_1m WHERE tag_id = %s AND bucket = %s",
        (tag, minute))).fetchone() == (2, 5000.0, 5000.0)
    assert (await (await conn.execute(
        "SELECT max FROM nexus.points_1h WHERE tag_id = %s AND bucket = %s",
        (tag, minute.replace(minute=0)))).fetchone()) == (5000.0,)
    await assert_layers_match_raw(conn)


async def test_the_newest_minute_is_visible(conn: Conn) -> None:
    await migrate(conn)
    tag = await add_tag(conn)
    now = datetime.now(UTC)
    await insert_series(conn, tag, now - timedelta(hours=2), now - timedelta(minutes=2), 10)
    await run_refresh_jobs(conn)  # materialized up to a minute ago at most
    await conn.execute("INSERT INTO nexus.points (time, tag_id, value) VALUES (%s, %s, 4242.0)", (now, tag))
    minute = now.replace(second=0, microsecond=0)
    assert await (await conn.execute(
        "SELECT samples, last FROM nexus.points_1m WHERE tag_id = %s AND bucket = %s",
        (tag, minute))).fetchone() == (1, 4242.0)
    assert await (await conn.execute(
        "SELECT max, last FROM nexus.points_1h WHERE tag_id = %s AND bucket = %s",
        (tag, minute.replace(minute=0)))).fetchone() == (4242.0, 4242.0)
    await assert_layers_match_raw(conn)
