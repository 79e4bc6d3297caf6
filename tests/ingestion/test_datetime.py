"""Datetime points in the historian, on plain PostgreSQL and on TimescaleDB, through ingestion's real
Writer (its COPY path): the Unix ms exactly in ``value``, the ISO 8601 UTC text in ``value_text``,
OPC UA's null date as a good null with its reason; a batch with a wrong datetime value is a dead
letter; the history API answers the stored points as it answers every other (value and value_text)."""

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
from proto.types import MAX_DATETIME_MS, DateTime
from tests.plugins.timescale import Historian
from tests.support.core import open_api

DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
ROOT = "t"
T0 = 1_790_000_040_000  # 2026-09-21T14:14:00Z
PATH = "acme/berlin/stamping/line-1/press-1/last_service"
DATES = [0, 1_796_205_600_123, 9_223_372_036_854, MAX_DATETIME_MS]  # 1970, 2026, 2262, 9999


@pytest.fixture
async def writer(historian: Historian) -> AsyncIterator[Writer]:
    w = Writer(DbSettings(dsn=historian.dsn), worker="w1")
    assert await w.open(asyncio.Event()) is not None
    yield w
    await w.close()


async def test_datetime_points_are_stored_exactly_and_answered_by_the_history_api(
        historian: Historian, writer: Writer) -> None:
    points = [Point("last_service", DateTime(ms), T0 + i * 1000, Status.GOOD) for i, ms in enumerate(DATES)]
    points += [Point("last_service", None, T0 + 4000, Status.GOOD, None, "no date (OPC UA null DateTime)"),
               Point("last_service", DateTime(5), T0 + 5000, Status.UNCERTAIN)]
    item = decode_item(batch_topic(DEVICE, ROOT), encode_batch(points, seq=1), root=ROOT)
    assert item.error is None, item.error
    # a wrong datetime value is a contract error: the message is kept as a dead letter, nothing of it stored
    bad = encode_batch([Point("last_service", 1.0, T0 + 9000)], seq=2).replace(b'"value":1.0',
                                                                               b'"value":{"datetime":-1}')
    dead = decode_item(batch_topic(DEVICE, ROOT), bad, root=ROOT)
    assert dead.error is not None and "a datetime value is whole Unix milliseconds" in dead.error
    res = await writer.write([item, dead], stop=asyncio.Event())
    assert (res.points, res.dead_letters) == (6, 1)
    async with await psycopg.AsyncConnection.connect(historian.dsn) as conn:
        got = await (await conn.execute(
            "SELECT (extract(epoch FROM time) * 1000)::bigint, value, value_text, status, r.text FROM nexus.points p"
            " LEFT JOIN nexus.reasons r ON r.id = p.reason_id ORDER BY time")).fetchall()
        letters = await (await conn.execute("SELECT error, payload FROM nexus.dead_letters")).fetchall()
    assert got == [
        (T0, 0.0, "1970-01-01T00:00:00.000Z", 0, None),
        (T0 + 1000, 1_796_205_600_123.0, "2026-12-02T10:00:00.123Z", 0, None),
        (T0 + 2000, 9_223_372_036_854.0, "2262-04-11T23:47:16.854Z", 0, None),
        (T0 + 3000, 253_402_300_799_999.0, "9999-12-31T23:59:59.999Z", 0, None),
        (T0 + 4000, None, None, 0, "no date (OPC UA null DateTime)"),
        (T0 + 5000, 5.0, "1970-01-01T00:00:00.005Z", Status.UNCERTAIN, None),
    ]
    assert all(int(v) == ms for (_, v, *_), ms in zip(got, DATES, strict=False))  # float8 holds them exactly
    assert [(e.startswith("PayloadError"), bytes(p)) for e, p in letters] == [(True, bad)]

    async with open_api(historian.dsn) as api:
        r = await api.client.get("/api/v1/history", params={
            "tag": PATH, "from": "2026-09-21T14:14:00Z", "to": "2026-09-21T14:15:00Z"})
    assert r.status_code == 200, r.text
    assert [(p["time"], p["value"], p["value_text"], p["quality"], p["reason"]) for p in r.json()["points"]] == [
        ("2026-09-21T14:14:00.000Z", 0.0, "1970-01-01T00:00:00.000Z", "good", None),
        ("2026-09-21T14:14:01.000Z", 1_796_205_600_123.0, "2026-12-02T10:00:00.123Z", "good", None),
        ("2026-09-21T14:14:02.000Z", 9_223_372_036_854.0, "2262-04-11T23:47:16.854Z", "good", None),
        ("2026-09-21T14:14:03.000Z", 253_402_300_799_999.0, "9999-12-31T23:59:59.999Z", "good", None),
        ("2026-09-21T14:14:04.000Z", None, None, "good", "no date (OPC UA null DateTime)"),
        ("2026-09-21T14:14:05.000Z", 5.0, "1970-01-01T00:00:00.005Z", "uncertain", None),
    ]
