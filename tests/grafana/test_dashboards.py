"""The Grafana files in grafana/: provisioning, dashboards valid for the schema version they declare, and every
SQL panel and variable query, expanded as Grafana would (tests/support/grafana.py), run against a populated
historian on each backend (plain PostgreSQL; TimescaleDB where tests/plugins/timescale.py is loaded and the
extension available) and returning rows. Prometheus panels are checked against the metrics the daemons
register (no Prometheus here)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from ingestion.schema import migrate
from tests.support.grafana import Expander, Variable, format_duration, parse_duration, variable_from_rows
from tests.support.historian import cover

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SCHEMA_VERSION = 39  # what these checks know; a dashboard declaring a newer one fails until they are reviewed
PANEL_TYPES = {"timeseries", "table", "stat", "bargauge", "gauge", "barchart", "state-timeline", "text", "row"}
# Grafana's own variables (global and Prometheus') a query may use without declaring them
BUILTIN_VARIABLES = {"__interval", "__interval_ms", "__range", "__range_s", "__range_ms", "__from", "__to",
                     "__rate_interval", "__all", "__dashboard", "__org", "__user", "__timeFilter", "__timeFrom",
                     "__timeTo", "__timeGroup", "__timeGroupAlias", "__time", "__timeEpoch", "__unixEpochFilter",
                     "__unixEpochFrom", "__unixEpochTo"}
_REFERENCE = re.compile(r"\$(\w+)|\$\{(\w+)(?:[.:][^}]*)?\}|\[\[(\w+)(?::\w+)?\]\]")


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


def datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "nexus.yaml").read_text())
    assert doc["apiVersion"] == 1
    return {d["uid"]: d for d in doc["datasources"]}


def references(text: str) -> set[str]:
    return {a or b or c for a, b, c in _REFERENCE.findall(text)}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])  # a collapsed row's panels


def sql_targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for p in panels(board):
        for t in p.get("targets", []):
            if "rawSql" in t:
                yield p, t


# ------------------------------------------------------------------------------------------------ files


def test_provisioning_files() -> None:
    ds = datasources()
    assert ds["nexus-historian"]["type"] == "postgres"
    pg = ds["nexus-historian"]
    assert {pg["url"], pg["user"], pg["jsonData"]["database"]} == {
        "${NEXUS_PG_HOST}:${NEXUS_PG_PORT}", "${NEXUS_PG_USER}", "${NEXUS_PG_DB}"}
    assert ds["nexus-prometheus"]["type"] == "prometheus"
    demo = dict(re.findall(r"^export (\w+)=(.*)$", (GRAFANA / "demo.env").read_text(), re.M))
    assert (demo["NEXUS_PG_HOST"], demo["NEXUS_PG_PORT"], demo["NEXUS_PG_DB"], demo["NEXUS_PG_USER"]) == (
        "127.0.0.1", "54329", "nexus", "nexus")  # devtools/demo.py's cluster and database
    used = {m for d in ds.values() for m in re.findall(r"\$\{(\w+)\}", json.dumps(d))}
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "nexus.yaml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "${NEXUS_GRAFANA_DASHBOARDS}"
    assert used | {"NEXUS_GRAFANA_DASHBOARDS"} <= demo.keys()
    assert len(DASHBOARDS) >= 6


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_valid_for_its_schema_version(path: Path) -> None:
    board = load(path)
    ds = datasources()
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert isinstance(board["uid"], str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"])
    assert board["title"] and isinstance(board["version"], int)
    assert {"from", "to"} <= board["time"].keys()
    assert isinstance(board["templating"]["list"], list) and isinstance(board["annotations"]["list"], list)
    declared: set[str] = set()
    for v in board["templating"]["list"]:
        assert v["type"] in {"query", "custom", "constant", "interval", "textbox"}
        assert re.fullmatch(r"[A-Za-z]\w*", v["name"]) and v["name"] not in declared
        if v["type"] == "query":
            assert v["datasource"]["uid"] in ds and v["query"] == v["definition"]
            # a chain: each variable's query refers only to the variables declared before it
            assert references(v["query"]) - BUILTIN_VARIABLES <= declared, v["name"]
        declared.add(v["name"])
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for p in panels(board):
        assert p["type"] in PANEL_TYPES and p["title"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "hwxy") and g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in ds
        assert ds[p["datasource"]["uid"]]["type"] == p["datasource"]["type"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            query = t.get("rawSql") if p["datasource"]["type"] == "postgres" else t.get("expr")
            assert isinstance(query, str) and query, p["title"]
            if "rawSql" in t:
                assert t["format"] in {"table", "time_series"} and t["rawQuery"] is True
            assert references(query) - BUILTIN_VARIABLES <= declared, (p["title"], query)
        assert references(p["title"]) - BUILTIN_VARIABLES <= declared


def test_prometheus_panels_use_metrics_the_daemons_register() -> None:
    from prometheus_client import REGISTRY

    import gateway.metrics
    import gateway_core.metrics
    import ingestion.metrics
    import nexus.mqtt
    import normalizer.metrics

    del gateway, gateway_core, ingestion, nexus, normalizer  # imported for their registrations
    names = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    used = set()
    for path in DASHBOARDS:
        for p in panels(load(path)):
            for t in p.get("targets", []):
                used |= set(re.findall(r"\bnexus_\w+", t.get("expr", "")))
    assert used and used <= names, used - names


# ------------------------------------------------------------------------------------------------ expander


def test_expander_macros_and_variables() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ex = Expander(start, start + timedelta(hours=6), {
        "device": Variable(("press-1",), ("press-1",)),
        "tag": Variable(("1", "2"), ("a", "b"), multi=True),
        "name": Variable(("o'brien",), ("o'brien",))})
    assert ex.interval_ms == 20_000 and ex.builtin("__interval") == "20s"  # 6 h / 1000 = 21.6 s -> 20 s
    assert ex.expand("$__timeFilter(p.time) AND d = '$device' AND id IN ($tag)") == (
        "p.time BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-01T06:00:00Z' AND d = 'press-1' AND id IN ('1','2')")
    assert ex.expand("SELECT $__timeGroupAlias(time, $__interval), $__interval_ms") == (
        'SELECT floor(extract(epoch from time)/20)*20 AS "time", 20000')
    assert ex.expand("${name:sqlstring} ${tag:raw} ${tag:text} '$name'") == "'o''brien' 1,2 a + b 'o''brien'"
    assert ex.expand("$__timeFrom() $__timeTo() $__unixEpochFrom()") == (
        "'2026-01-01T00:00:00Z' '2026-01-01T06:00:00Z' 1767225600")
    ts = Expander(start, start + timedelta(minutes=5), timescaledb=True)
    assert ts.expand("$__timeGroup(t, '5m', previous)") == "time_bucket('300s',t)"
    assert ts.interval_ms == 1_000  # the datasource's min interval
    assert (parse_duration("1h"), format_duration(90_000), format_duration(3_600_000)) == (3_600_000, "90s", "1h")
    with pytest.raises(KeyError, match=r"\$nope"):
        ex.expand("WHERE x = $nope")
    with pytest.raises(ValueError, match="not supported"):
        ex.expand("$__timeShift(1h)")


# ------------------------------------------------------------------------------------------------ queries


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        both = metafunc.config.pluginmanager.hasplugin("tests.plugins.timescale")
        metafunc.parametrize("backend", ["postgres", "timescaledb"] if both else ["postgres"], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """A fresh database (its DSN) on the backend: ``db`` (plain PostgreSQL) or ``tsdb`` (TimescaleDB)."""
    dsn: str = request.getfixturevalue("db" if request.param == "postgres" else "tsdb")
    return dsn


POPULATE = """
INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag, unit)
SELECT concat_ws('/', 'acme', 'plant-1', 'molding', line, device, tag), 'acme', 'plant-1', 'molding', line, device,
       tag, unit
