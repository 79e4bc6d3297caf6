"""Quality reasons end to end in the historian, on plain PostgreSQL and on TimescaleDB: the reason of a BAD or
UNCERTAIN point is stored once per text in ``nexus.reasons`` and referred to by id from ``nexus.points``;
``nexus.metrics`` spells it out; two workers naming the same new reason at once get one row; a reason reaches
a compressed chunk too. Through ingestion's real :class:`~ingestion.writer.Writer` (its COPY path)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from ingestion.items import decode_item
from ingestion.settings import DbSettings
from ingestion.writer import Writer
from proto import DevicePath, Point, batch_topic, encode_batch
from proto.points import Status
from tests.plugins.timescale import Historian

DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
ROOT = "t"
T0 = 1_790_000_040_000


@pytest.fixture
async def writers(historian: Historian) -> AsyncIterator[list[Writer]]:
    made: list[Writer] = []
    stop = asyncio.Event()
    for name in ("w1", "w2"):
        w = Writer(DbSettings(dsn=historian.dsn), worker=name)
        assert await w.open(stop) is not None
        made.append(w)
    yield made
    for w in made:
        await w.close()


async def write(writer: Writer, seq: int, points: list[Point]) -> None:
    item = decode_item(batch_topic(DEVICE, ROOT), encode_batch(points, seq=seq), root=ROOT)
    assert item.error is None, item.error
    res = await writer.write([item], stop=asyncio.Event())
    assert res.points == len(points)


async def rows(dsn: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT tag, time, value, quality, reason FROM nexus.metrics ORDER BY tag, time")
        return await cur.fetchall()


async def reasons(dsn: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return [r[0] for r in await (await conn.execute("SELECT text FROM nexus.reasons ORDER BY id")).fetchall()]


async def test_reasons_are_stored_once_each_and_read_back_with_their_points(
        historian: Historian, writers: list[Writer]) -> None:
    w1, w2 = writers
    clamp = "clamped to the range maximum 100"
    await write(w1, 1, [Point("temp", 21.5, T0),
                        Point("temp", None, T0 + 1000, Status.BAD_TIMEOUT, reason="timeout"),
                        Point("temp", 100.0, T0 + 2000, Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED, reason=clamp),
                        Point("state", "idle", T0, reason=""),  # an empty reason is no reason
                        Point("state", None, T0 + 1000, Status.BAD, reason="timeout")])
    # the same reasons again (from the cache) and one new, by the other worker (from the table)
    await write(w2, 2, [Point("temp", None, T0 + 3000, Status.BAD_TIMEOUT, reason="timeout"),
                        Point("temp", 100.0, T0 + 4000, Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED, reason=clamp),
                        Point("temp", None, T0 + 5000, Status.BAD, reason="connection refused")])
    await write(w1, 3, [Point("temp", None, T0 + 6000, Status.BAD, reason="connection refused")])
    got = await rows(historian.dsn)
    assert [(r[0], r[3], r[4]) for r in got] == [
        ("state", "good", None), ("state", "bad", "timeout"),
        ("temp", "good", None), ("temp", "bad", "timeout"), ("temp", "uncertain", clamp),
        ("temp", "bad", "timeout"), ("temp", "uncertain", clamp), ("temp", "bad", "connection refused"),
        ("temp", "bad", "connection refused")]
    assert sorted(await reasons(historian.dsn)) == sorted(["timeout", clamp, "connection refused"])


async def test_two_workers_naming_the_same_new_reasons_at_once_get_one_row_each(
        historian: Historian, writers: list[Writer]) -> None:
    texts = [f"reason {i}" for i in range(50)]
    w1, w2 = writers
    await asyncio.gather(
        write(w1, 1, [Point(f"a{i}", None, T0, Status.BAD, reason=t) for i, t in enumerate(texts)]),
        write(w2, 2, [Point(f"b{i}", None, T0, Status.BAD, reason=t) for i, t in enumerate(reversed(texts))]))
    assert sorted(await reasons(historian.dsn)) == sorted(texts)
    got = await rows(historian.dsn)
    assert len(got) == 100
    assert {r[0]: r[4] for r in got} == {**{f"a{i}": t for i, t in enumerate(texts)},
                                         **{f"b{i}": t for i, t in enumerate(reversed(texts))}}


async def test_a_reason_reaches_a_compressed_chunk(tsdb: str) -> None:
    w = Writer(DbSettings(dsn=tsdb), worker="w1")
    assert await w.open(asyncio.Event()) is not None
    try:
        await write(w, 1, [Point("temp", 1.0, T0)])
        async with await psycopg.AsyncConnection.connect(tsdb, autocommit=True) as conn:
            await conn.execute("SELECT compress_chunk(c) FROM show_chunks('nexus.points') c")
        await write(w, 2, [Point("temp", None, T0 + 1000, Status.BAD_TIMEOUT, reason="timeout")])
    finally:
        await w.close()
    assert [(r[3], r[4]) for r in await rows(tsdb)] == [("good", None), ("bad", "timeout")]
