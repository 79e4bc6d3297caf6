"""GET /api/v1/history/windows and /api/v1/history/alarms on a real PostgreSQL migrated by ingestion:
edge windows of one tag (one width or all), alarms of a tag or of every tag under a path (overlapping
the range, active or cleared, one kind), JSON and CSV, the limits and errors of /api/v1/history."""

from __future__ import annotations

import asyncio
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

DEVICE = "acme/berlin/stamping/line-1/press-1"
TEMP = f"{DEVICE}/temp"
PRESSURE = f"{DEVICE}/pressure"
OTHER = "acme/berlin/stamping/line-2/press-9/temp"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def tag_row(path: str, unit: str | None = None) -> tuple[object, ...]:
    e, s, a, li, d, t = path.split("/")
    return path, e, s, a, li, d, t, unit


db = historian_db  # every test here on plain PostgreSQL and on TimescaleDB (tests/plugins/timescale.py)


@pytest.fixture
async def api(db: str) -> AsyncIterator[Api]:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await migrate_historian(conn)
        ids = {}
        for path, unit in ((TEMP, "degC"), (PRESSURE, "bar"), (OTHER, None)):
            cur = await conn.execute(
                "INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag, unit)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                tag_row(path, unit),
            )
            ids[path] = (await cur.fetchone())[0]  # type: ignore[index]
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO nexus.windows (tag_id, width_ms, start, count, min, max, avg, twa, first, last,"
                " status, complete) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (ids[TEMP], 60_000, T0, 60, 20.5, 21.5, 21.0, 21.02, 20.5, 21.5, 0, True),
                    (ids[TEMP], 60_000, T0 + 60 * S, 30, 21.0, 22.0, 21.5, 21.4, 21.0, 22.0, 0, False),
                    (ids[TEMP], 60_000, T0 + 120 * S, 0, None, None, None, None, None, None, 0x800A0000, True),
                    (ids[TEMP], 300_000, T0, 90, 20.5, 22.0, 21.2, 21.1, 20.5, 22.0, 0, True),
                    (ids[TEMP], 60_000, T0 + 300 * S, 60, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0, True),  # after 'to'
                    (ids[PRESSURE], 60_000, T0, 60, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 0, True),
                ],
            )
            await cur.executemany(
                "INSERT INTO nexus.alarm_events (tag_id, alarm, ts, active, value, limit_value, severity)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (ids[TEMP], "high", T0 + 10 * S, True, 91.0, 90.0, 700),
                    (ids[TEMP], "high", T0 + 70 * S, False, 85.0, 90.0, 700),
                    (ids[TEMP], "low", T0 + 180 * S, True, 1.5, 2.0, 300),
                    (ids[PRESSURE], "low", T0 + 30 * S, False, 5.0, 2.0, 300),  # its raise is not here
                    (ids[OTHER], "high", T0 - timedelta(days=1), True, 99.0, 90.0, 900),  # still active
                    (ids[OTHER], "stuck", T0 - 7200 * S, True, 4.0, 60.0, 200),  # over before the range
                    (ids[OTHER], "stuck", T0 - 5400 * S, False, 4.5, 60.0, 200),
                ],
            )
    async with open_api(db, history=HistorySettings(max_range_days=30, max_rows=20)) as a:
        yield a


RANGE = {"from": "2026-01-05T12:00:00Z", "to": "2026-01-05T12:04:00Z"}

TEMP_HIGH = {
    "tag": TEMP, "alarm": "high", "raised_at": "2026-01-05T12:00:10.000Z", "cleared_at": "2026-01-05T12:01:10.000Z",
    "active": False, "raised_value": 91.0, "raised_limit": 90.0, "severity": 700, "cleared_value": 85.0,
    "acked_at": None, "acked_by": None, "ack_comment": None,
}
TEMP_LOW = {
    "tag": TEMP, "alarm": "low", "raised_at": "2026-01-05T12:03:00.000Z", "cleared_at": None, "active": True,
    "raised_value": 1.5, "raised_limit": 2.0, "severity": 300, "cleared_value": None,
    "acked_at": None, "acked_by": None, "ack_comment": None,
}
PRESSURE_LOW = {
    "tag": PRESSURE, "alarm": "low", "raised_at": None, "cleared_at": "2026-01-05T12:00:30.000Z", "active": False,
    "raised_value": None, "raised_limit": None, "severity": None, "cleared_value": 5.0,
    "acked_at": None, "acked_by": None, "ack_comment": None,
}
OTHER_HIGH = {
    "tag": OTHER, "alarm": "high", "raised_at": "2026-01-04T12:00:00.000Z", "cleared_at": None, "active": True,
    "raised_value": 99.0, "raised_limit": 90.0, "severity": 900, "cleared_value": None,
    "acked_at": None, "acked_by": None, "ack_comment": None,
}