FROM (VALUES ('line-1', 'press-1', 'temp', 'degC'), ('line-1', 'press-1', 'pressure', 'bar'),
             ('line-1', 'press-1', 'recipe', NULL), ('line-2', 'oven-1', 'temp', 'degC'),
             ('line-2', 'oven-1', 'door', NULL), ('line-2', 'oven-1', 'fan', NULL)) v(line, device, tag, unit);
INSERT INTO nexus.reasons (text) VALUES ('timeout'), ('clamped to the range maximum 100'), ('connection refused');
-- numbers every 10 s over the last 3 h; every 50th BadTimeout (reason timeout), every 77th Uncertain (every
-- other one clamped, the rest without a reason)
INSERT INTO nexus.points (time, tag_id, value, status, reason_id)
SELECT date_trunc('second', now()) - g * interval '10 seconds', t.id,
       CASE WHEN g % 50 = 0 THEN NULL ELSE 20 + 10 * sin(g / 30.0) + t.id END,
       CASE WHEN g % 50 = 0 THEN 2148139008 WHEN g % 77 = 0 THEN 1073741824 ELSE 0 END,
       (SELECT r.id FROM nexus.reasons r
        WHERE r.text = CASE WHEN g % 50 = 0 THEN 'timeout' WHEN g % 154 = 0 THEN 'clamped to the range maximum 100' END)
