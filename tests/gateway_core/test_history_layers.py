"""Buckets of GET /api/v1/history served from nexus.points_1m / nexus.points_1h, on plain PostgreSQL (rollup
tables behind real-time views) and on TimescaleDB (real-time continuous aggregates): the same request
answered from a layer (``layer=auto``) and from the raw points (``layer=raw``) gives the same buckets, with
counts, minimums, maximums and lasts equal and averages equal up to float rounding: ranges on and off the
layers' grid, the newest (not yet rolled up) hour, BAD points without a value, several tags, before and
after the layers are refreshed, and a late point once its layer is refreshed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from gateway_core.history_layers import choose, edges
from gateway_core.history_query import iso
from gateway_core.settings import HistorySettings
from ingestion.schema import migrate as migrate_historian
from tests.plugins.timescale import historian_db, run_refresh_jobs
from tests.support.core import Api, open_api
from tests.support.historian import cover

DEVICE = "acme/berlin/stamping/line-1/press-1"
FAST = f"{DEVICE}/temp"
SLOW = f"{DEVICE}/level"
NOW = datetime.now(UTC)
T = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)  # an hour boundary
H, M, S = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
BAD = 0x800A0000

db = historian_db  # every test here on plain PostgreSQL and on TimescaleDB (tests/plugins/timescale.py)


@pytest.fixture
async def api(db: str) -> AsyncIterator[Api]:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await migrate_historian(conn)
        for path in (FAST, SLOW):
            e, s, a, li, d, t = path.split("/")
            await conn.execute("INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag)"
                               " VALUES (%s, %s, %s, %s, %s, %s, %s)", (path, e, s, a, li, d, t))
        await cover(conn, T, NOW)  # 30 h back: the points here, and the late one of a test below
        # every 37 s from T until now, values that do not add up exactly in floats; every 23rd BAD without a
        # value, every 31st uncertain
        await conn.execute(
            "INSERT INTO nexus.points (time, tag_id, value, status) SELECT %(t)s + g * interval '37 s', t.id,"
            " CASE WHEN g %% 23 = 0 THEN NULL ELSE 20 + 10 * sin(g / 17.0) + g * 0.001 END,"
            " CASE WHEN g %% 23 = 0 THEN %(bad)s WHEN g %% 31 = 0 THEN 1073741824 ELSE 0 END"
            " FROM generate_series(0, %(n)s) g, nexus.tags t WHERE t.path = %(path)s",
            {"t": T, "n": (NOW - T) // (37 * S) - 1, "path": FAST, "bad": BAD})
        # every 7 min a small integer; a BAD point without a value at an hour's last second and at an edge
        await conn.execute(
            "INSERT INTO nexus.points (time, tag_id, value, status) SELECT %(t)s + g * interval '7 min', t.id,"
            " g %% 5, 0 FROM generate_series(0, 250) g, nexus.tags t WHERE t.path = %(path)s"
            " AND %(t)s + g * interval '7 min' < now()", {"t": T, "path": SLOW})
        await conn.execute(
            "INSERT INTO nexus.points (time, tag_id, value, status) SELECT x, t.id, NULL, %s FROM nexus.tags t,"
            " unnest(%s::timestamptz[]) x WHERE t.path = %s ON CONFLICT DO NOTHING",
            (BAD, [T + 5 * H + 3599 * S, T + 3 * H + 17 * M], SLOW))
    async with open_api(db, history=HistorySettings(max_range_days=30, max_rows=5000)) as a:
        yield a


async def both(api: Api, params: list[tuple[str, str]], layer: str) -> list[dict[str, Any]]:
    """The request from the layers and from the raw points: the layer expected, the same answer; the series."""
    got = {}
    for how in ("auto", "raw"):
        r = await api.client.get("/api/v1/history", params=[*params, ("layer", how)])
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["layer"] == r.headers["x-nexus-layer"] == (layer if how == "auto" else "raw"), params
        got[how] = body.get("series") or [body]
    assert [len(s["buckets"]) for s in got["auto"]] == [len(s["buckets"]) for s in got["raw"]], params
    for layered, raw in zip(got["auto"], got["raw"], strict=True):
        for a, b in zip(layered["buckets"], raw["buckets"], strict=True):
            assert a.keys() == b.keys()
            exact = {k: v for k, v in a.items() if k != "avg"}
            assert exact == {k: b[k] for k in exact}, (params, a, b)
            if "avg" in a:
                assert a["avg"] == (None if b["avg"] is None else pytest.approx(b["avg"], rel=1e-12)), (a, b)
        assert raw["buckets"], params
    return got["auto"]


def ask(bucket: str, start: datetime, end: datetime, *tags: str, **kw: str) -> list[tuple[str, str]]:
    return [*(("tag", t) for t in tags or (FAST,)), ("bucket", bucket), ("from", iso(start)), ("to", iso(end)),
            *kw.items()]


CASES = [
    # (bucket, from, to, layer): on the grid, off it (raw points at both ends), the current hour included
    ("1h", T, T + 24 * H, "1h"),
    ("1h", T + 17 * M + 23 * S, T + 20 * H + 41 * M + 7 * S, "1h"),
    ("2h", T - 3 * H, NOW + H, "1h"),
    ("1d", T - 2 * H, NOW + 2 * H, "1h"),
    ("15m", T + 5 * H + 1 * S, T + 9 * H + 59 * S, "1m"),
    ("1m", T + 29 * H, NOW + M, "1m"),
    ("1h", T + 10 * M, T + 50 * M, "1m"),  # less than an hour: the minutes
    ("90s", T, T + 3 * H, "raw"),  # not a whole number of minutes
    ("1m", T + 10 * S, T + 50 * S, "raw"),  # less than a minute
]


@pytest.mark.parametrize(("bucket", "start", "end", "layer"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
async def test_layer_answers_as_the_raw_points(api: Api, db: str, bucket: str, start: datetime, end: datetime,
                                               layer: str) -> None:
    await both(api, ask(bucket, start, end), layer)  # nothing rolled up yet: the layers compute at query time
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await run_refresh_jobs(conn)
    series = await both(api, ask(bucket, start, end, stats="count,min,max,avg,last"), layer)
    assert sum(b["count"] for b in series[0]["buckets"]) > 0


async def test_several_tags_every_exact_statistic_and_bad_lasts(api: Api, db: str) -> None:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await run_refresh_jobs(conn)
    series = await both(api, ask("1h", T, T + 8 * H, SLOW, FAST, stats="last,avg,count,max,min"), "1h")
    slow = {b["time"]: b for b in series[0]["buckets"]}
    # the hour whose newest point is BAD without a value: last is null (its value), count has it
    assert slow[iso(T + 5 * H)]["last"] is None and slow[iso(T + 5 * H)]["count"] == 10
    assert list(slow[iso(T)]) == ["time", "last", "avg", "count", "max", "min"]
    # a prefix, and a streamed format: the same rows; 12 h from the first 3-hour boundary (UTC) from T on: 4
    # buckets of each tag whatever the hour the test runs at
    t3 = T + (-T.hour % 3) * H
    r = await api.client.get("/api/v1/history", params=[("prefix", DEVICE), ("bucket", "3h"), ("from", iso(t3)),
                                                        ("to", iso(t3 + 12 * H)), ("format", "jsonl")])
    assert r.headers["x-nexus-layer"] == "1h"
    lines = [orjson.loads(x) for x in r.content.splitlines()]
    raw = await api.client.get("/api/v1/history", params=[("prefix", DEVICE), ("bucket", "3h"), ("from", iso(t3)),
                                                          ("to", iso(t3 + 12 * H)), ("format", "jsonl"),
                                                          ("layer", "raw")])
    assert raw.headers["x-nexus-layer"] == "raw"
    expected = [orjson.loads(x) for x in raw.content.splitlines()]
    assert [{**x, "avg": pytest.approx(x["avg"], rel=1e-12)} for x in expected] == lines and len(lines) == 8


async def test_statistics_the_layers_do_not_have_read_raw(api: Api) -> None:
    for stats in ("stddev", "first", "twa", "bad", "uncertain", "count,first"):
        r = await api.client.get("/api/v1/history", params=ask("1h", T, T + 3 * H, stats=stats))
        assert r.status_code == 200 and r.json()["layer"] == "raw", stats
    r = await api.client.get("/api/v1/history", params=[("tag", FAST), ("from", iso(T)), ("to", iso(T + H))])
    assert r.json()["layer"] == "raw" and len(r.json()["points"]) == 98  # raw points: no bucket, no layer
    r = await api.client.get("/api/v1/history", params=ask("1h", T, T + 3 * H, layer="1h"))
    assert r.status_code == 422 and r.json()["field"] == "layer" and "'auto' or 'raw'" in r.json()["detail"]


async def test_a_late_point_is_in_the_layer_after_its_refresh(api: Api, db: str) -> None:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        await run_refresh_jobs(conn)
        await conn.execute("INSERT INTO nexus.points (time, tag_id, value) SELECT %s, id, 1000 FROM nexus.tags"
                           " WHERE path = %s", (T + 2 * H + 30 * M + 500 * timedelta(milliseconds=1), SLOW))
        raw = await api.client.get("/api/v1/history", params=ask("1h", T, T + 4 * H, SLOW, layer="raw"))
        assert raw.json()["buckets"][2]["max"] == 1000.0  # at once in the raw answer
        # the layer's hour was rolled up before: it is read from there (not recomputed), and is as of then
        layered = await api.client.get("/api/v1/history", params=ask("1h", T, T + 4 * H, SLOW))
        assert layered.json()["layer"] == "1h" and layered.json()["buckets"][2]["max"] == 4.0
        await run_refresh_jobs(conn)
    series = await both(api, ask("1h", T, T + 4 * H, SLOW), "1h")
    assert series[0]["buckets"][2]["max"] == 1000.0


def test_choose_and_edges() -> None:
    t0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    both_layers = {"1m", "1h"}
    assert edges(t0 + S, t0 + H - S, M) == (t0 + M, t0 + H - M)
    assert edges(t0, t0 + H, H) == (t0, t0 + H)
    assert choose(2 * H, ("min", "max", "avg", "last", "count"), t0, t0 + 5 * H, both_layers) == "1h"
    assert choose(2 * H, ("min",), t0, t0 + 5 * H, {"1m"}) == "1m"  # no hour layer (yet)
    assert choose(2 * H, ("min",), t0, t0 + 5 * H, set()) == "raw"
    assert choose(None, ("min",), t0, t0 + 5 * H, both_layers) == "raw"
    assert choose(30 * S, ("min",), t0, t0 + 5 * H, both_layers) == "raw"
    assert choose(7 * M, ("min",), t0, t0 + 5 * H, both_layers) == "1m"
    assert choose(H, ("min", "twa"), t0, t0 + 5 * H, both_layers) == "raw"
