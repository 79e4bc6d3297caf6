"""Plain PostgreSQL that does not degrade (migration 009, ingestion/partitions.py, rollups.py, upkeep.py): day
partitions made ahead and by the writer for a backfill, a far clock dead-lettered, a tag's newest point read
from one partition, retention by dropping partitions while the rollups keep their buckets, rollups equal to
the raw points even while writers race the leader's watermark, one upkeep leader at a time (and a new one
when it goes), a real worker leading, and a partitioned historian upgraded to TimescaleDB with its data."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import ingestion.schema as schema
from devtools.local import free_port
from ingestion import partitions, rollups
from ingestion.items import decode_item
from ingestion.schema import migrate
from ingestion.settings import DbSettings
from ingestion.upkeep import Upkeep
from ingestion.writer import Writer
from proto import DevicePath, Point, batch_topic, encode_batch
from tests.plugins.timescale import run_refresh_jobs
from tests.support.daemons import http_get, ingestion_env
from tests.support.historian import EXPECTED, LAYER, add_tag, assert_layers_match_raw, cover
from tests.support.wait import until, wait_for

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
DAY = timedelta(days=1)
DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")


@pytest.fixture
async def conn(db: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as c:
        await migrate(c)
        yield c


async def count(conn: Conn, sql: str, *args: Any) -> int:
    row = await (await conn.execute(sql, args or None)).fetchone()
    assert row is not None
    return int(row[0])


async def upkeep_round(dsn: str, conn: Conn, **db: Any) -> rollups.RefreshResult:
    return await Upkeep(DbSettings(dsn=dsn, **db), worker="t").round(conn, asyncio.Event())


def today() -> datetime:
    return partitions.day_start(datetime.now(UTC))


async def test_partitions_ahead_and_a_backfill_gets_its_days_and_a_far_clock_a_dead_letter(
        db: str, conn: Conn) -> None:
    assert await count(conn, "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'nexus.points'::regclass")
    names = [p[0] for p in await partitions.partitions(conn)]
    assert names == [partitions.partition_name(today() + i * DAY) for i in range(4)]  # by the migration
    await upkeep_round(db, conn, partition_ahead_days=5)
    assert len(await partitions.partitions(conn)) == 6
    # through the writer: a spool replay of 10 and 9 days ago, and a message from a clock 70 years ahead
    writer = Writer(DbSettings(dsn=db), worker="w1")
    assert await writer.open(asyncio.Event()) is not None
    old = int((today() - 10 * DAY).timestamp() * 1000) + 3_600_000
    msgs = [encode_batch([Point("t", float(i), old + i * 86_400_000 // 4) for i in range(8)], seq=1),
            encode_batch([Point("t", 1.0, int(datetime(2096, 1, 1, tzinfo=UTC).timestamp() * 1000))], seq=2),
            encode_batch([Point("t", 2.0, int(datetime.now(UTC).timestamp() * 1000))], seq=3)]
    items = [decode_item(batch_topic(DEVICE, "t"), m, root="t") for m in msgs]
    try:
        res = await writer.write(items, stop=asyncio.Event())
    finally:
        await writer.close()
    assert (res.points, res.partitions, res.dead_letters) == (9, 2, 1)
    assert "no partition of relation" in (res.dead[0].error or "")
    names = {p[0] for p in await partitions.partitions(conn)}
    assert {partitions.partition_name(today() - 10 * DAY), partitions.partition_name(today() - 9 * DAY)} <= names
    assert await count(conn, "SELECT count(*) FROM nexus.points") == 9
    assert await count(conn, "SELECT count(DISTINCT (tag_id, time)) FROM nexus.points") == 9
    assert await count(conn, "SELECT count(*) FROM nexus.dead_letters WHERE error LIKE '%%no partition%%'") == 1
    await run_refresh_jobs(conn)
    await assert_layers_match_raw(conn)


async def test_the_newest_point_of_a_tag_reads_one_partition(conn: Conn) -> None:
    """Without a DEFAULT partition the day partitions are read newest first: a tag's last point is found in
    the newest partition and the older ones are never read, however many days are kept."""
    tag = await add_tag(conn)
    await cover(conn, today() - 20 * DAY, today())
    await conn.execute("INSERT INTO nexus.points (time, tag_id, value) SELECT t, %s, 1.0"
                       " FROM generate_series(%s, now(), interval '6 hours') t", (tag, today() - 20 * DAY))
    await conn.execute("ANALYZE nexus.points")
    plan = "\n".join(r[0] for r in await (await conn.execute(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT time FROM nexus.points WHERE tag_id = %s"
        " ORDER BY time DESC LIMIT 1", (tag,))).fetchall())
    assert "Merge Append" not in plan, plan
    assert plan.count("never executed") >= 20, plan


async def test_the_views_carry_their_watermark_so_the_planner_reads_only_the_live_partitions(conn: Conn) -> None:
    tag = await add_tag(conn)
    await cover(conn, today() - 3 * DAY, today())
    await conn.execute("INSERT INTO nexus.points (time, tag_id, value) SELECT t, %s, 1.0"
                       " FROM generate_series(%s, now(), interval '5 minutes') t", (tag, today() - 3 * DAY))
    await run_refresh_jobs(conn)
    old = partitions.partition_name(today() - 2 * DAY)
    for layer in ("points_1m", "points_1h"):
        plan = "\n".join(r[0] for r in await (await conn.execute(
            f"EXPLAIN (COSTS OFF) SELECT * FROM nexus.{layer} WHERE tag_id = %s", (tag,))).fetchall())
        assert old not in plan and "Gather" not in plan, plan  # pruned when planned; no parallel scan
    await assert_layers_match_raw(conn)


async def test_retention_drops_whole_days_and_the_rollups_keep_their_buckets(db: str, conn: Conn) -> None:
    tag = await add_tag(conn)
    start = today() - 5 * DAY
    await cover(conn, start, today())
    await conn.execute("INSERT INTO nexus.points (time, tag_id, value) SELECT t, %s, 1.0"
                       " FROM generate_series(%s, now(), interval '10 minutes') t", (tag, start))
    await run_refresh_jobs(conn)
    before = await (await conn.execute(LAYER.format("points_1h"))).fetchall()
    kept_from = today() - 2 * DAY  # retention 2 days: a day goes once all of it is older than that
    cutoff = datetime.now(UTC) - 2 * DAY
    await upkeep_round(db, conn, retention_days=2)
    assert all(hi > cutoff for _, _lo, hi in await partitions.partitions(conn))
    assert await count(conn, "SELECT count(*) FROM nexus.points WHERE time < %s", kept_from - DAY) == 0
    assert await count(conn, "SELECT count(*) FROM nexus.rollup_invalid") == 0  # a drop is not a change
    after = await (await conn.execute(LAYER.format("points_1h"))).fetchall()
    assert after == before  # hours of the dropped days still there, unchanged
    await upkeep_round(db, conn, retention_days=2, retention_1m_days=3, retention_1h_days=4, late_data_days=2)
    assert await count(conn, "SELECT count(*) FROM nexus.rollup_1m WHERE bucket < now() - interval '3 days'") == 0
    assert await count(conn, "SELECT count(*) FROM nexus.rollup_1h WHERE bucket < now() - interval '4 days'") == 0
    assert await count(conn, "SELECT count(*) FROM nexus.rollup_1h WHERE bucket < now() - interval '2 days'") > 0


async def test_the_layers_equal_the_raw_points_while_writers_race_the_watermark(db: str, conn: Conn) -> None:
    """A clock 120x real time: the minute watermark moves every half second while two writers insert points
    a few (simulated) seconds old; every point ends up in exactly its buckets."""
    tags = [await add_tag(conn, f"t{i}") for i in range(5)]
    await cover(conn, datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC))
    t0, real0, speed = datetime.now(UTC) - timedelta(hours=1), asyncio.get_running_loop().time(), 120

    def sim_now() -> datetime:
        return t0 + (asyncio.get_running_loop().time() - real0) * speed * timedelta(seconds=1)

    done = asyncio.Event()
    written = 0

    async def writer(seed: int) -> None:
        nonlocal written
        rng = random.Random(seed)
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as w:
            while not done.is_set():
                now = sim_now()
                rows = [(now - timedelta(seconds=rng.uniform(0, 8)), rng.choice(tags), rng.random())
                        for _ in range(50)]
                rows2 = [(now - timedelta(seconds=rng.uniform(0, 8)), rng.choice(tags), rng.random())
                         for _ in range(50)]
                async with w.transaction(), w.cursor().copy("COPY nexus.points (time, tag_id, value) FROM STDIN") as cp:
                    for row in rows:
                        await cp.write_row(row)
                async with w.transaction():  # ... a transaction that goes on after its COPY (the trigger ran)
                    async with w.cursor().copy("COPY nexus.points (time, tag_id, value) FROM STDIN") as cp:
                        for row in rows2:
                            await cp.write_row(row)
                    await w.execute("SELECT pg_sleep(0.03)")
                written += len(rows) + len(rows2)

    async def leader() -> int:
        rounds = 0
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as c:
            while not done.is_set():
                await rollups.refresh(c, end_offset=timedelta(0), now=sim_now())
                rounds += 1
        return rounds

    tasks = [asyncio.create_task(writer(1)), asyncio.create_task(writer(2)), asyncio.create_task(leader())]
    await asyncio.sleep(6)
    done.set()
    rounds = (await asyncio.gather(*tasks))[2]
    assert rounds > 10
    assert await count(conn, "SELECT count(*) FROM nexus.points") == written
    await rollups.refresh_all(conn, end_offset=timedelta(0), now=sim_now() + timedelta(hours=2))
    assert await count(conn, "SELECT count(*) FROM nexus.rollup_1m") > 50  # rolled up, not computed live
    await assert_layers_match_raw(conn)
    raw = await (await conn.execute(EXPECTED, {"w": "1 minute"})).fetchall()
    assert sum(r[6] for r in raw) == written


async def test_a_writer_in_flight_when_the_watermark_moves_is_waited_for(db: str, conn: Conn) -> None:
    """The race the horizon lock closes: a writer's COPY has run (its trigger saw the old horizon) but it has
    not committed when the leader moves the watermark over its points. The leader waits for it."""
    tag = await add_tag(conn)
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    await cover(conn, base, base + timedelta(minutes=5))
    await conn.execute("INSERT INTO nexus.points (time, tag_id, value) VALUES (%s, %s, 1.0)", (base, tag))
    await rollups.refresh_all(conn, end_offset=timedelta(0), now=base + timedelta(minutes=1))
    async with await psycopg.AsyncConnection.connect(db) as w:  # a transaction left open
        await w.execute("INSERT INTO nexus.points (time, tag_id, value) VALUES (%s, %s, 2.0)",
                        (base + timedelta(minutes=1, seconds=30), tag))
        leader = asyncio.create_task(rollups.refresh(conn, end_offset=timedelta(0), now=base + timedelta(minutes=5)))
        await asyncio.sleep(0.5)
        assert not leader.done()  # waiting for the writer's transaction, not reading past it
        await w.commit()
        await asyncio.wait_for(leader, 10)
    assert await count(conn, "SELECT count(*) FROM nexus.rollup_1m") == 2  # both minutes, rolled up
    await assert_layers_match_raw(conn)


async def test_one_upkeep_leader_at_a_time_and_a_new_one_when_it_goes(db: str, conn: Conn) -> None:
    settings = DbSettings(dsn=db, upkeep_interval=0.2)
    a, b = Upkeep(settings, worker="a"), Upkeep(settings, worker="b")
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    ta = asyncio.create_task(a.run(stop_a))
    await until(lambda: a.leader, 10, what="a leads")
    tb = asyncio.create_task(b.run(stop_b))
    await asyncio.sleep(1)
    assert a.leader and not b.leader and a.rounds > 0 and b.rounds == 0
    stop_a.set()
    await asyncio.wait_for(ta, 5)
    await until(lambda: b.leader and b.rounds > 0, 10, what="b takes over")
    stop_b.set()
    await asyncio.wait_for(tb, 5)


@pytest.mark.slow
def test_a_real_worker_leads_the_upkeep(db: str, broker: Any, prefix: str, daemons: Any) -> None:
    ops = free_port()
    ing = daemons("ingestion", ingestion_env(broker, db, prefix, NEXUS_INGESTION_OPS_PORT=str(ops),
                                             NEXUS_INGESTION_DB_UPKEEP_INTERVAL="0.5"))

    def metric(name: str) -> float | None:
        for line in http_get(ops, "/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None
    wait_for(lambda: metric("nexus_ingest_upkeep_rounds_total") or 0 >= 2, 30,
             what=f"upkeep rounds\n{ing.output()}")
    assert metric("nexus_ingest_upkeep_leader") == 1.0
    assert metric("nexus_ingest_partitions_created_total") is not None


async def test_a_partitioned_historian_upgraded_to_timescaledb_keeps_its_data(
        tsdb: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with await psycopg.AsyncConnection.connect(tsdb, autocommit=True) as c:
        monkeypatch.setattr(schema, "timescale_available", _unavailable)
        state = await migrate(c)
        assert not state.timescale and 9 in state.applied
        tag = await add_tag(c)
        await cover(c, datetime.now(UTC) - 2 * DAY, datetime.now(UTC))
        cur = await c.execute("INSERT INTO nexus.points (time, tag_id, value) SELECT t, %s, extract(minute FROM t)"
                              " FROM generate_series(now() - interval '2 days', now(), interval '1 minute') t", (tag,))
        n = cur.rowcount
        await run_refresh_jobs(c)
        monkeypatch.undo()
        state = await migrate(c)
        assert state.timescale and state.applied == (2, 5, 7)
        assert await count(c, "SELECT count(*) FROM nexus.points") == n
        assert await count(c, "SELECT count(*) FROM timescaledb_information.hypertables"
                              " WHERE hypertable_name = 'points'") == 1
        assert await count(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'nexus'"
                              " AND tablename LIKE 'rollup%%'") == 0
        await assert_layers_match_raw(c)


async def _unavailable(conn: Conn) -> bool:
    return False