async def test_windows_json_and_csv(api: Api) -> None:
    r = await api.client.get("/api/v1/history/windows", params={"tag": TEMP, "width": "1m", **RANGE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["tag"], body["unit"], body["from"], body["to"], body["width_ms"]) == (
        TEMP, "degC", "2026-01-05T12:00:00.000Z", "2026-01-05T12:04:00.000Z", 60_000)
    assert body["windows"] == [
        {"start": "2026-01-05T12:00:00.000Z", "end": "2026-01-05T12:01:00.000Z", "width_ms": 60_000, "count": 60,
         "min": 20.5, "max": 21.5, "avg": 21.0, "twa": 21.02, "first": 20.5, "last": 21.5, "status": 0,
         "quality": "good", "complete": True},
        {"start": "2026-01-05T12:01:00.000Z", "end": "2026-01-05T12:02:00.000Z", "width_ms": 60_000, "count": 30,
         "min": 21.0, "max": 22.0, "avg": 21.5, "twa": 21.4, "first": 21.0, "last": 22.0, "status": 0,
         "quality": "good", "complete": False},
        {"start": "2026-01-05T12:02:00.000Z", "end": "2026-01-05T12:03:00.000Z", "width_ms": 60_000, "count": 0,
         "min": None, "max": None, "avg": None, "twa": None, "first": None, "last": None, "status": 0x800A0000,
         "quality": "bad", "complete": True},
    ]
    # every width, ordered by start then width; the range is half-open on start
    r = await api.client.get("/api/v1/history/windows", params={"tag": TEMP, **RANGE})
    assert [(w["start"][11:19], w["width_ms"]) for w in r.json()["windows"]] == [
        ("12:00:00", 60_000), ("12:00:00", 300_000), ("12:01:00", 60_000), ("12:02:00", 60_000)]
    assert r.json()["width_ms"] is None
    r = await api.client.get("/api/v1/history/windows", params={"tag": TEMP, "width": "5m", "format": "csv", **RANGE})
    assert r.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(r.text))) == [
        ["start", "end", "width_ms", "count", "min", "max", "avg", "twa", "first", "last", "status", "quality",
         "complete"],
        ["2026-01-05T12:00:00.000Z", "2026-01-05T12:05:00.000Z", "300000", "90", "20.5", "22.0", "21.2", "21.1",
         "20.5", "22.0", "0", "good", "True"],
    ]
    # a width nothing was stored at: no windows
    r = await api.client.get("/api/v1/history/windows", params={"tag": TEMP, "width": "10s", **RANGE})
    assert r.status_code == 200 and r.json()["windows"] == []


