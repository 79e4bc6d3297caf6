"""GET /api/v1/history for analysts, on a real PostgreSQL migrated by ingestion: several tags (tag=
repeated, or a UNS prefix) and their limits, every statistic per bucket (the time-weighted average
by its documented rule), the formats (JSON, streamed CSV, JSON lines, Parquet; 501 without pyarrow),
the row limit of JSON and the server-side cursor of the streamed formats."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg
import pytest

from gateway_core import history, history_formats, history_query
from gateway_core.history_query import Query, Series
from gateway_core.settings import HistorySettings
from ingestion.schema import migrate as migrate_historian
from tests.plugins.timescale import historian_db
from tests.support.core import ADMIN, Api, open_api
from tests.support.historian import cover

DEVICE = "acme/berlin/stamping/line-1/press-1"
TEMP = f"{DEVICE}/temp"
PRESSURE = f"{DEVICE}/pressure"
BULK = "acme/berlin/stamping/line-2/press-9/count"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
BAD = 0x800A0000
RANGE = {"from": "2026-01-05T12:00:00Z", "to": "2026-01-05T12:04:00Z"}

db = historian_db  # every test here on plain PostgreSQL and on TimescaleDB (tests/plugins/timescale.py)


@pytest.fixture
async def api(db: str) -> AsyncIterator[Api]:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await migrate_historian(conn)
        ids = {}
        for path, unit in ((TEMP, "degC"), (PRESSURE, "bar"), (BULK, None)):
            e, s, a, li, d, t = path.split("/")
            cur = await conn.execute(
                "INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag, unit)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (path, e, s, a, li, d, t, unit),
            )
            ids[path] = (await cur.fetchone())[0]  # type: ignore[index]
        points: list[tuple[Any, ...]] = [(T0 + 20 * i * S, ids[TEMP], 10.0 + i, 0) for i in range(9)]
        points.append((T0 + 185 * S, ids[TEMP], None, BAD))  # BAD, no value
        # irregular: the time-weighted average is not the average
        points += [(T0 + t * S, ids[PRESSURE], v, 0) for t, v in ((0, 1.0), (10, 3.0), (40, 5.0), (130, 7.0))]
        points += [(T0 + 5 * n * S, ids[BULK], float(n), 0) for n in range(30)]  # 12:00:00 .. 12:02:25
        await cover(conn, min(p[0] for p in points), max(p[0] for p in points) + S)
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO nexus.points (time, tag_id, value, status) VALUES (%s, %s, %s, %s)", points
            )
    async with open_api(db, history=HistorySettings(max_range_days=30, max_rows=20)) as a:
        yield a


async def get(api: Api, *tags: str, **kw: str) -> Any:
    params: list[tuple[str, str]] = [("tag", t) for t in tags] + list({**RANGE, **kw}.items())
    return await api.client.get("/api/v1/history", params=params)


async def test_several_tags_json(api: Api) -> None:
    r = await get(api, PRESSURE, TEMP, PRESSURE)  # in the order given, the repeat dropped
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["from"], body["to"], body["bucket_ms"], body["stats"]) == (
        "2026-01-05T12:00:00.000Z", "2026-01-05T12:04:00.000Z", None, None)
    assert [(s["tag"], s["unit"], len(s["points"])) for s in body["series"]] == [(PRESSURE, "bar", 4),
                                                                                 (TEMP, "degC", 10)]
    assert body["series"][0]["points"][1] == {
        "time": "2026-01-05T12:00:10.000Z", "value": 3.0, "value_text": None, "status": 0, "quality": "good",
        "reason": None}
    assert body["series"][1]["points"][-1]["quality"] == "bad"

    r = await get(api, TEMP, PRESSURE, bucket="2m")
    assert [[b["count"] for b in s["buckets"]] for s in r.json()["series"]] == [[6, 4], [3, 1]]
    assert r.json()["bucket_ms"] == 120_000


async def test_prefix(api: Api) -> None:
    r = await api.client.get("/api/v1/history", params={"prefix": DEVICE, "bucket": "1m", "stats": "count", **RANGE})
    assert r.status_code == 200, r.text
    assert [(s["tag"], [b["count"] for b in s["buckets"]]) for s in r.json()["series"]] == [
        (PRESSURE, [3, 1]), (TEMP, [3, 3, 3, 1])]  # by path
    r = await api.client.get("/api/v1/history", params={"prefix": "acme", "bucket": "4m", "stats": "count", **RANGE})
    assert [(s["tag"], s["buckets"][0]["count"]) for s in r.json()["series"]] == [
        (PRESSURE, 4), (TEMP, 10), (BULK, 30)]


@pytest.mark.parametrize(
    ("params", "status", "field", "text"),
    [
        ([("prefix", "acme"), ("tag", TEMP)], 422, "prefix", "give tag (one or more) or prefix, not both"),
        ([], 422, "tag", "Field required"),
        ([("prefix", "acme/+")], 422, "prefix", "site '+' contains '+' (MQTT wildcard)"),
        ([("prefix", "acme/berlin/none")], 404, "prefix", "no tag under 'acme/berlin/none' has history"),
        ([("tag", TEMP), ("tag", f"{DEVICE}/nope")], 404, "tag", f"tag '{DEVICE}/nope' has no history"),
        ([("tag", TEMP), ("tag", "acme/x")], 422, "tag", "has 2 levels, expected 6"),
        ([("tag", TEMP), ("bucket", "1m"), ("bucket", "2m")], 400, "bucket", "'bucket' is given 2 times"),
        ([("tag", TEMP), ("stats", "min")], 422, "stats", "stats are per bucket: give a bucket"),
        ([("tag", TEMP), ("bucket", "1m"), ("stats", "min,median")], 422, "stats", "'median' is not one of count"),
    ],
)
async def test_tag_errors(api: Api, params: list[tuple[str, str]], status: int, field: str, text: str) -> None:
    r = await api.client.get("/api/v1/history", params=[*params, *RANGE.items()])
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and text in r.json()["detail"], r.json()


async def test_tag_count_limit(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "MAX_TAGS", 2)
    monkeypatch.setattr(history_query, "MAX_TAGS", 2)
    r = await get(api, TEMP, PRESSURE, BULK)
    assert r.status_code == 422 and r.json() == {
        "detail": "3 tags in one request; the limit is 2", "field": "tag"}
    r = await api.client.get("/api/v1/history", params={"prefix": "acme", **RANGE})
    assert r.status_code == 422 and r.json() == {
        "detail": "more than 2 tags under 'acme'; give a longer prefix or name the tags with tag=",
        "field": "prefix"}
    assert (await api.client.get("/api/v1/history", params={"prefix": DEVICE, **RANGE})).status_code == 200


async def test_every_statistic(api: Api) -> None:
    r = await get(api, PRESSURE, bucket="1m", stats="all")
    assert r.status_code == 200, r.text
    b0, b2 = r.json()["buckets"]  # no point in 12:01: no bucket
    assert list(b0) == ["time", "count", "min", "max", "avg", "stddev", "first", "last", "twa", "bad", "uncertain"]
    assert b0 == {"time": "2026-01-05T12:00:00.000Z", "count": 3, "min": 1.0, "max": 5.0, "avg": 3.0,
                  "stddev": pytest.approx(2.0), "first": 1.0, "last": 5.0,
                  # 1.0 for 10 s, 3.0 for 30 s, 5.0 for 20 s (until the bucket ends)
                  "twa": pytest.approx((1 * 10 + 3 * 30 + 5 * 20) / 60), "bad": 0, "uncertain": 0}
    # 5.0 still held for 10 s, then 7.0 for 50 s (the range ends after the bucket)
    assert b2 == {"time": "2026-01-05T12:02:00.000Z", "count": 1, "min": 7.0, "max": 7.0, "avg": 7.0,
                  "stddev": None, "first": 7.0, "last": 7.0, "twa": pytest.approx((5 * 10 + 7 * 50) / 60),
                  "bad": 0, "uncertain": 0}
    assert r.json()["layer"] == "raw"  # stddev, first, twa: not in the layers
    # the last point holds until 'to', not beyond
    r = await get(api, PRESSURE, bucket="1m", stats="twa", to="2026-01-05T12:02:30Z")
    assert r.json()["buckets"][-1]["twa"] == pytest.approx((5 * 10 + 7 * 20) / 30)

    # a BAD point holds "unknown": 18.0 until it comes, then no weight; first/last are its (missing) value
    r = await get(api, TEMP, bucket="2m", stats="twa,avg,first,last,count")
    assert r.json()["buckets"] == [
        {"time": "2026-01-05T12:00:00.000Z", "twa": pytest.approx(12.5), "avg": 12.5, "first": 10.0, "last": 15.0,
         "count": 6},
        {"time": "2026-01-05T12:02:00.000Z", "twa": pytest.approx((16 * 20 + 17 * 20 + 18 * 25) / 65), "avg": 17.0,
         "first": 16.0, "last": None, "count": 4},
    ]
    r = await get(api, TEMP, bucket="1m", stats="twa,count")
    assert [b["twa"] for b in r.json()["buckets"]] == pytest.approx([11.0, 14.0, 17.0, 18.0])


async def test_csv_and_jsonl(api: Api) -> None:
    r = await get(api, TEMP, PRESSURE, format="csv")
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["tag", "time", "value", "value_text", "status", "quality", "reason"] and len(rows) == 15
    assert rows[1] == [TEMP, "2026-01-05T12:00:00.000Z", "10.0", "", "0", "good", ""]
    assert rows[10] == [TEMP, "2026-01-05T12:03:05.000Z", "", "", str(BAD), "bad", ""]
    assert rows[11] == [PRESSURE, "2026-01-05T12:00:00.000Z", "1.0", "", "0", "good", ""]

    r = await get(api, PRESSURE, bucket="1m", stats="count,twa", format="csv")
    assert r.text.splitlines() == ["time,count,twa", "2026-01-05T12:00:00.000Z,3,3.3333333333333335",
                                   "2026-01-05T12:02:00.000Z,1,6.666666666666667"]

    r = await get(api, PRESSURE, format="jsonl")
    assert r.headers["content-type"] == "application/jsonl"
    lines = [orjson.loads(x) for x in r.content.splitlines()]
    assert lines[0] == {"time": "2026-01-05T12:00:00.000Z", "value": 1.0, "value_text": None, "status": 0,
                        "quality": "good", "reason": None} and len(lines) == 4
    r = await api.client.get("/api/v1/history", params={"prefix": DEVICE, "bucket": "4m", "stats": "count,max",
                                                        "format": "jsonl", **RANGE})
    assert [orjson.loads(x) for x in r.content.splitlines()] == [
        {"tag": PRESSURE, "time": "2026-01-05T12:00:00.000Z", "count": 4, "max": 7.0},
        {"tag": TEMP, "time": "2026-01-05T12:00:00.000Z", "count": 10, "max": 18.0},
    ]


async def test_parquet(api: Api) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    r = await api.client.get("/api/v1/history", params={"prefix": "acme", "format": "parquet", **RANGE})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content))
    assert table.column_names == ["tag", "time", "value", "value_text", "status", "quality", "reason"]
    assert str(table.schema.field("time").type) == "timestamp[us, tz=UTC]"
    assert table.num_rows == 44  # 4 + 10 + 30: not bound by max_rows (20)
    rows = table.to_pylist()
    assert rows[4] == {"tag": TEMP, "time": T0, "value": 10.0, "value_text": None, "status": 0, "quality": "good",
                       "reason": None}
    assert rows[13]["quality"] == "bad" and rows[13]["value"] is None
    meta = table.schema.metadata
    assert orjson.loads(meta[b"nexus.units"]) == {PRESSURE: "bar", TEMP: "degC", BULK: None}
    assert meta[b"nexus.from"] == b"2026-01-05T12:00:00.000Z"

    r = await get(api, TEMP, bucket="1m", stats="count,avg,twa", format="parquet")
    table = pq.read_table(io.BytesIO(r.content))
    assert table.column_names == ["time", "count", "avg", "twa"] and str(table.schema.field("count").type) == "int64"
    assert table.column("count").to_pylist() == [3, 3, 3, 1]
    assert table.schema.metadata[b"nexus.bucket_ms"] == b"60000"

    r = await get(api, f"{DEVICE}/pressure", to="2026-01-05T11:00:00Z", **{"from": "2026-01-05T10:00:00Z"},
                  format="parquet")
    assert pq.read_table(io.BytesIO(r.content)).num_rows == 0  # no rows: still a file with its schema


async def test_parquet_without_pyarrow(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "pyarrow", lambda: None)
    r = await get(api, TEMP, format="parquet")
    assert r.status_code == 501 and r.json()["field"] == "format"
    assert "needs pyarrow on the server (pip install 'nexus-edge[parquet]')" in r.json()["detail"]


async def test_row_limit_json_only(api: Api) -> None:
    # JSON: max_rows (20) over all series, a 422 before anything is sent
    r = await api.client.get("/api/v1/history", params={"prefix": "acme", **RANGE})
    assert r.status_code == 422 and r.json() == {
        "detail": "more than 20 points in range; use a bucket or a shorter range, fewer tags or a streamed format"
                  " (csv, jsonl, parquet)", "field": "to"}
    r = await get(api, BULK)
    assert r.status_code == 422
    assert r.json()["detail"] == "more than 20 points in range; use a bucket or a shorter range"
    r = await get(api, TEMP, PRESSURE, bucket="1m", **{"from": "2026-01-05T11:54:00Z"})  # 2 x 10 buckets: fits
    assert r.status_code == 200
    r = await get(api, TEMP, PRESSURE, bucket="1m", **{"from": "2026-01-05T11:53:00Z"})
    assert r.status_code == 422 and r.json()["field"] == "bucket" and "22 buckets exceed the limit of 20" in r.text
    # streamed: every row
    r = await get(api, BULK, format="csv")
    assert r.status_code == 200 and len(r.text.splitlines()) == 31
    r = await get(api, BULK, format="jsonl", bucket="1s")
    assert r.status_code == 200 and len(r.content.splitlines()) == 30


async def test_stream_reads_batches_from_a_server_side_cursor(
    api: Api, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_query, "FETCH", 7)
    h = api.core.history
    series = await h.resolve([BULK, TEMP], None)
    q = Query(series=tuple(series), start=T0, end=T0 + 240 * S, bucket=None, stats=(), multi=True)
    sizes = []
    async with contextlib.aclosing(h.stream(q)) as batches:
        async for s, rows in batches:
            if not sizes:  # the cursor is open on the server while the answer is being read
                async with await psycopg.AsyncConnection.connect(db) as other:
                    activity = await (await other.execute(
                        "SELECT state, query FROM pg_stat_activity WHERE query LIKE %s", ("%nexus_history_0%",)
                    )).fetchall()
                assert [(state, query.split()[:2]) for state, query in activity] == [
                    ("idle in transaction", ["FETCH", "FORWARD"])], activity
            sizes.append((s.path, len(rows)))
    assert sizes == [(BULK, 7)] * 4 + [(BULK, 2), (TEMP, 7), (TEMP, 3)]
    assert isinstance(series[0], Series) and series[0].unit is None


async def test_client_gone_closes_the_cursor(api: Api, db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that goes away mid-answer (ASGI 2.4: send raises OSError): the cursor is closed, the
    transaction ended and the connection back in the pool, at once."""
    monkeypatch.setattr(history_query, "FETCH", 3)
    app = api.client._transport.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and len(sent) == 2:
            raise OSError("connection reset by peer")
        sent.append(message)

    query = urlencode([("tag", BULK), ("format", "csv"), *RANGE.items()]).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/api/v1/history", "raw_path": b"/api/v1/history",
             "query_string": query, "root_path": "", "client": ("127.0.0.1", 1), "server": ("core", 80),
             "headers": [(b"host", b"core"), *((k.lower().encode(), v.encode()) for k, v in ADMIN.items())]}
    with contextlib.suppress(Exception):
        await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"time,value,value_text,status,quality,reason\n"
    pool = api.core.history.pool
    assert [c.info.transaction_status.name for c in pool._idle] == ["IDLE"]
    async with await psycopg.AsyncConnection.connect(db) as other:
        activity = await (await other.execute(
            "SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pool._idle[0].info.backend_pid,)
        )).fetchall()
    assert activity == [("idle", "ROLLBACK")]


def test_quality_names() -> None:
    assert [history_formats.quality(s) for s in (0, 0x40000000, 0x80000000, 0xC0000000, 0x800A0000)] == [
        "good", "uncertain", "bad", "bad", "bad"]
