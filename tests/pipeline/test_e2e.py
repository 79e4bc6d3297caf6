"""End to end: simulated PLCs → gateway (subprocess) → mosquitto → ingestion (subprocess) → PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest

from devtools.local import free_port
from gateway.config import load_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from tests.support.daemons import gateway_env, ingestion_env
from tests.support.db import query
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

# tag name -> (table, type, extra config, exact value the simulator holds)
TAGS = {
    "b_coil": ("coil", "bool", {}, True),
    "b_discrete": ("discrete", "bool", {}, True),
    "b_bit": ("holding", "bool", {"bit": 5}, True),
    "i16": ("holding", "int16", {}, -12345),
    "u16": ("input", "uint16", {}, 54321),
    "i32": ("holding", "int32", {}, -2_000_000_001),
    "u32": ("input", "uint32", {}, 4_000_000_001),
    "i64": ("holding", "int64", {}, -9_000_000_000_123),
    "u64": ("holding", "uint64", {}, 2**63 + 12345),  # beyond 2^53: exact text kept too
    "f32": ("holding", "float32", {"unit": "degC"}, 21.5),
    "f64": ("input", "float64", {"unit": "bar"}, 1013.25123456789),
    "text": ("holding", "string", {"length": 10}, "MOLD-42"),
    "scaled": ("holding", "int16", {"transform": {"scale": 0.1, "offset": -5.0}, "unit": "mm"}, 1234),
}


def plant_toml(ports: dict[str, int], orders: dict[str, tuple[str, str]]) -> str:
    out = ['[plant]\nenterprise = "acme"\nsite = "berlin"\narea = "stamping"\n']
    for dev, port in ports.items():
        bo, wo = orders[dev]
        out.append(f'[[devices]]\nid = "{dev}"\nline = "line-1"\nport = {port}\ninterval_ms = 200\n'
                   f'byte_order = "{bo}"\nword_order = "{wo}"\nmax_gap = 4\n')
        addr = {"holding": 0, "input": 0, "coil": 0, "discrete": 0}
        for name, (table, dtype, extra, _) in TAGS.items():
            out.append(f'[[devices.tags]]\nname = "{name}"\ntable = "{table}"\n'
                       f'address = {addr[table]}\ntype = "{dtype}"\n')
            for k, v in extra.items():
                if k == "transform":
                    out.append("transform = { " + ", ".join(f"{a} = {b}" for a, b in v.items()) + " }\n")
                else:
                    out.append(f"{k} = {orjson.dumps(v).decode()}\n")
            addr[table] += 8 if table in ("holding", "input") else 3
    return "".join(out)


def expected(name: str) -> object:
    _, _, extra, raw = TAGS[name]
    if "transform" in extra:
        return raw * extra["transform"]["scale"] + extra["transform"]["offset"]
    return raw


def test_values_of_every_type_reach_postgres_exactly(tmp_path: Path, broker, db, prefix, daemons, bg_loop) -> None:
    ports = {"press-big": free_port(), "press-little": free_port()}
    orders = {"press-big": ("big", "big"), "press-little": ("little", "little")}
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(plant_toml(ports, orders))
    plant = load_plant(plant_file)
    constants = {name: spec[3] for name, spec in TAGS.items()}
    plcs = [SimulatedPlc(d, constants=constants) for d in plant.devices]
    for plc in plcs:
        bg_loop.run(plc.start())

    # a plain MQTT subscriber browsing the UNS sees retained per-tag topics
    seen: dict[str, bytes] = {}
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: seen.__setitem__(m.topic, m.payload)
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(f"{prefix}/acme/#", qos=1)
    sub.loop_start()

    t_start = int(time.time() * 1000)
    ing = daemons("ingestion", ingestion_env(broker, db, prefix))
    gw = daemons("gateway", gateway_env(broker, plant_file, prefix))
    try:
        n_tags = len(TAGS) * 2
        wait_for(lambda: query(db, "SELECT count(DISTINCT path) FROM nexus.metrics")[0][0] >= n_tags
                 if _has_schema(db) else False, 30, what=f"{n_tags} tags stored\n{gw.output()}\n{ing.output()}")
        assert gw.stop() == 0
        assert ing.stop() == 0
    finally:
        sub.loop_stop()
        for plc in plcs:
            bg_loop.run(plc.stop())
    t_end = int(time.time() * 1000)

    rows = query(db, "SELECT path, value, value_text, quality, status, unit, time FROM nexus.metrics ORDER BY time")
    assert rows, "no rows"
    by_path: dict[str, list[tuple]] = {}
    for r in rows:
        by_path.setdefault(r[0], []).append(r)
    assert set(by_path) == {f"acme/berlin/stamping/line-1/{dev}/{tag}" for dev in ports for tag in TAGS}
    for path, rs in by_path.items():
        tag = path.rsplit("/", 1)[1]
        want = expected(tag)
        _, dtype, extra, _ = TAGS[tag]
        for _, value, value_text, quality, status, unit, ts in rs:
            assert quality == "good" and status == 0, (path, quality, status)
            assert unit == extra.get("unit"), (path, unit)
            assert t_start - 1000 <= ts.timestamp() * 1000 <= t_end, (path, ts)
            if dtype == "string":
                assert value is None and value_text == want, (path, value_text)
            elif dtype == "bool":
                assert value == 1.0 and value_text is None, (path, value)
            elif tag == "u64":
                assert value_text == str(want) and value == float(want), (path, value, value_text)
            else:
                assert value == pytest.approx(want, rel=1e-12, abs=1e-12), (path, value, want)
                assert value_text is None
        # several polls arrived, one row each (no duplicates of one poll)
        times = [r[6] for r in rs]
        assert len(times) == len(set(times)), f"duplicate rows for {path}"

    topic = f"{prefix}/acme/berlin/stamping/line-1/press-little/f32"
    assert topic in seen, sorted(seen)[:5]
    doc = orjson.loads(seen[topic])
    assert doc["schema"] == 1 and doc["value"] == 21.5 and doc["q"] == 0 and doc["unit"] == "degC"


def _has_schema(dsn: str) -> bool:
    return bool(query(
        dsn, "SELECT 1 FROM information_schema.views WHERE table_schema='nexus' AND table_name='metrics'"))