FROM generate_series(1, 1080) g, nexus.tags t WHERE t.tag IN ('temp', 'pressure');
INSERT INTO nexus.points (time, tag_id, value_text, status)
SELECT date_trunc('second', now()) - g * interval '15 minutes', t.id, 'MOLD-' || g, 0
FROM generate_series(1, 12) g, nexus.tags t WHERE t.tag = 'recipe';
-- the door stopped reporting 2 h ago (a stale tag), its last point BadNotConnected; the fan only ever appears
-- in windows
INSERT INTO nexus.points (time, tag_id, value, status, reason_id)
SELECT date_trunc('second', now()) - interval '2 hours' - g * interval '1 minute', t.id,
       CASE WHEN g > 0 THEN g % 2 END, CASE WHEN g > 0 THEN 0 ELSE 2156527616 END,
       CASE WHEN g = 0 THEN (SELECT r.id FROM nexus.reasons r WHERE r.text = 'connection refused') END
FROM generate_series(0, 59) g, nexus.tags t WHERE t.tag = 'door';
INSERT INTO nexus.windows (tag_id, width_ms, start, count, min, max, avg, twa, first, last, status, complete)
SELECT t.id, 60000, date_bin('1 minute', now(), TIMESTAMPTZ '2000-01-01') - g * interval '1 minute',
       6, 19 + t.id, 21 + t.id + g % 3, 20 + t.id, 20.1 + t.id, 19.5 + t.id, 20.5 + t.id,
       CASE WHEN g % 40 = 0 THEN 2148139008 ELSE 0 END, g <> 180
FROM generate_series(1, 180) g, nexus.tags t WHERE t.tag IN ('temp', 'fan');
INSERT INTO nexus.alarm_events (tag_id, alarm, ts, active, value, limit_value, severity)
SELECT t.id, e.alarm, date_trunc('second', now()) - e.ago, e.active, e.value, e.lim, e.sev
FROM (VALUES ('press-1', 'temp', 'high', interval '50 minutes', true, 91.0, 90.0, 700),
             ('press-1', 'temp', 'high', interval '40 minutes', false, 85.0, 90.0, 700),
             ('oven-1', 'temp', 'high', interval '20 minutes', true, 251.0, 250.0, 800),
             ('press-1', 'pressure', 'low', interval '30 minutes', false, 2.5, 2.0, 500))
     e(device, tag, alarm, ago, active, value, lim, sev)
JOIN nexus.tags t ON t.device = e.device AND t.tag = e.tag;
INSERT INTO nexus.dead_letters (received_at, topic, payload, error, worker, size, sha256)
VALUES (now() - interval '10 minutes', 'nexus/batch/v1/acme/plant-1/molding/line-1/press-1', '{"schema": 2}',
        'ContractError: unknown schema 2', 'w-1', 13, NULL),
       (now() - interval '5 minutes', 'nexus/batch/v1/acme/plant-1/molding/line-2/oven-1', '\\x00ff',
        'ContractError: not JSON', 'w-1', 2, NULL);
INSERT INTO nexus.ingested_messages (digest, topic, points, ingested_at)
SELECT decode(md5(g::text), 'hex'), 'nexus/batch/v1/acme/plant-1/molding/line-1/press-1', 100,
       now() - g * interval '1 minute'
