"""GET /api/v1/history/latest on plain PostgreSQL (day partitions) and on TimescaleDB (day chunks): per tag the
newest point's value, quality, reason, time and age, and ``stale`` when it is older than ``stale_after_s`` or
missing; a fresh tag, a stale one, one whose newest point is BAD with its reason, a string tag, a tag without
points; tag= and prefix=, JSON and CSV, the filters and errors; 1,000 tags answered by one index probe per tag
(the plan reads no raw table sequentially)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from gateway_core import history, history_latest
from gateway_core.settings import HistorySettings
from ingestion.schema import migrate as migrate_historian
from tests.plugins.timescale import historian_db
from tests.support.core import Api, open_api
from tests.support.historian import cover

DEVICE = "acme/berlin/stamping/line-1/press-1"
FRESH, STALE, FAILING, RECIPE, SILENT = (f"{DEVICE}/{t}" for t in ("temp", "door", "pressure", "recipe", "fan"))
BAD_TIMEOUT = 0x800A0000
S = timedelta(seconds=1)

db = historian_db  # every test here on plain PostgreSQL and on TimescaleDB (tests/plugins/timescale.py)


async def add_tags(conn: psycopg.AsyncConnection[Any], paths: list[str]) -> dict[str, int]:
    rows = [(p, *p.split("/")) for p in paths]
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag)"
                              " VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
    got = await (await conn.execute("SELECT path, id FROM nexus.tags WHERE path = ANY(%s)", (paths,))).fetchall()
    return dict(got)  # type: ignore[arg-type]


@pytest.fixture
async def api(db: str) -> AsyncIterator[Api]:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await migrate_historian(conn)
        ids = await add_tags(conn, [FRESH, STALE, FAILING, RECIPE, SILENT])
        await conn.execute("INSERT INTO nexus.reasons (text) VALUES ('timeout')")
        now = datetime.now(UTC)
        await cover(conn, now - 7300 * S, now)  # the points below: up to 7300 s old
        await conn.execute(
            "INSERT INTO nexus.points (time, tag_id, value, value_text, status, reason_id)"
            " SELECT now() - x.ago * interval '1 s', x.id, x.value, x.text, x.status,"
            " (SELECT id FROM nexus.reasons WHERE text = x.reason)"
            " FROM (VALUES (%(fresh)s, 3610, 20.0, NULL, 0, NULL), (%(fresh)s, 10, 21.5, NULL, 0, NULL),"
            " (%(stale)s, 7300, 1.0, NULL, 0, NULL), (%(stale)s, 7200, 0.0, NULL, 0, NULL),"
            " (%(failing)s, 100, 2.5, NULL, 0, NULL), (%(failing)s, 20, NULL, NULL, %(bad)s, 'timeout'),"
            " (%(recipe)s, 30, NULL, 'MOLD-7', 0, NULL))"
            " x(id, ago, value, text, status, reason)",
            {"fresh": ids[FRESH], "stale": ids[STALE], "failing": ids[FAILING], "recipe": ids[RECIPE],
             "bad": BAD_TIMEOUT})
    async with open_api(db, history=HistorySettings(max_range_days=30, max_rows=20)) as a:
        yield a


def by_tag(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["tag"].rsplit("/", 1)[1]: t for t in body["tags"]}


async def test_latest_per_tag_with_age_quality_reason_and_staleness(api: Api) -> None:
    r = await api.client.get("/api/v1/history/latest", params={"prefix": DEVICE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [t["tag"] for t in body["tags"]] == sorted([FRESH, STALE, FAILING, RECIPE, SILENT])  # by path
    assert body["stale_after_s"] == 300 and body["stale_tags"] == 2
    now = datetime.fromisoformat(body["now"])
    got = by_tag(body)
    fresh = got["temp"]
    assert {k: fresh[k] for k in ("value", "value_text", "status", "quality", "reason", "stale", "unit")} == {
        "value": 21.5, "value_text": None, "status": 0, "quality": "good", "reason": None, "stale": False,
        "unit": None}
    assert 10 <= fresh["age_s"] < 40
    assert (now - datetime.fromisoformat(fresh["time"])).total_seconds() == pytest.approx(fresh["age_s"], abs=0.002)
    # still reporting, but BAD: fresh, and why
    failing = got["pressure"]
    assert (failing["value"], failing["status"], failing["quality"], failing["reason"], failing["stale"]) == (
        None, BAD_TIMEOUT, "bad", "timeout", False)
    assert 20 <= failing["age_s"] < 50
    assert (got["door"]["value"], got["door"]["stale"], got["door"]["quality"]) == (0.0, True, "good")
    assert 7200 <= got["door"]["age_s"] < 7230
    assert (got["recipe"]["value_text"], got["recipe"]["stale"]) == ("MOLD-7", False)
    assert got["fan"] == {"tag": SILENT, "unit": None, "time": None, "value": None, "value_text": None,
                          "status": None, "quality": None, "reason": None, "age_s": None, "stale": True}


async def test_tags_in_the_order_given_and_the_filters(api: Api) -> None:
    r = await api.client.get("/api/v1/history/latest", params=[("tag", STALE), ("tag", FRESH), ("tag", STALE),
                                                               ("stale_after_s", "3600")])
    assert [(t["tag"], t["stale"]) for t in r.json()["tags"]] == [(STALE, True), (FRESH, False)]
    # a longer patience: only the tag without points is stale
    r = await api.client.get("/api/v1/history/latest", params={"prefix": "acme", "stale_after_s": "86400",
                                                               "stale": "true"})
    assert [t["tag"] for t in r.json()["tags"]] == [SILENT] and r.json()["stale_tags"] == 1
    r = await api.client.get("/api/v1/history/latest", params={"prefix": "acme/berlin", "stale": "false"})
    assert [t["tag"] for t in r.json()["tags"]] == [FAILING, RECIPE, FRESH]
    r = await api.client.get("/api/v1/history/latest", params={"prefix": DEVICE, "stale_after_s": "5"})
    assert r.json()["stale_tags"] == 5


async def test_latest_csv(api: Api) -> None:
    r = await api.client.get("/api/v1/history/latest", params={"prefix": DEVICE, "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == list(history_latest.COLUMNS)
    assert [(row[0], row[6], row[7], row[9]) for row in rows[1:]] == [
        (STALE, "good", "", "True"), (SILENT, "", "", "True"), (FAILING, "bad", "timeout", "False"),
        (RECIPE, "good", "", "False"), (FRESH, "good", "", "False")]


@pytest.mark.parametrize(
    ("params", "status", "field", "text"),
    [
        ([("prefix", "acme"), ("tag", FRESH)], 422, "prefix", "give tag (one or more) or prefix, not both"),
        ([], 422, "tag", "Field required"),
        ([("tag", f"{DEVICE}/nope")], 404, "tag", f"tag '{DEVICE}/nope' has no history"),
        ([("tag", "acme/x")], 422, "tag", "has 2 levels, expected 6"),
        ([("prefix", "globex")], 404, "prefix", "no tag under 'globex' has history"),
        ([("prefix", "acme/+")], 422, "prefix", "contains '+'"),
        ([("prefix", "acme"), ("stale_after_s", "0")], 422, "stale_after_s", "greater than 0"),
        ([("prefix", "acme"), ("stale_after_s", "1"), ("stale_after_s", "2")], 400, "stale_after_s", "given 2 times"),
        ([("prefix", "acme"), ("stale", "maybe")], 422, "stale", "valid boolean"),
        ([("prefix", "acme"), ("format", "parquet")], 422, "format", "'json' or 'csv'"),
    ],
)
async def test_errors(api: Api, params: list[tuple[str, str]], status: int, field: str, text: str) -> None:
    r = await api.client.get("/api/v1/history/latest", params=params)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and text in r.json()["detail"], r.json()


async def test_tag_limit(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "MAX_LATEST_TAGS", 2)
    r = await api.client.get("/api/v1/history/latest", params={"prefix": DEVICE})
    assert r.status_code == 422 and r.json() == {
        "detail": f"more than 2 tags under '{DEVICE}'; give a longer prefix", "field": "prefix"}
    r = await api.client.get("/api/v1/history/latest", params=[("tag", FRESH), ("tag", STALE), ("tag", RECIPE)])
    assert r.status_code == 422 and r.json()["detail"] == "3 tags in one request; the limit is 2"
    r = await api.client.get("/api/v1/history/latest", params=[("tag", FRESH), ("tag", STALE)])
    assert r.status_code == 200


async def test_no_historian_tables(db: str) -> None:
    async with open_api(db) as a:
        r = await a.client.get("/api/v1/history/latest", params={"prefix": "acme"})
    assert r.status_code == 404 and "no historian tables" in r.json()["detail"]


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


async def test_a_thousand_tags_one_index_probe_each(api: Api, db: str) -> None:
    paths = [f"acme/plant-2/area-{i // 250}/line-{i // 50 % 5}/dev-{i // 10 % 5}/t{i % 10}" for i in range(1000)]
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        ids = await add_tags(conn, paths)
        # three days of points, one every 10 minutes per tag; every 7th tag silent for the last 2 hours
        end = (await (await conn.execute("SELECT date_trunc('minute', now())")).fetchone())[0]  # type: ignore[index]
        await cover(conn, end - 431 * timedelta(minutes=10) - timedelta(hours=2), end + S)  # 4 or 5 days
        await conn.execute(
            "INSERT INTO nexus.points (time, tag_id, value) SELECT %s - g * interval"
            " '10 min' - CASE WHEN t.id %% 7 = 0 THEN interval '2 hours' ELSE interval '0' END, t.id, t.id + g"
            " FROM generate_series(0, 431) g, nexus.tags t WHERE t.id = ANY(%s)", (end, list(ids.values())))
        await conn.execute("ANALYZE nexus.points")
        cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + history_latest.BY_PREFIX,
                                 {"prefix": "acme/plant-2", "under": "acme/plant-2/", "limit": 10_001})
        plan = (await cur.fetchone())[0][0]["Plan"]  # type: ignore[index]
    scans = [(n["Node Type"], n.get("Relation Name", "")) for n in plan_nodes(plan) if "Scan" in n["Node Type"]]
    # the chunks' / partitions' indexes, under TimescaleDB's ordered ChunkAppend (a Custom Scan) or an Append
    on_points = [s for s in scans if s[1].startswith(("points", "_hyper_")) and s[0] != "Custom Scan"]
    assert on_points and all(kind in ("Index Scan", "Index Only Scan") for kind, _ in on_points), scans
    r = await api.client.get("/api/v1/history/latest", params={"prefix": "acme/plant-2", "stale_after_s": "3600"})
    assert r.status_code == 200, r.text
    tags = r.json()["tags"]
    assert len(tags) == 1000 and [t["tag"] for t in tags] == sorted(paths)
    assert all(t["value"] == ids[t["tag"]] and t["stale"] is (ids[t["tag"]] % 7 == 0) for t in tags)
    assert r.json()["stale_tags"] == sum(1 for i in ids.values() if i % 7 == 0)
