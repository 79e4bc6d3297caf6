"""The normalizer end to end: simulated PLC and a foreign MQTT source → gateway (subprocess) → mosquitto →
ingestion (subprocess) → PostgreSQL, with the rules applied on the way.

The Modbus simulator serves constants the test changes while the gateway polls, so every stored value
can be predicted: °F stored as °C with unit degC; a deadband tag stores one row while it is stable
and the step within one poll; a derived tag's rows match its inputs; each window row matches the raw
rows of its interval exactly; an alarm is raised and cleared once; a write in engineering units
reaches the device as the raw value; an UNCERTAIN value from the MQTT source is stored scaled.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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

PLANT = """
[plant]
enterprise = "acme"
site = "berlin"
area = "a"
line = "l"

[[devices]]
id = "n-1"
port = {port}
interval_ms = 100

  [[devices.tags]]
  name = "temp"
  address = 0
  type = "float32"
  unit = "degC"
  transform = {{ from_unit = "degF" }}

  [[devices.tags]]
  name = "slow"
  address = 2
  type = "float32"
  transform = {{ deadband = 5.0 }}

  [[devices.tags]]
  name = "level"
  address = 4
  type = "int16"
  writable = true
  transform = {{ scale = 0.1, min = -100.0, max = 100.0 }}

  [[devices.tags]]
  name = "z1"
  address = 5
  type = "float32"

  [[devices.tags]]
  name = "z2"
  address = 7
  type = "float32"

  [[devices.tags]]
  name = "w"
  address = 9
  type = "uint16"
  windows = ["1s"]

  [[devices.tags]]
  name = "hot"
  address = 10
  type = "float32"
  alarms = {{ high = 50.0, hysteresis = 1.0, severity = 800 }}

  [[devices.derived]]
  name = "zsum"
  expression = "z1 + z2"

[[devices]]
id = "src-1"
protocol = "mqtt"
host = "127.0.0.1"
port = {broker}
interval_ms = 100

  [[devices.tags]]
  name = "u"
  topic = "{prefix}-ext/u"
  value = "$.v"
  quality = "$.q"
  quality_map = {{ unc = "uncertain" }}
  transform = {{ scale = 2.0 }}
"""


def rows(db: str, tag: str) -> list[tuple[Any, ...]]:
    return query(db, "SELECT value, status, unit, time FROM nexus.metrics WHERE path = %s ORDER BY time",
                 (f"acme/berlin/a/l/n-1/{tag}",))


def test_rules_end_to_end(tmp_path: Path, broker, db, prefix, daemons, bg_loop) -> None:
    port = free_port()
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(PLANT.format(port=port, broker=broker.port, prefix=prefix))
    device = load_plant(plant_file).devices[0]
    plc = SimulatedPlc(device, constants={"temp": 212.0, "slow": 10.0, "level": 0, "z1": 1.5, "z2": 2.25, "w": 0,
                                          "hot": 20.0})
    bg_loop.run(plc.start())
    root = f"$nexus/{prefix}"
    ing = daemons("ingestion", ingestion_env(broker, db, prefix))
    gw = daemons("gateway", gateway_env(broker, plant_file, prefix, NEXUS_GATEWAY_CONTROL_ROOT=root))
    answers: list[bytes] = []
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: answers.append(m.payload)
    client.connect("127.0.0.1", broker.port)
    client.subscribe(f"{root}/cmd/+/+/response", qos=1)
    client.loop_start()
    try:
        wait_for(lambda: _ready(db) and len(rows(db, "temp")) >= 3, 30, what=f"rows\n{gw.output()}\n{ing.output()}")
        # the counter moves every 100 ms for the windows; the alarm's value goes up and back
        for i in range(1, 31):
            plc.constants["w"] = i
            if i == 5:
                plc.constants["hot"] = 60.0
            if i == 15:
                plc.constants["hot"] = 20.0
            time.sleep(0.1)
        stable_rows = len(rows(db, "slow"))
        plc.constants["slow"] = 50.0  # a step beyond the deadband
        client.publish(f"{prefix}-ext/u", orjson.dumps({"v": 10.5, "q": "unc"}), qos=1)
        client.publish(f"{root}/cmd/n-1/level/set", orjson.dumps({"value": 12.3, "request_id": "w1"}), qos=1)
        wait_for(lambda: answers, 10, what="the write's answer")
        assert orjson.loads(answers[0])["ok"] is True, answers
        wait_for(lambda: plc.constants["level"] == 123, 5, what=f"raw 123 on the device, {plc.constants}")
        wait_for(lambda: any(r[0] == pytest.approx(50.0) for r in rows(db, "slow")), 10, what="the step stored")
        wait_for(lambda: query(db, "SELECT count(*) FROM nexus.metrics WHERE path = 'acme/berlin/a/l/src-1/u'")[0][0],
                 10, what="the MQTT source's value")
        time.sleep(1.2)  # one more whole window closes (a window closes when the next reading is after it)
        assert gw.stop() == 0
        assert ing.stop() == 0
    finally:
        client.loop_stop()
        bg_loop.run(plc.stop())

    temp = rows(db, "temp")
    assert all(v == pytest.approx(100.0, abs=1e-6) and unit == "degC" and s == 0 for v, s, unit, _ in temp)

    slow = rows(db, "slow")
    assert [r[0] for r in slow[:stable_rows]] == [10.0] and stable_rows == 1  # stable: one row, however many polls
    step_at = next(i for i, r in enumerate(slow) if r[0] == pytest.approx(50.0))
    assert step_at == 1 and len(slow) == 2  # the step is the next row; the new value is stable again

    zsum = {r[3]: r[0] for r in rows(db, "zsum")}
    z1 = {r[3]: r[0] for r in rows(db, "z1")}
    assert zsum and set(zsum) <= set(z1) and all(v == pytest.approx(3.75) for v in zsum.values())

    u = query(db, "SELECT value, status, time FROM nexus.metrics WHERE path = 'acme/berlin/a/l/src-1/u'")
    assert (21.0, 0x40000000) in [(r[0], r[1]) for r in u], u  # UNCERTAIN, and scaled like a GOOD value

    # every complete window equals the raw rows of its interval, exactly
    windows = query(db, "SELECT w.start, w.count, w.min, w.max, w.avg, w.first, w.last FROM nexus.windows w "
                        "JOIN nexus.tags t ON t.id = w.tag_id WHERE t.tag = 'w' AND w.complete ORDER BY w.start")
    assert len(windows) >= 2, windows
    for start, count, lo, hi, avg, first, last in windows:
        raw = [r[0] for r in query(db, "SELECT value FROM nexus.metrics WHERE path = 'acme/berlin/a/l/n-1/w' "
                                       "AND time >= %s AND time < %s + interval '1 second' ORDER BY time",
                                   (start, start))]
        assert (count, lo, hi, first, last) == (len(raw), min(raw), max(raw), raw[0], raw[-1]), (start, raw)
        assert avg == pytest.approx(sum(raw) / len(raw))

    alarms = query(db, "SELECT a.alarm, a.raised_at IS NOT NULL, a.cleared_at IS NOT NULL, a.raised_value, "
                       "a.raised_limit, a.severity, a.cleared_value FROM nexus.alarms a "
                       "JOIN nexus.tags t ON t.id = a.tag_id WHERE t.tag = 'hot'")
    assert alarms == [("high", True, True, 60.0, 50.0, 800, 20.0)]


def _ready(db: str) -> bool:
    return bool(query(db, "SELECT 1 FROM information_schema.views WHERE table_schema='nexus' AND table_name='metrics'"))