FROM generate_series(1, 170) g;
"""


async def populate(dsn: str) -> bool:
    """Migrate and load the history above (relative to now, so 'current' and 'stale' mean something);
    True on TimescaleDB. Continuous aggregates are refreshed here: these tests check the queries, the
    aggregates' own completeness is tested with them."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        state = await migrate(conn)
        now = datetime.now(UTC)
        await cover(conn, now - timedelta(hours=3, minutes=1), now + timedelta(minutes=1))  # POPULATE's points
        await conn.execute(POPULATE)
        if state.timescale:
            caggs = await (await conn.execute(
                "SELECT view_schema || '.' || view_name FROM timescaledb_information.continuous_aggregates"
                " ORDER BY materialization_hypertable_name")).fetchall()
            for (name,) in caggs:
                await conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (name,))
        return state.timescale


def resolve_variables(conn: psycopg.Connection[Any], board: dict[str, Any], ex: Expander) -> None:
    """Every variable in order, its query expanded with those before it; "All" for multi-value ones."""
    for v in board["templating"]["list"]:
        if v["type"] == "custom":
            ex.variables[v["name"]] = Variable((v["current"]["value"],), (v["current"]["text"],))
            continue
        cur = conn.execute(ex.expand(v["query"]))
        cols = [c.name for c in cur.description or ()]
        var = variable_from_rows(cur.fetchall(), cols, multi=v["multi"] or v["includeAll"])
        assert var.values, f"variable {v['name']} has no options"
        ex.variables[v["name"]] = var


RANGES = {"1h": timedelta(hours=1), "2d": timedelta(days=2), "60d": timedelta(days=60)}


async def test_every_sql_panel_returns_rows(backend: str) -> None:
    await populate(backend)
    ds = datasources()["nexus-historian"]["jsonData"]
    end = datetime.now(UTC)
    with psycopg.connect(backend) as conn:
        layers = set()
        ran = 0
        for path in DASHBOARDS:
            board = load(path)
            for label, span in RANGES.items():
                ex = Expander(end - span, end, timescaledb=ds["timescaledb"],
                              min_interval_ms=parse_duration(ds["timeInterval"]))
                resolve_variables(conn, board, ex)
                if "layer" in ex.variables:
                    layers.add((label, ex.variables["layer"].texts))
                for panel, target in sql_targets(board):
                    sql = ex.expand(target["rawSql"])
                    try:
                        cur = conn.execute(sql)
                    except psycopg.Error as exc:
                        raise AssertionError(f"{path.stem} / {panel['title']} ({label}): {exc}\n{sql}") from exc
                    rows = cur.fetchall()
                    cols = [c.name for c in cur.description or ()]
                    assert rows, f"{path.stem} / {panel['title']} ({label}) returned no rows:\n{sql}"
                    if target["format"] == "time_series":
                        assert "time" in cols, (panel["title"], cols)
                    ran += 1
        conn.rollback()
    has_1h = "1h" if _has_relation(backend, "nexus.points_1h") else "1m"
    assert layers == {("1h", ("raw",)), ("2d", ("1m",)), ("60d", (has_1h,))}
    assert ran >= 30