async def test_alarms_of_a_device_a_tag_and_an_enterprise(api: Api) -> None:
    r = await api.client.get("/api/v1/history/alarms", params={"tag": DEVICE, **RANGE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["tag"], body["from"], body["to"], body["active"], body["alarm"]) == (
        DEVICE, "2026-01-05T12:00:00.000Z", "2026-01-05T12:04:00.000Z", None, None)
    # by raise time (a clear without its raise: by its clear time)
    assert body["alarms"] == [TEMP_HIGH, PRESSURE_LOW, TEMP_LOW]

    r = await api.client.get("/api/v1/history/alarms", params={"tag": TEMP, **RANGE})
    assert r.json()["alarms"] == [TEMP_HIGH, TEMP_LOW]
    # the whole enterprise: an alarm raised the day before and still active is in the range; one over
    # before the range is not
    r = await api.client.get("/api/v1/history/alarms", params={"tag": "acme", **RANGE})
    assert r.json()["alarms"] == [OTHER_HIGH, TEMP_HIGH, PRESSURE_LOW, TEMP_LOW]
    r = await api.client.get("/api/v1/history/alarms", params={"tag": "acme", "active": "true", **RANGE})
    assert r.json()["alarms"] == [OTHER_HIGH, TEMP_LOW] and r.json()["active"] is True
    r = await api.client.get("/api/v1/history/alarms", params={"tag": "acme", "active": "false", **RANGE})
    assert r.json()["alarms"] == [TEMP_HIGH, PRESSURE_LOW]
    r = await api.client.get("/api/v1/history/alarms", params={"tag": "acme/berlin", "alarm": "high", **RANGE})
    assert r.json()["alarms"] == [OTHER_HIGH, TEMP_HIGH]
    # a range that ends before the raise: not there; one that starts after the clear: not there
    r = await api.client.get("/api/v1/history/alarms", params={
        "tag": TEMP, "from": "2026-01-05T12:01:11Z", "to": "2026-01-05T12:02:00Z"})
    assert r.json()["alarms"] == []
    # a path prefix is whole levels: "acme/berl" is not "acme/berlin"
    r = await api.client.get("/api/v1/history/alarms", params={"tag": "acme/berl", **RANGE})
    assert r.status_code == 404 and r.json()["field"] == "tag"


async def test_alarms_csv(api: Api) -> None:
    r = await api.client.get("/api/v1/history/alarms", params={"tag": DEVICE, "format": "csv", **RANGE})
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines() == [
        "tag,alarm,raised_at,cleared_at,active,raised_value,raised_limit,severity,cleared_value,acked_at,acked_by,"
        "ack_comment",
        f"{TEMP},high,2026-01-05T12:00:10.000Z,2026-01-05T12:01:10.000Z,False,91.0,90.0,700,85.0,,,",
        f"{PRESSURE},low,,2026-01-05T12:00:30.000Z,False,,,,5.0,,,",
        f"{TEMP},low,2026-01-05T12:03:00.000Z,,True,1.5,2.0,300,,,,",
    ]


@pytest.mark.parametrize(
    ("path", "query", "status", "field", "text"),
    [
        ("windows", {"tag": DEVICE}, 422, "tag", "has 5 levels, expected 6"),
        ("windows", {"tag": f"{DEVICE}/nope"}, 404, "tag", "has no history"),
        ("windows", {"width": "1x"}, 422, "width", "is not <n><ms|s|m|h|d>"),
        ("windows", {"width": "2d"}, 422, "width", "up to 1d"),
        ("windows", {"to": "2026-01-05T11:00:00Z"}, 422, "from", "must be before 'to'"),
        ("windows", {"from": "2025-01-01T00:00:00Z"}, 422, "to", "longer than the limit of 30 days"),
        ("windows", {"from": "yesterday"}, 422, "from", "valid datetime"),
        ("windows", {"format": "xml"}, 422, "format", "Input should be 'json' or 'csv'"),
        ("alarms", {"tag": f"{TEMP}/x"}, 422, "tag", "has 7 levels, expected 1 to 6"),
        ("alarms", {"tag": "acme/+/stamping"}, 422, "tag", "contains '+'"),
        ("alarms", {"tag": "acme//stamping"}, 422, "tag", "site is empty"),
        ("alarms", {"tag": "globex"}, 404, "tag", "no tag under 'globex' has history"),
        ("alarms", {"active": "maybe"}, 422, "active", "valid boolean"),
        ("alarms", {"alarm": "hot"}, 422, "alarm", "is not one of high, low, rate, stuck"),
        ("alarms", {"to": "2026-01-05T11:00:00Z"}, 422, "from", "must be before 'to'"),
        ("alarms", {"from": "2025-01-01T00:00:00Z"}, 422, "to", "longer than the limit of 30 days"),
        ("alarms", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-30T00:00:00Z"}, 200, None, ""),
    ],
)
async def test_limits_and_errors(
    api: Api, path: str, query: dict[str, str], status: int, field: str | None, text: str
) -> None:
    params = {"tag": TEMP if path == "windows" else DEVICE, "width": "1m", **RANGE, **query}
    if path == "alarms":
        del params["width"]
    r = await api.client.get(f"/api/v1/history/{path}", params=params)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["field"] == field and text in r.json()["detail"], r.json()


async def test_row_limits(api: Api, db: str) -> None:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO nexus.windows (tag_id, width_ms, start, count, min, max, avg, twa, first, last)"
            " SELECT 2, 1000, %s + n * interval '1 s', 1, n, n, n, n, n, n FROM generate_series(1, 30) n",
            (T0 + timedelta(minutes=10),),
        )
        await conn.execute(
            "INSERT INTO nexus.alarm_events (tag_id, alarm, ts, active, severity)"
            " SELECT 2, 'rate', %s + n * interval '1 s', n %% 2 = 0, 500 FROM generate_series(1, 60) n",
            (T0 + timedelta(minutes=10),),
        )
    wide = {"from": "2026-01-05T12:00:00Z", "to": "2026-01-05T13:00:00Z"}
    r = await api.client.get("/api/v1/history/windows", params={"tag": PRESSURE, **wide})
    assert r.status_code == 422 and r.json() == {
        "detail": "more than 20 windows in range; give a width or a shorter range", "field": "to"}
    r = await api.client.get("/api/v1/history/windows", params={"tag": PRESSURE, "width": "1m", **wide})
    assert r.status_code == 200 and len(r.json()["windows"]) == 1
    r = await api.client.get("/api/v1/history/alarms", params={"tag": PRESSURE, **wide})
    assert r.status_code == 422 and r.json()["field"] == "to" and "more than 20 alarms" in r.json()["detail"]
    # 30 raises, each closed by the clear a second later
    r = await api.client.get("/api/v1/history/alarms", params={
        "tag": PRESSURE, "alarm": "rate", "from": "2026-01-05T12:10:00Z", "to": "2026-01-05T12:10:20Z"})
    assert r.status_code == 200 and len(r.json()["alarms"]) == 10
    assert all(a["cleared_at"] is not None for a in r.json()["alarms"])


async def test_viewer_key_required(api: Api) -> None:
    for path in ("windows", "alarms"):
        r = await api.client.get(f"/api/v1/history/{path}", params={"tag": TEMP, **RANGE},
                                 headers={"Authorization": ""})
        assert r.status_code == 401 and r.json()["field"] == "Authorization"
    r = await api.client.post("/api/v1/keys", json={"name": "reader", "role": "viewer"})
    viewer = {"Authorization": f"Bearer {r.json()['key']}"}
    for path in ("windows", "alarms"):
        r = await api.client.get(f"/api/v1/history/{path}", params={"tag": TEMP, **RANGE}, headers=viewer)
        assert r.status_code == 200, r.text


async def test_no_historian_tables(db: str) -> None:
    async with open_api(db) as a:
        for path in ("windows", "alarms"):
            r = await a.client.get(f"/api/v1/history/{path}", params={"tag": TEMP, **RANGE})
            assert r.status_code == 404 and "no historian tables" in r.json()["detail"], r.text
        r = await a.client.post("/api/v1/alarms/ack", json={"alarms": [ref(TEMP_HIGH)]})
        assert r.status_code == 404 and "no historian tables" in r.json()["detail"], r.text


async def role_header(api: Api, role: str) -> dict[str, str]:
    r = await api.client.post("/api/v1/keys", json={"name": f"{role}-key", "role": role})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


def ref(row: dict[str, object]) -> dict[str, object]:
    return {"tag": row["tag"], "alarm": row["alarm"], "raised_at": row["raised_at"]}


async def test_acknowledge_alarms(api: Api) -> None:
    operator = await role_header(api, "operator")
    r = await api.client.post("/api/v1/alarms/ack", headers=operator, json={
        "alarms": [ref(TEMP_HIGH), ref(TEMP_LOW), ref(TEMP_LOW)], "comment": "valve checked"})
    assert r.status_code == 200, r.text
    done = r.json()["acknowledged"]
    # one answer per alarm (the one named twice is acknowledged once)
    assert [(a["tag"], a["alarm"], a["raised_at"], a["acked_by"], a["comment"], a["already"]) for a in done] == [
        (TEMP, "high", TEMP_HIGH["raised_at"], "operator-key", "valve checked", False),
        (TEMP, "low", TEMP_LOW["raised_at"], "operator-key", "valve checked", False)]
    acked_at = done[0]["acked_at"]
    assert datetime.fromisoformat(acked_at) > datetime.now(UTC) - timedelta(minutes=1)
    ack = {"acked_at": acked_at, "acked_by": "operator-key", "ack_comment": "valve checked"}
    r = await api.client.get("/api/v1/history/alarms", params={"tag": DEVICE, **RANGE})
    assert r.json()["alarms"] == [{**TEMP_HIGH, **ack}, PRESSURE_LOW, {**TEMP_LOW, **ack}]
    # acked=false: raises nobody acknowledged (a clear without its raise has nothing to acknowledge)
    r = await api.client.get("/api/v1/history/alarms", params={"tag": "acme", "acked": "false", **RANGE})
    assert r.json()["alarms"] == [OTHER_HIGH] and r.json()["acked"] is False
    r = await api.client.get("/api/v1/history/alarms", params={"tag": "acme", "acked": "true", "active": "true",
                                                               **RANGE})
    assert r.json()["alarms"] == [{**TEMP_LOW, **ack}]
    r = await api.client.get("/api/v1/history/alarms", params={"tag": TEMP, "format": "csv", **RANGE})
    assert r.text.splitlines()[1].endswith(f",{acked_at},operator-key,valve checked")
    # again, by someone else and in another time zone: the first acknowledgement stays, and is the answer
    r = await api.client.post("/api/v1/alarms/ack", json={
        "alarms": [{**ref(TEMP_HIGH), "raised_at": "2026-01-05T13:00:10+01:00"}, ref(OTHER_HIGH)],
        "comment": "me too"})
    assert r.status_code == 200, r.text
    assert [(a["raised_at"], a["acked_by"], a["comment"], a["already"]) for a in r.json()["acknowledged"]] == [
        (TEMP_HIGH["raised_at"], "operator-key", "valve checked", True),
        (OTHER_HIGH["raised_at"], "bootstrap-admin", "me too", False)]
    # every first acknowledgement is an audit row, a repeated one is not
    r = await api.client.get("/api/v1/audit", params={"limit": 50})
    acks = [(e["actor"], e["target"], e["after"]["comment"]) for e in r.json()["items"] if e["action"] == "alarm.ack"]
    assert sorted(acks) == [
        ("bootstrap-admin", f"alarm:{OTHER}|high|{OTHER_HIGH['raised_at']}", "me too"),
        ("operator-key", f"alarm:{TEMP}|high|{TEMP_HIGH['raised_at']}", "valve checked"),
        ("operator-key", f"alarm:{TEMP}|low|{TEMP_LOW['raised_at']}", "valve checked")]


async def test_two_acknowledge_at_once_one_wins(api: Api) -> None:
    body = {"alarms": [ref(OTHER_HIGH)]}
    answers = await asyncio.gather(*(api.client.post("/api/v1/alarms/ack", json={**body, "comment": str(i)})
                                     for i in range(4)))
    acks = [r.json()["acknowledged"][0] for r in answers]
    assert sorted(a["already"] for a in acks) == [False, True, True, True]
    assert len({(a["acked_at"], a["comment"]) for a in acks}) == 1
    r = await api.client.get("/api/v1/audit", params={"limit": 50})
    assert [e["action"] for e in r.json()["items"]].count("alarm.ack") == 1


@pytest.mark.parametrize(
    ("body", "status", "field", "text"),
    [
        ({"alarms": [ref(TEMP_HIGH), {**ref(TEMP_LOW), "raised_at": "2026-01-05T12:03:00.001Z"}]}, 404,
         "alarms[1]", f"no low alarm of {TEMP!r} raised at 2026-01-05T12:03:00.001Z in the historian"),
        ({"alarms": [{**ref(TEMP_HIGH), "alarm": "low"}]}, 404, "alarms[0]", "no low alarm"),
        ({"alarms": [{**ref(TEMP_HIGH), "tag": f"{DEVICE}/nope"}]}, 404, "alarms[0]", "in the historian"),
        ({"alarms": [{**ref(TEMP_HIGH), "tag": DEVICE}]}, 422, "alarms[0].tag", "has 5 levels"),
        ({"alarms": [{**ref(TEMP_HIGH), "alarm": "hot"}]}, 422, "alarms[0].alarm", "'high', 'low', 'rate' or"),
        ({"alarms": [{**ref(TEMP_HIGH), "raised_at": "2026-01-05T12:00:10"}]}, 422, "alarms[0].raised_at",
         "time zone"),
        ({"alarms": []}, 422, "alarms", "at least 1 item"),
        ({"alarms": [ref(TEMP_HIGH)] * 501}, 422, "alarms", "at most 500 items"),
        ({"alarms": [ref(TEMP_HIGH)], "comment": "x" * 501}, 422, "comment", "at most 500 characters"),
    ],
)
async def test_acknowledge_errors(api: Api, body: dict[str, object], status: int, field: str, text: str) -> None:
    r = await api.client.post("/api/v1/alarms/ack", json=body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and text in r.json()["detail"], r.json()
    # nothing was acknowledged, not even the alarms of the request that exist
    r = await api.client.get("/api/v1/history/alarms", params={"tag": "acme", "acked": "true", **RANGE})
    assert r.json()["alarms"] == []


async def test_a_viewer_may_not_acknowledge(api: Api) -> None:
    viewer = await role_header(api, "viewer")
    r = await api.client.post("/api/v1/alarms/ack", headers=viewer, json={"alarms": [ref(TEMP_HIGH)]})
    assert r.status_code == 403 and "needs operator or above" in r.json()["detail"]
    r = await api.client.get("/api/v1/history/alarms", params={"tag": TEMP, "acked": "true", **RANGE})
    assert r.json()["alarms"] == []
