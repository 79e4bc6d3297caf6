"""GET /api/v1/history: raw points and buckets (min/max/avg/last/count) of one tag, JSON and CSV,
from nexus.points/nexus.tags created by the ingestion migrations on a real PostgreSQL; limits."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from gateway_core.settings import HistorySettings
from ingestion.schema import migrate as migrate_historian
from tests.plugins.timescale import historian_db
from tests.support.core import Api, open_api
from tests.support.historian import cover

PATH = "acme/berlin/stamping/line-1/press-1/temp"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

db = historian_db  # every test here on plain PostgreSQL and on TimescaleDB (tests/plugins/timescale.py)


@pytest.fixture
async def api(db: str) -> AsyncIterator[Api]:
    # this module's own: the historian's tables and points first, then the app (not tests.plugins.core's)
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await migrate_historian(conn)
        tag_id = (
            await (
                await conn.execute(
                    "INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag, unit)"
                    " VALUES (%s, 'acme', 'berlin', 'stamping', 'line-1', 'press-1', 'temp', 'degC') RETURNING id",
                    (PATH,),
                )
            ).fetchone()
        )[0]  # type: ignore[index]
        other = (
            await (
                await conn.execute(
                    "INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag)"
                    " VALUES ('acme/berlin/stamping/line-1/press-1/recipe', 'acme', 'berlin', 'stamping', 'line-1',"
                    " 'press-1', 'recipe') RETURNING id"
                )
            ).fetchone()
        )[0]  # type: ignore[index]
        await cover(conn, T0, T0 + timedelta(minutes=11))  # the points here and test_row_limit's: one day
        # one point every 20 s for 3 minutes: 10, 11, ... 18; one BAD point without value
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO nexus.points (time, tag_id, value, status) VALUES (%s, %s, %s, 0)",
                [(T0 + timedelta(seconds=20 * i), tag_id, 10.0 + i) for i in range(9)],
            )
            await cur.execute(
                "INSERT INTO nexus.points (time, tag_id, value, status) VALUES (%s, %s, NULL, %s)",
                (T0 + timedelta(seconds=185), tag_id, 0x800A0000),
            )
            await cur.execute(
                "INSERT INTO nexus.points (time, tag_id, value_text) VALUES (%s, %s, 'R-7')", (T0, other)
            )
    async with open_api(db, history=HistorySettings(max_range_days=30, max_rows=20)) as a:
        yield a


def params(**kw: str) -> dict[str, str]:
    return {"tag": PATH, "from": "2026-01-05T12:00:00Z", "to": "2026-01-05T12:04:00Z", **kw}


async def test_raw_points_json_and_csv(api: Api) -> None:
    r = await api.client.get("/api/v1/history", params=params())
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["tag"], body["unit"], body["from"], body["to"]) == (
        PATH,
        "degC",
        "2026-01-05T12:00:00.000Z",
        "2026-01-05T12:04:00.000Z",
    )
    assert len(body["points"]) == 10
    assert body["points"][0] == {
        "time": "2026-01-05T12:00:00.000Z",
        "value": 10.0,
        "value_text": None,
        "status": 0,
        "quality": "good",
        "reason": None,
    }
    assert body["points"][-1] == {
        "time": "2026-01-05T12:03:05.000Z",
        "value": None,
        "value_text": None,
        "status": 0x800A0000,
        "quality": "bad",
        "reason": None,
    }
    assert body["layer"] == "raw" and r.headers["x-nexus-layer"] == "raw"
    # the range is half-open, naive times are UTC, other time zones are converted
    r = await api.client.get(
        "/api/v1/history", params=params(**{"from": "2026-01-05T13:00:20+01:00", "to": "2026-01-05T12:01:00"})
    )
    assert [p["value"] for p in r.json()["points"]] == [11.0, 12.0]

    r = await api.client.get("/api/v1/history", params=params(format="csv"))
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["time", "value", "value_text", "status", "quality", "reason"]
    assert rows[1] == ["2026-01-05T12:00:00.000Z", "10.0", "", "0", "good", ""] and len(rows) == 11

    r = await api.client.get(
        "/api/v1/history",
        params={
            "tag": "acme/berlin/stamping/line-1/press-1/recipe",
            "from": "2026-01-05T11:00:00Z",
            "to": "2026-01-05T13:00:00Z",
        },
    )
    assert r.json()["points"] == [
        {
            "time": "2026-01-05T12:00:00.000Z",
            "value": None,
            "value_text": "R-7",
            "status": 0,
            "quality": "good",
            "reason": None,
        }
    ]


async def test_buckets_json_and_csv(api: Api) -> None:
    r = await api.client.get("/api/v1/history", params=params(bucket="1m"))
    assert r.status_code == 200, r.text
    assert r.json()["buckets"] == [
        {"time": "2026-01-05T12:00:00.000Z", "min": 10.0, "max": 12.0, "avg": 11.0, "last": 12.0, "count": 3},
        {"time": "2026-01-05T12:01:00.000Z", "min": 13.0, "max": 15.0, "avg": 14.0, "last": 15.0, "count": 3},
        {"time": "2026-01-05T12:02:00.000Z", "min": 16.0, "max": 18.0, "avg": 17.0, "last": 18.0, "count": 3},
        {"time": "2026-01-05T12:03:00.000Z", "min": None, "max": None, "avg": None, "last": None, "count": 1},
    ]
    # whole minutes asking only what the minute layer holds: read from it (tests/gateway_core/test_history_layers.py)
    assert r.json()["layer"] == "1m" and r.headers["x-nexus-layer"] == "1m"
    r = await api.client.get("/api/v1/history", params=params(bucket="2m", format="csv"))
    assert r.text.splitlines() == [
        "time,min,max,avg,last,count",
        "2026-01-05T12:00:00.000Z,10.0,15.0,12.5,15.0,6",
        "2026-01-05T12:02:00.000Z,16.0,18.0,17.0,,4",
    ]
    assert r.headers["x-nexus-layer"] == "1m"


@pytest.mark.parametrize(
    ("query", "status", "field", "text"),
    [
        ({"tag": "acme/berlin/press-1/temp"}, 422, "tag", "has 4 levels, expected 6"),
        ({"tag": "acme/berlin/stamping/line-1/press-1/nope"}, 404, "tag", "has no history"),
        ({"to": "2026-01-05T11:00:00Z"}, 422, "from", "must be before 'to'"),
        ({"from": "2025-01-01T00:00:00Z"}, 422, "to", "longer than the limit of 30 days"),
        ({"from": "yesterday"}, 422, "from", "valid datetime"),
        ({"bucket": "1x"}, 422, "bucket", "is not <n><ms|s|m|h|d>"),
        ({"bucket": "1s", "from": "2026-01-05T11:00:00Z"}, 422, "bucket", "exceed the limit of 20"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-30T00:00:00Z"}, 200, None, ""),
        ({"format": "xml"}, 422, "format", "Input should be 'json', 'csv', 'jsonl' or 'parquet'"),
    ],
)
async def test_limits_and_errors(
    api: Api, query: dict[str, str], status: int, field: str | None, text: str
) -> None:
    r = await api.client.get("/api/v1/history", params=params(**query))
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["field"] == field and text in r.json()["detail"]


async def test_row_limit(api: Api, db: str) -> None:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO nexus.points (time, tag_id, value) SELECT %s + n * interval '1 s', 1, n"
            " FROM generate_series(1, 30) n",
            (T0 + timedelta(minutes=10),),
        )
    r = await api.client.get("/api/v1/history", params=params(to="2026-01-05T12:20:00Z"))
    assert r.status_code == 422 and r.json()["detail"] == (
        "more than 20 points in range; use a bucket or a shorter range"
    )
    r = await api.client.get("/api/v1/history", params=params(to="2026-01-05T12:20:00Z", bucket="5m"))
    assert r.status_code == 200 and sum(b["count"] for b in r.json()["buckets"]) == 40


async def test_no_historian_tables(db: str) -> None:
    async with open_api(db) as a:
        r = await a.client.get("/api/v1/history", params=params())
    assert r.status_code == 404 and "no historian tables" in r.json()["detail"]
