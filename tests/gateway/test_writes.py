"""Write commands end to end: a real gateway process, a real broker, a simulated PLC.

``<root>/cmd/<device>/<tag>/set`` → validated → written through the driver → answered on
``.../response``; the new value then shows up in the published data.
"""

from __future__ import annotations

import queue
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest

from devtools.local import free_port
from gateway.config import load_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from proto import decode_batch
from tests.support.daemons import gateway_env
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def plant(port: int) -> str:
    return f"""
[plant]
enterprise = "acme"
site = "berlin"
area = "a1"
line = "l1"
[[devices]]
id = "plc-w"
port = {port}
interval_ms = 100
  [[devices.tags]]
  name = "setpoint"
  address = 0
  type = "float32"
  writable = true
  transform = {{ min = 0, max = 250 }}
  [[devices.tags]]
  name = "speed"
  address = 2
  type = "uint16"
  [[devices.tags]]
  name = "level"
  address = 3
  type = "int16"
  writable = true
  transform = {{ scale = 0.1 }}
  [[devices.tags]]
  name = "pump"
  table = "coil"
  address = 1
  writable = true
"""


class Client:
    def __init__(self, port: int, subscribe: list[str]) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.c.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in subscribe]
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def request(self, topic: str, body: Any, raw: bytes | None = None) -> dict[str, Any]:
        self.c.publish(topic, raw if raw is not None else orjson.dumps(body), qos=1)
        while True:
            t, payload = self.messages.get(timeout=10)
            if t.endswith("/response"):
                return orjson.loads(payload)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_write_commands_round_trip_and_refusals(tmp_path: Path, broker, prefix, daemons, bg_loop) -> None:
    port = free_port()
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(plant(port))
    plc = SimulatedPlc(load_plant(plant_file).devices[0], constants={"setpoint": 10.0, "speed": 5, "level": 0,
                                                                      "pump": False})
    bg_loop.run(plc.start())
    root = f"$nexus/{prefix}"
    gw = daemons("gateway", gateway_env(broker, plant_file, prefix, NEXUS_GATEWAY_CONTROL_ROOT=root))
    batches = Client(broker.port, [f"{prefix}/batch/v1/#"])
    cmd = Client(broker.port, [f"{root}/cmd/+/+/response"])
    try:
        wait_for(lambda: not batches.messages.empty(), 20, what=f"first batch\n{gw.output()}")
        base = f"{root}/cmd/plc-w"

        ok = cmd.request(f"{base}/setpoint/set", {"value": 123.5, "request_id": "r1"})
        assert (ok["ok"], ok["request_id"], ok["value"]) == (True, "r1", 123.5)
        assert cmd.request(f"{base}/level/set", {"value": -4.2, "request_id": 7})["ok"] is True
        assert cmd.request(f"{base}/pump/set", {"value": True})["ok"] is True
        assert plc.constants["setpoint"] == 123.5
        assert plc.constants["level"] == -42  # raw = engineering / scale
        assert plc.constants["pump"] is True

        def latest() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            while not batches.messages.empty():
                _, payload = batches.messages.get_nowait()
                for p in decode_batch(payload).points:
                    seen[p.tag] = p.value
            return seen

        values: dict[str, Any] = {}
        wait_for(lambda: values.update(latest()) or (values.get("level") == pytest.approx(-4.2)
                                                     and values.get("pump") is True
                                                     and values.get("setpoint") == 123.5),
                 5, what=f"written values published (last seen {values})")

        refusals = {
            "speed": ({"value": 1}, "tag 'speed' is read-only"),
            "nope": ({"value": 1}, "device 'plc-w' has no tag 'nope'"),
            "setpoint": ({"value": 300}, "300 is outside the tag's range 0..250"),
            "pump": ({"value": "on"}, "expected a bool (true/false), got 'on'"),
            "level": ({"val": 1}, "write request has no 'value'"),
        }
        for tag, (body, error) in refusals.items():
            resp = cmd.request(f"{base}/{tag}/set", body)
            assert (resp["ok"], resp["error"]) == (False, error), resp
        resp = cmd.request(f"{base}/level/set", None, raw=b"{not json")
        assert resp["ok"] is False and resp["error"].startswith("write request is not JSON")
        assert plc.constants["setpoint"] == 123.5  # nothing refused reached the device
    finally:
        batches.close()
        cmd.close()
        assert gw.stop() == 0
        bg_loop.run(plc.stop())
    assert "write responses" in gw.output()
