"""The TimescaleDB path on a real TimescaleDB (skipped with the reason where it cannot be had): migrations
(hypertables, the two continuous aggregates, hierarchical and real time), policies created once and altered
in place (stable job ids), compression and a late insert into a compressed chunk, retention per layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import ingestion.schema as schema
from ingestion.schema import migrate
from tests.plugins.timescale import run_refresh_jobs

Conn = psycopg.AsyncConnection[tuple[object, ...]]


@pytest.fixture
async def conn(tsdb: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(tsdb, autocommit=True) as c:
        yield c


async def jobs(conn: Conn) -> dict[tuple[str, str], tuple[int, dict[str, object]]]:
    rows = await (await conn.execute(
        "SELECT proc_name, hypertable_name, job_id, config FROM timescaledb_information.jobs"
        " WHERE hypertable_schema = 'nexus'")).fetchall()
    return {(str(p), str(t)): (int(str(j)), c) for p, t, j, c in rows}  # type: ignore[misc]


async def tag(conn: Conn) -> int:
    row = await (await conn.execute(
        "INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag)"
        " VALUES ('e/s/a/l/d/t', 'e', 's', 'a', 'l', 'd', 't') RETURNING id")).fetchone()
    assert row is not None
    return int(str(row[0]))


async def test_migrations_build_hypertables_and_both_aggregate_layers(conn: Conn) -> None:
    state = await migrate(conn)
    assert state.timescale and state.applied == (1, 2, 3, 4, 5, 6, 7, 8)  # 9 is plain only
    assert await (await conn.execute(
        "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = 'nexus' ORDER BY 1")).fetchall() == [("points", True), ("windows", False)]
    caggs = await (await conn.execute(
        "SELECT view_name, hypertable_schema, hypertable_name, materialized_only"
        " FROM timescaledb_information.continuous_aggregates WHERE view_schema = 'nexus' ORDER BY view_name DESC")
    ).fetchall()
    mat_1m = await (await conn.execute(
        "SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates"
        " WHERE view_name = 'points_1m'")).fetchone()
    assert mat_1m is not None
    assert caggs == [("points_1m", "nexus", "points", False),  # real time: the newest buckets included
                     ("points_1h", "_timescaledb_internal", mat_1m[0], False)]  # the hour from the minutes
    cols = "SELECT column_name FROM information_schema.columns WHERE table_schema = 'nexus' AND table_name = %s" \
           " ORDER BY ordinal_position"
    shape = ["bucket", "tag_id", "min", "max", "avg", "last", "samples", "value_sum", "value_count"]
    for layer in ("points_1m", "points_1h"):
        assert [r[0] for r in await (await conn.execute(cols, (layer,))).fetchall()] == shape
    assert await migrate(conn) == type(state)(timescale=True, applied=())


async def test_policies_are_created_once_and_altered_when_settings_change(conn: Conn) -> None:
    await migrate(conn, retention_days=30, retention_1m_days=365)
    first = await jobs(conn)
    assert {k: v[1] for k, v in first.items()} == {
        ("policy_compression", "points"): {"hypertable_id": 1, "compress_after": "7 days"},
        ("policy_retention", "points"): {"hypertable_id": 1, "drop_after": "30 days"},
        ("policy_refresh_continuous_aggregate", "points_1m"): {
            "start_offset": "168:00:00", "end_offset": "00:01:00", "mat_hypertable_id": 5},
        ("policy_refresh_continuous_aggregate", "points_1h"): {
            "start_offset": "168:00:00", "end_offset": "01:00:00", "mat_hypertable_id": 6},
        ("policy_retention", "points_1m"): {"hypertable_id": 5, "drop_after": "365 days"},
    }
    await migrate(conn, retention_days=30, retention_1m_days=365)  # a restart with the same settings
    assert await jobs(conn) == first
    # new settings: the same jobs with new configs; a 0 removes its job, a new non-zero adds one
    await migrate(conn, retention_days=60, retention_1m_days=0, retention_1h_days=3650, compress_after_days=2,
                  late_data_days=3)
    after = await jobs(conn)
    assert {k: v[0] for k, v in after.items() if k in first} == {
        k: v[0] for k, v in first.items() if k != ("policy_retention", "points_1m")}
    assert after[("policy_compression", "points")][1]["compress_after"] == "2 days"
    assert after[("policy_retention", "points")][1]["drop_after"] == "60 days"
    assert after[("policy_refresh_continuous_aggregate", "points_1m")][1]["start_offset"] == "72:00:00"
    assert after[("policy_retention", "points_1h")][1]["drop_after"] == "3650 days"
    assert ("policy_retention", "points_1m") not in after
    # the late-data window stays inside the raw data kept: a refresh never re-aggregates dropped chunks
    await migrate(conn, retention_days=2, late_data_days=7)
    assert (await jobs(conn))[("policy_refresh_continuous_aggregate", "points_1m")][1]["start_offset"] == "47:00:00"


async def test_compression_and_a_late_insert_into_a_compressed_chunk(conn: Conn) -> None:
    await migrate(conn)
    t = await tag(conn)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    await conn.execute(
        "INSERT INTO nexus.points (time, tag_id, value) SELECT %s + n * interval '1 minute', %s, n"
        " FROM generate_series(0, 1439) n", (day, t))
    await run_refresh_jobs(conn)
    compressed = await (await conn.execute(
        "SELECT count(compress_chunk(c)) FROM show_chunks('nexus.points', older_than => now() - interval '1 day') c"
    )).fetchone()
    assert compressed == (1,)
    assert await (await conn.execute(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'points' AND is_compressed"
    )).fetchone() == (1,)
    late = day + timedelta(hours=6, seconds=30)  # into the compressed chunk, inside an aggregated minute
    await conn.execute("INSERT INTO nexus.points (time, tag_id, value) VALUES (%s, %s, -1.0)", (late, t))
    assert await (await conn.execute(
        "SELECT count(*), min(value) FROM nexus.points WHERE time >= %s AND time < %s",
        (day, day + timedelta(days=1)))).fetchone() == (1441, -1.0)
    await run_refresh_jobs(conn)
    assert await (await conn.execute(
        "SELECT samples, min FROM nexus.points_1m WHERE bucket = %s", (late.replace(second=0),))).fetchone() == (
        2, -1.0)
    assert await (await conn.execute(
        "SELECT samples, min FROM nexus.points_1h WHERE bucket = %s", (late.replace(minute=0, second=0),))
    ).fetchone() == (61, -1.0)


async def test_retention_per_layer(conn: Conn) -> None:
    await migrate(conn, retention_days=30, retention_1m_days=50, compress_after_days=0)
    t = await tag(conn)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ages = (60, 40, 1)
    for age in ages:
        await conn.execute("INSERT INTO nexus.points (time, tag_id, value) VALUES (%s, %s, %s)",
                           (hour - timedelta(days=age), t, float(age)))
    for layer in ("nexus.points_1m", "nexus.points_1h"):  # the old points were late: aggregate them all
        await conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (layer,))
    for (proc, _table), (job, _config) in (await jobs(conn)).items():
        if proc == "policy_retention":
            await conn.execute("CALL run_job(%s)", (job,))

    async def kept(table: str, column: str) -> list[object]:  # oldest first
        return [r[0] for r in await (await conn.execute(f"SELECT {column} FROM {table} ORDER BY 2")).fetchall()]

    assert await kept("nexus.points", "value, time") == [1.0]  # raw: 30 days
    assert await kept("nexus.points_1m", "max, bucket") == [40.0, 1.0]  # 1 minute: 50 days
    assert await kept("nexus.points_1h", "max, bucket") == [60.0, 40.0, 1.0]  # 1 hour: forever
    await run_refresh_jobs(conn)  # a refresh inside the kept range does not undo the layers' history
    assert await kept("nexus.points_1h", "max, bucket") == [60.0, 40.0, 1.0]


async def test_upgrade_of_a_timescale_historian_of_the_previous_release(
        conn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    every = schema.migrations()
    monkeypatch.setattr(schema, "migrations", lambda: [m for m in every if m.version <= 5])
    await migrate(conn, retention_days=30)  # 002's materialized-only points_1m and its 1-hour refresh policy
    monkeypatch.undo()
    before = await jobs(conn)
    assert ("policy_refresh_continuous_aggregate", "points_1m") in before
    t = await tag(conn)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await conn.execute(
        "INSERT INTO nexus.points (time, tag_id, value) SELECT t, %s, 1.0"
        " FROM generate_series(%s, %s, interval '1 minute') t WHERE t < %s",
        (t, end - timedelta(days=3), end, end))
    state = await migrate(conn, retention_days=30)
    assert state.applied == (6, 7, 8)
    after = await jobs(conn)
    for kind in (("policy_compression", "points"), ("policy_retention", "points")):
        assert after[kind][0] == before[kind][0]  # kept, not re-created
    assert await (await conn.execute(
        "SELECT count(*), sum(samples) FROM nexus.points_1m")).fetchone() == (3 * 24 * 60, 3 * 24 * 60)
    assert await (await conn.execute(
        "SELECT count(*), sum(samples)::bigint FROM nexus.points_1h")).fetchone() == (3 * 24, 3 * 24 * 60)
