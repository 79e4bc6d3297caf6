"""GET /api/v1/history with quality reasons, on plain PostgreSQL and on TimescaleDB: points written by
ingestion's real Writer (reasons stored once each in nexus.reasons, referred to by nexus.points.reason_id)
come back with their ``reason`` (null when none) in JSON, CSV, JSON lines and Parquet; per bucket the
``bad`` and ``uncertain`` counts."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from gateway_core.settings import HistorySettings
from ingestion.items import decode_item
from ingestion.settings import DbSettings
from ingestion.writer import Writer
from proto import DevicePath, Point, batch_topic, encode_batch
from proto.points import Status
from tests.plugins.timescale import historian_db
from tests.support.core import Api, open_api
from tests.support.historian import cover

DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
TEMP = "acme/berlin/stamping/line-1/press-1/temp"
STATE = "acme/berlin/stamping/line-1/press-1/state"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
MS = int(T0.timestamp() * 1000)
CLAMP = "clamped to the range maximum 100"
RANGE = {"from": "2026-01-05T12:00:00Z", "to": "2026-01-05T12:05:00Z"}

db = historian_db  # every test here on plain PostgreSQL and on TimescaleDB (tests/plugins/timescale.py)


async def write(writer: Writer, seq: int, points: list[Point]) -> None:
    item = decode_item(batch_topic(DEVICE, "t"), encode_batch(points, seq=seq), root="t")
    assert item.error is None, item.error
    assert (await writer.write([item], stop=asyncio.Event())).points == len(points)


@pytest.fixture
async def api(db: str) -> AsyncIterator[Api]:
    w = Writer(DbSettings(dsn=db), worker="w1")
    assert await w.open(asyncio.Event()) is not None  # migrates the historian
    try:
        await write(w, 1, [
            Point("temp", 21.5, MS),
            Point("temp", None, MS + 20_000, Status.BAD_TIMEOUT, reason="timeout"),
            Point("temp", 100.0, MS + 40_000, Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED, reason=CLAMP),
            Point("temp", 22.0, MS + 60_000),
            Point("temp", None, MS + 80_000, Status.BAD_TIMEOUT, reason="timeout"),
            Point("temp", None, MS + 100_000, Status.BAD, reason="connection refused"),
            Point("temp", 23.0, MS + 130_000, Status.BAD),  # BAD, no reason given
            Point("state", "idle", MS, reason=""),  # an empty reason is no reason
            Point("state", None, MS + 30_000, Status.BAD, reason="timeout"),
        ])
    finally:
        await w.close()
    async with open_api(db, history=HistorySettings(max_range_days=30, max_rows=50)) as a:
        yield a


def point(t: str, value: float | None, status: int, quality: str, reason: str | None) -> dict[str, object]:
    return {"time": f"2026-01-05T12:{t}.000Z", "value": value, "value_text": None, "status": status,
            "quality": quality, "reason": reason}


TEMP_POINTS = [
    point("00:00", 21.5, 0, "good", None),
    point("00:20", None, Status.BAD_TIMEOUT, "bad", "timeout"),
    point("00:40", 100.0, Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED, "uncertain", CLAMP),
    point("01:00", 22.0, 0, "good", None),
    point("01:20", None, Status.BAD_TIMEOUT, "bad", "timeout"),
    point("01:40", None, Status.BAD, "bad", "connection refused"),
    point("02:10", 23.0, Status.BAD, "bad", None),
]


async def test_raw_points_carry_their_reason_in_json(api: Api) -> None:
    r = await api.client.get("/api/v1/history", params={"tag": TEMP, **RANGE})
    assert r.status_code == 200, r.text
    assert r.json()["points"] == TEMP_POINTS
    r = await api.client.get("/api/v1/history", params=[("tag", TEMP), ("tag", STATE), *RANGE.items()])
    assert [(s["tag"], [(p["value_text"], p["reason"]) for p in s["points"]]) for s in r.json()["series"]] == [
        (TEMP, [(None, p["reason"]) for p in TEMP_POINTS]), (STATE, [("idle", None), (None, "timeout")])]


async def test_raw_points_carry_their_reason_in_csv_and_jsonl(api: Api) -> None:
    r = await api.client.get("/api/v1/history", params={"tag": TEMP, "format": "csv", **RANGE})
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["time", "value", "value_text", "status", "quality", "reason"]
    assert [row[4:] for row in rows[1:]] == [[p["quality"], p["reason"] or ""] for p in TEMP_POINTS]
    assert rows[3] == ["2026-01-05T12:00:40.000Z", "100.0", "", str(Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED),
                       "uncertain", CLAMP]
    r = await api.client.get("/api/v1/history", params={"prefix": "acme", "format": "jsonl", **RANGE})
    lines = [orjson.loads(x) for x in r.content.splitlines()]
    assert [(x["tag"], x["reason"]) for x in lines] == [(STATE, None), (STATE, "timeout")] + [
        (TEMP, p["reason"]) for p in TEMP_POINTS]
    assert lines[3] == {"tag": TEMP, **TEMP_POINTS[1]}


async def test_raw_points_carry_their_reason_in_parquet(api: Api) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    r = await api.client.get("/api/v1/history", params={"tag": TEMP, "format": "parquet", **RANGE})
    table = pq.read_table(io.BytesIO(r.content))
    assert table.column_names == ["time", "value", "value_text", "status", "quality", "reason"]
    assert str(table.schema.field("reason").type) == "string"
    assert table.column("reason").to_pylist() == [p["reason"] for p in TEMP_POINTS]
    assert table.column("quality").to_pylist() == [p["quality"] for p in TEMP_POINTS]


async def test_bad_and_uncertain_counts_per_bucket(api: Api) -> None:
    r = await api.client.get("/api/v1/history", params={"tag": TEMP, "bucket": "1m", "stats": "count,bad,uncertain",
                                                        **RANGE})
    assert r.status_code == 200, r.text
    assert r.json()["buckets"] == [
        {"time": "2026-01-05T12:00:00.000Z", "count": 3, "bad": 1, "uncertain": 1},
        {"time": "2026-01-05T12:01:00.000Z", "count": 3, "bad": 2, "uncertain": 0},
        {"time": "2026-01-05T12:02:00.000Z", "count": 1, "bad": 1, "uncertain": 0},
    ]
    assert r.json()["layer"] == "raw"  # the layers know no quality
    r = await api.client.get("/api/v1/history", params={"tag": TEMP, "bucket": "5m", "stats": "bad,uncertain,avg",
                                                        "format": "csv", **RANGE})
    # avg over the numbers, BAD or not (23.0 is a BAD point's value): the rule of the raw statistics
    assert r.text.splitlines() == ["time,bad,uncertain,avg", f"2026-01-05T12:00:00.000Z,4,1,{166.5 / 4}"]


async def test_bad_and_uncertain_counts_in_parquet_are_integers(api: Api) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    r = await api.client.get("/api/v1/history", params={"tag": TEMP, "bucket": "2m", "stats": "bad,uncertain",
                                                        "format": "parquet", **RANGE})
    table = pq.read_table(io.BytesIO(r.content))
    assert [str(table.schema.field(c).type) for c in ("bad", "uncertain")] == ["int64", "int64"]
    assert table.to_pylist() == [{"time": T0, "bad": 3, "uncertain": 1},
                                 {"time": T0 + timedelta(minutes=2), "bad": 1, "uncertain": 0}]


async def test_reason_of_a_point_inserted_by_hand(api: Api, db: str) -> None:
    """A backfill by hand: the reason row and the point's reason_id written with SQL."""
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await conn.execute("INSERT INTO nexus.reasons (text) VALUES ('sensor wire broken')")
        await cover(conn, T0, T0 + timedelta(minutes=5))  # a backfill by hand makes its days (the writer its own)
        await conn.execute(
            "INSERT INTO nexus.points (time, tag_id, value, status, reason_id)"
            " SELECT %s, t.id, NULL, %s, r.id FROM nexus.tags t, nexus.reasons r"
            " WHERE t.path = %s AND r.text = 'sensor wire broken'",
            (T0 + timedelta(minutes=4), Status.BAD_NOT_CONNECTED, TEMP))
    r = await api.client.get("/api/v1/history", params={"tag": TEMP, **RANGE})
    assert r.json()["points"][-1] == point("04:00", None, Status.BAD_NOT_CONNECTED, "bad", "sensor wire broken")
