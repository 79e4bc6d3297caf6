"""A PLC that goes away: its tags are stored BAD with the reason, then GOOD again after it returns,
without restarting the gateway."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from devtools.local import free_port
from gateway.config import load_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from tests.support.daemons import gateway_env, ingestion_env
from tests.support.db import query
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def test_device_outage_gives_bad_quality_then_recovers(tmp_path: Path, broker, db, prefix, daemons, bg_loop) -> None:
    port = free_port()
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(f"""
[plant]
enterprise = "acme"
site = "berlin"
area = "press-shop"
line = "line-2"
[[devices]]
id = "plc-7"
port = {port}
interval_ms = 100
timeout_ms = 300
  [[devices.tags]]
  name = "speed"
  address = 0
  type = "uint16"
  [[devices.tags]]
  name = "temp"
  address = 1
  type = "float32"
""")
    plc = SimulatedPlc(load_plant(plant_file).devices[0], constants={"speed": 1200, "temp": 80.5})
    bg_loop.run(plc.start())
    ing = daemons("ingestion", ingestion_env(broker, db, prefix))
    wait_for(lambda: "mqtt connected" in ing.output(), 20, what="ingestion connected")
    gw = daemons("gateway", gateway_env(broker, plant_file, prefix))

    def count(cond: str) -> int:
        try:
            return query(db, f"SELECT count(*) FROM nexus.metrics WHERE {cond}")[0][0]
        except psycopg.Error:  # ingestion may not have created the schema yet
            return 0

    wait_for(lambda: count("quality = 'good'") >= 6, 20, what=f"good values\n{gw.output()}")
    bg_loop.run(plc.stop())
    outage_start = time.time()
    wait_for(lambda: count("quality = 'bad' AND tag = 'speed'") >= 2, 20, what="bad quality rows")
    bg_loop.run(plc.start())
    restarted = time.time()
    good_before = count("quality = 'good' AND tag = 'speed'")
    wait_for(lambda: count("quality = 'good' AND tag = 'speed'") > good_before, 10, what="recovery")
    recovered_in = time.time() - restarted
    assert gw.stop() == 0 and ing.stop() == 0
    bg_loop.run(plc.stop())

    assert recovered_in < 5, f"recovery took {recovered_in:.1f}s"
    bad = query(db, "SELECT value, value_text, status, time FROM nexus.metrics WHERE quality = 'bad' AND tag = 'speed'")
    assert all(v is None and t is None for v, t, _, _ in bad)
    assert {s >> 16 for _, _, s, _ in bad} <= {0x800A, 0x8005, 0x808A}  # timeout / communication / not connected
    assert all(ts.timestamp() >= outage_start - 0.5 for *_, ts in bad)
    good = query(db, "SELECT value FROM nexus.metrics WHERE quality = 'good' AND tag = 'temp'")
    assert good and all(v == 80.5 for (v,) in good)
    # the gateway process was the same one all along; it logged the loss with its cause once, and the reconnect
    out = gw.output()
    assert "device connected" in out
    assert out.count("device connection lost") == 1 and "closed by the device or the network" in out
