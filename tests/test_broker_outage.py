"""The broker goes away: the gateway keeps polling into its disk buffer and sends everything once the
broker is back — also when the gateway itself was stopped and restarted during the outage."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from gateway.config import load_plant
from gateway.simulator import SimulatedPlc
from nexus.local import Mosquitto, free_port
from proto import decode_batch
from tests.conftest import gateway_env, wait_for

pytestmark = pytest.mark.slow


class Subscriber:
    """Collects the read timestamps of tag ``a`` from every batch message."""

    def __init__(self, port: int, topic: str) -> None:
        self.ts: set[int] = set()
        self.got: queue.Queue[bytes] = queue.Queue()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:6]}")
        self.subscribed = threading.Event()
        self.c.on_message = lambda c, u, m: self.got.put(m.payload)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rc, p: self.subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"  # nothing published after this is missed

    def collect(self) -> set[int]:
        while not self.got.empty():
            for p in decode_batch(self.got.get_nowait()).points:
                if p.tag == "a":
                    self.ts.add(p.ts)
        return self.ts

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def covered(ts: set[int], start: float, end: float, interval_ms: int = 100) -> float:
    """Points read in [start, end) (seconds) over the polls due in that time. (Not per 100 ms bucket:
    the poll phase and its 0..5 ms jitter can put two polls in one bucket and none in the next.)"""
    got = sum(1 for t in ts if start * 1000 <= t < end * 1000)
    return got / max(1, int((end - start) * 1000 / interval_ms))


def setup(tmp_path: Path) -> tuple[Path, SimulatedPlc]:
    plant = tmp_path / "plant.toml"
    plant.write_text(f"""
[plant]
enterprise = "e"
site = "s"
area = "a"
line = "l"
[[devices]]
id = "plc-o"
port = {free_port()}
interval_ms = 100
  [[devices.tags]]
  name = "a"
  address = 0
""")
    return plant, SimulatedPlc(load_plant(plant).devices[0], constants={"a": 7})


def gw_env(broker: Mosquitto, plant: Path, prefix: str) -> dict[str, str]:
    return gateway_env(broker, plant, prefix, NEXUS_GATEWAY_TAG_TOPICS="false", NEXUS_GATEWAY_MQTT_RECONNECT_MIN="0.5",
                       NEXUS_GATEWAY_MQTT_RECONNECT_MAX="0.5")


def test_outage_is_buffered_on_disk_and_sent_after(tmp_path: Path, prefix: str, daemons: Any, bg_loop: Any) -> None:
    plant, plc = setup(tmp_path)
    bg_loop.run(plc.start())
    mq = Mosquitto(tmp_path / "mq", free_port())
    mq.start()
    sub = Subscriber(mq.port, f"{prefix}/batch/v1/#")
    try:
        gw = daemons("gateway", gw_env(mq, plant, prefix))
        wait_for(lambda: len(sub.collect()) >= 5, 20, what=f"first values\n{gw.output()}")
        sub.close()
        mq.stop()
        outage = time.time()
        time.sleep(3.0)
        assert list((tmp_path / "spool").rglob("*.seg")), "polls during the outage go to the disk buffer"
        back = time.time()
        mq.start()
        sub = Subscriber(mq.port, f"{prefix}/batch/v1/#")  # subscribes before the gateway's reconnect (0.5 s)
        wait_for(lambda: covered(sub.collect(), outage + 0.3, back - 0.2) >= 0.9, 20,
                 what=f"the outage's polls delivered\n{gw.output()}")
        wait_for(lambda: max(sub.collect()) > back * 1000 + 500, 10, what="live values after the replay")
        assert gw.stop() == 0
        out = gw.output()
        assert "kept in the spool" not in out  # everything was sent
        assert list((tmp_path / "spool").rglob("*.seg")) == []
    finally:
        sub.close()
        mq.stop()
        bg_loop.run(plc.stop())


def test_gateway_stopped_during_an_outage_sends_its_spool_after_restart(tmp_path: Path, prefix: str, daemons: Any,
                                                                        bg_loop: Any) -> None:
    plant, plc = setup(tmp_path)
    bg_loop.run(plc.start())
    mq = Mosquitto(tmp_path / "mq", free_port())
    mq.start()
    sub = Subscriber(mq.port, f"{prefix}/batch/v1/#")
    try:
        gw = daemons("gateway", gw_env(mq, plant, prefix))
        wait_for(lambda: len(sub.collect()) >= 5, 20, what=f"first values\n{gw.output()}")
        sub.close()
        mq.stop()
        outage = time.time()
        time.sleep(2.0)
        stopped = time.time()  # polling ends with the SIGTERM, not when the process is gone
        assert gw.stop() == 0  # SIGTERM with the broker down
        assert "kept in the spool" in gw.output()
        assert list((tmp_path / "spool").rglob("*.seg"))
        mq.start()
        sub = Subscriber(mq.port, f"{prefix}/batch/v1/#")
        gw2 = daemons("gateway", gw_env(mq, plant, prefix))
        wait_for(lambda: covered(sub.collect(), outage + 0.3, stopped - 0.3) >= 0.9, 20,
                 what=f"the first run's spooled polls delivered\n{gw2.output()}")
        assert gw2.stop() == 0
        assert list((tmp_path / "spool").rglob("*.seg")) == []
    finally:
        sub.close()
        mq.stop()
        bg_loop.run(plc.stop())


def test_a_broker_that_freezes_then_dies_with_a_full_window(tmp_path: Path, prefix: str, daemons: Any,
                                                             bg_loop: Any) -> None:
    """The broker stops acknowledging (frozen) until the in-flight window is full, then dies: the
    gateway must spool instead of waiting for window room, and still stop within its deadline."""
    import os
    import signal

    plant, plc = setup(tmp_path)
    bg_loop.run(plc.start())
    mq = Mosquitto(tmp_path / "mq", free_port())
    mq.start()
    sub = Subscriber(mq.port, f"{prefix}/batch/v1/#")
    try:
        gw = daemons("gateway", {**gw_env(mq, plant, prefix), "NEXUS_GATEWAY_MQTT_MAX_INFLIGHT": "5"})
        wait_for(lambda: len(sub.collect()) >= 5, 20, what=f"first values\n{gw.output()}")
        sub.close()
        assert mq.proc is not None
        os.kill(mq.proc.pid, signal.SIGSTOP)  # no more PUBACKs: the window of 5 fills in ~0.5 s
        frozen = time.time()
        time.sleep(1.5)
        os.kill(mq.proc.pid, signal.SIGKILL)
        mq.proc.wait()
        time.sleep(1.5)
        t0 = time.monotonic()
        stopped = time.time()  # polling ends with the SIGTERM, not when the process is gone
        assert gw.stop(timeout=25) == 0
        assert time.monotonic() - t0 < 20  # no hang on a window that will never have room
        assert "kept in the spool" in gw.output()
        mq.start()
        sub = Subscriber(mq.port, f"{prefix}/batch/v1/#")
        gw2 = daemons("gateway", gw_env(mq, plant, prefix))
        # the polls of the frozen and dead time are all delivered by the restarted gateway
        wait_for(lambda: covered(sub.collect(), frozen + 0.3, stopped - 0.5) >= 0.9, 20,
                 what=f"the outage's polls delivered\n{gw.output()}\n{gw2.output()}")
        assert gw2.stop() == 0
    finally:
        sub.close()
        mq.stop()
        bg_loop.run(plc.stop())