def _has_relation(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        return bool(row and row[0])


async def test_panels_show_the_values_stored(backend: str) -> None:
    """Not only rows: the overview shows each tag's newest point, quality, reason and age; the quality board the
    stale tags with the reason of their newest point, the points per reason; the alarms board the alarm still
    active; the trend over each layer the stored average."""
    await populate(backend)
    end = datetime.now(UTC)
    with psycopg.connect(backend) as conn:
        def run(stem: str, title: str, span: timedelta) -> list[dict[str, Any]]:
            board = load(GRAFANA / "dashboards" / f"{stem}.json")
            ex = Expander(end - span, end)
            resolve_variables(conn, board, ex)
            (target,) = [t for p, t in sql_targets(board) if p["title"] == title]
            cur = conn.execute(ex.expand(target["rawSql"]))
            cols = [c.name for c in cur.description or ()]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

        current = {(r["device"], r["tag"]): r for r in run("overview", "Current value per tag", RANGES["1h"])}
        assert set(current) == {("press-1", "temp"), ("press-1", "pressure"), ("press-1", "recipe"),
                                ("oven-1", "temp"), ("oven-1", "door"), ("oven-1", "fan")}
        newest = conn.execute("SELECT value FROM nexus.metrics WHERE device = 'press-1' AND tag = 'temp'"
                              " ORDER BY time DESC LIMIT 1").fetchone()
        assert newest is not None and current["press-1", "temp"]["value"] == newest[0]
        assert current["press-1", "temp"]["quality"] == "good" and 10 <= current["press-1", "temp"]["age"] < 60
        assert current["press-1", "recipe"]["text"] == "MOLD-1" and current["oven-1", "fan"]["age"] is None
        assert current["press-1", "temp"]["reason"] is None
        door = current["oven-1", "door"]
        assert (door["quality"], door["status"], door["reason"]) == ("bad", "BadNotConnected", "connection refused")
        assert 7200 <= door["age"] < 7300
        stale = {(r["device"], r["tag"]): r["reason"] for r in run(
            "quality", "Stale tags (no point for longer than $stale_after)", RANGES["1h"])}
        # the recipe's newest point is 15 min old (it changes rarely): stale at the default 5 min as well
        assert stale == {("oven-1", "door"): "connection refused", ("oven-1", "fan"): None, ("press-1", "recipe"): None}
        codes = {r["status"]: r["points"] for r in run("quality", "Status codes seen", RANGES["2d"])}
        # 3 numeric tags; g in 1..1080: 21 multiples of 50, 14 of 77 (7 of them of 154); the door's last point
        assert codes == {"BadTimeout": 3 * 21, "Uncertain": 3 * 14, "BadNotConnected": 1}
        reasons = {(r["reason"], r["quality"]): (r["points"], r["tags"]) for r in run(
            "quality", "Reasons of bad and uncertain points", RANGES["2d"])}
        assert reasons == {("timeout", "bad"): (3 * 21, 3), ("(none given)", "uncertain"): (3 * 7, 3),
                           ("clamped to the range maximum 100", "uncertain"): (3 * 7, 3),
                           ("connection refused", "bad"): (1, 1)}
        per_interval = run("quality", "Bad and uncertain points per reason", RANGES["2d"])
        assert sum(r["value"] for r in per_interval if r["metric"] == "timeout") == 3 * 21
        latest = run("quality", "Latest bad and uncertain points", RANGES["1h"])
        assert {(r["status"], r["reason"]) for r in latest} == {
            ("BadTimeout", "timeout"), ("Uncertain", "clamped to the range maximum 100"), ("Uncertain", None)}
        active = run("alarms", "Active now", RANGES["1h"])
        assert [(r["device"], r["tag"], r["alarm"], r["severity"]) for r in active] == [("oven-1", "temp", "high", 800)]
        summary = {(r["device"], r["tag"]): r for r in run("trends", "Selected tags over the range", RANGES["1h"])}
        raw = conn.execute("SELECT count(*), avg(value) FROM nexus.metrics WHERE device = 'oven-1' AND tag = 'temp'"
                           " AND time >= %s", (end - RANGES["1h"],)).fetchone()
        assert raw is not None and summary["oven-1", "temp"]["layer"] == "raw"
        assert summary["oven-1", "temp"]["samples"] == raw[0]
        assert summary["oven-1", "temp"]["avg"] == pytest.approx(raw[1])
        # from the minute and the hour layer: value_sum / value_count, the raw average (BAD points without a value
        # count in samples, not in it)
        everything = conn.execute("SELECT avg(value) FROM nexus.metrics WHERE device = 'oven-1' AND tag = 'temp'"
                                  ).fetchone()
        assert everything is not None
        for label, layer in (("2d", "1m"), ("60d", "1h" if _has_relation(backend, "nexus.points_1h") else "1m")):
            row = {(r["device"], r["tag"]): r for r in run("trends", "Selected tags over the range", RANGES[label])}
            assert row["oven-1", "temp"]["layer"] == layer
            assert row["oven-1", "temp"]["avg"] == pytest.approx(everything[0], rel=1e-12)
            assert row["oven-1", "temp"]["samples"] == 1080
