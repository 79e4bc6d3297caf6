"""A gateway in core mode against the config wire contract, with a plain MQTT client in the role of
gateway_core: sync at start, devices started / changed / stopped in place, status and last will."""

from __future__ import annotations

import queue
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest

from devtools.local import free_port
from gateway.config import parse_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from proto import decode_batch
from proto.config import (
    DeviceMessage,
    SyncResponse,
    encode_device,
    encode_sync_response,
)
from tests.support.daemons import gateway_env
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def device_doc(dev_id: str, port: int, tags: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": dev_id, "enterprise": "acme", "site": "s1", "area": "a1", "line": "l1", "port": port,
            "interval_ms": 100, "tags": tags}


class Core:
    """The service side of the contract, by hand."""

    def __init__(self, port: int, root: str, prefix: str) -> None:
        self.root = root
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.status: dict[str, dict[str, Any]] = {}
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"core-{uuid.uuid4().hex[:6]}")
        self.c.on_message = self._msg
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"{root}/config/sync/request", 1), (f"{root}/status/gateways/+", 1), (f"{prefix}/batch/v1/#", 1)])
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _msg(self, c: Any, u: Any, m: paho.MQTTMessage) -> None:
        if "/status/gateways/" in m.topic:
            self.status[m.topic.rsplit("/", 1)[1]] = orjson.loads(m.payload)
        self.got.put((m.topic, m.payload))

    def send(self, topic: str, payload: bytes) -> None:
        self.c.publish(f"{self.root}/{topic}", payload, qos=1).wait_for_publish(5)

    def values(self, seconds: float = 0.0) -> dict[str, dict[str, Any]]:
        """Latest value per device/tag in the batches received within the next ``seconds``."""
        out: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + seconds
        while True:
            try:
                topic, payload = self.got.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return out
            if "/batch/v1/" in topic:
                dev = topic.rsplit("/", 1)[1]
                for p in decode_batch(payload).points:
                    out.setdefault(dev, {})[p.tag] = p.value

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_core_mode_sync_add_change_delete_in_place(tmp_path: Path, broker, prefix, daemons, bg_loop) -> None:
    root = f"$nexus/{prefix}"
    gid = f"{prefix}-gw"
    ports = [free_port(), free_port()]
    tags = [{"name": "a", "address": 0}, {"name": "b", "address": 1}]
    docs = [device_doc(f"plc-{i}", ports[i], tags) for i in range(2)]
    plcs = [SimulatedPlc(parse_plant({"devices": [d]}).devices[0], constants={"a": 10 + i, "b": 20 + i})
            for i, d in enumerate(docs)]
    for plc in plcs:
        bg_loop.run(plc.start())
    core = Core(broker.port, root, prefix)
    try:
        gw = daemons("gateway", gateway_env(broker, tmp_path / "unused.toml", prefix, NEXUS_GATEWAY_CONTROL_ROOT=root,
                                            NEXUS_GATEWAY_CONFIG_SOURCE="core", NEXUS_GATEWAY_HEARTBEAT_S="0.5"))
        topic, payload = core.got.get(timeout=20)
        while not topic.endswith("/sync/request"):
            topic, payload = core.got.get(timeout=20)
        assert orjson.loads(payload) == {"schema": 1, "gateway": gid}
        core.send(f"config/sync/response/{gid}", encode_sync_response(SyncResponse(revision=3, devices=[docs[0]])))
        wait_for(lambda: core.values(0.2).get("plc-0") == {"a": 10, "b": 20}, 10, what=f"plc-0 values\n{gw.output()}")
        wait_for(lambda: core.status.get(gid, {}).get("applied_revision") == 3, 5, what="status rev 3")
        assert core.status[gid]["devices"] == ["plc-0"] and core.status[gid]["online"] is True

        # a second device, assigned to this gateway: starts without touching plc-0
        core.send("config/devices/plc-1", encode_device(DeviceMessage(revision=4, device_id="plc-1", gateway=gid,
                                                                      device=docs[1])))
        wait_for(lambda: core.values(0.2).get("plc-1") == {"a": 11, "b": 21}, 10, what="plc-1 values")
        # change a tag's address in place: b now reads register 0
        changed = device_doc("plc-0", ports[0], [{"name": "a", "address": 0}, {"name": "b", "address": 0}])
        core.send("config/devices/plc-0", encode_device(DeviceMessage(revision=5, device_id="plc-0", gateway=gid,
                                                                      device=changed)))
        wait_for(lambda: core.values(0.2).get("plc-0") == {"a": 10, "b": 10}, 10, what="changed address")
        # a stale redelivery of revision 4's view of plc-0 must not undo revision 5
        core.send("config/devices/plc-0", encode_device(DeviceMessage(revision=3, device_id="plc-0", gateway=gid,
                                                                      device=docs[0])))
        # a bad config is refused with a precise error in the status, the device is not polled
        bad = device_doc("plc-9", ports[1], [{"name": "x", "address": 70000}])
        core.send("config/devices/plc-9", encode_device(DeviceMessage(revision=6, device_id="plc-9", gateway=gid,
                                                                      device=bad)))
        wait_for(lambda: "plc-9" in core.status.get(gid, {}).get("errors", {}), 5, what="error in status")
        assert core.status[gid]["errors"]["plc-9"] == \
            "config/devices/plc-9.tags[0]: 'address' 70000 outside 0..65535"
        # tombstone: plc-1 stops; reassigned elsewhere: plc-0 stops
        core.send("config/devices/plc-1", encode_device(DeviceMessage(revision=7, device_id="plc-1", gateway=None,
                                                                      device=None)))
        core.send("config/devices/plc-0", encode_device(DeviceMessage(revision=8, device_id="plc-0", gateway="other",
                                                                      device=changed)))
        wait_for(lambda: core.status.get(gid, {}).get("applied_revision") == 8, 5, what="status rev 8")
        assert core.status[gid]["devices"] == []
        core.values(0.5)  # drain what was in flight
        assert core.values(0.6) == {}  # nothing polled any more
        assert plcs[0].reads > 0
        assert gw.stop() == 0
        wait_for(lambda: core.status.get(gid, {}).get("online") is False, 5, what="offline status at stop")
    finally:
        core.close()
        for plc in plcs:
            bg_loop.run(plc.stop())
