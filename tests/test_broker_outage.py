"""The broker goes away: the gateway keeps polling into its disk buffer and sends everything once the
broker is back — also when the gateway itself was stopped and restarted during the outage."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Iterator
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


class Rig:
    """A simulated PLC polled every 100 ms, a broker of the test's own, a subscriber to the batches."""

    def __init__(self, tmp_path: Path, prefix: str, daemons: Any, bg_loop: Any) -> None:
        self.tmp, self.prefix, self.daemons, self.bg_loop = tmp_path, prefix, daemons, bg_loop
        self.plant = tmp_path / "plant.toml"
        self.plant.write_text(f"""
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
        self.plc = SimulatedPlc(load_plant(self.plant).devices[0], constants={"a": 7})
        bg_loop.run(self.plc.start())
        self.mq = Mosquitto(tmp_path / "mq", free_port())
        self.mq.start()
        self.sub = self.subscribe()

    def subscribe(self) -> Subscriber:
        """A new subscriber; it returns after its SUBACK, so nothing published later is missed."""
        return Subscriber(self.mq.port, f"{self.prefix}/batch/v1/#")

    def gateway(self, **env: str) -> Any:
        base = gateway_env(self.mq, self.plant, self.prefix, NEXUS_GATEWAY_TAG_TOPICS="false",
                           NEXUS_GATEWAY_MQTT_RECONNECT_MIN="0.5", NEXUS_GATEWAY_MQTT_RECONNECT_MAX="0.5")
        return self.daemons("gateway", {**base, **env})

    def first_values(self, gw: Any) -> None:
        """Wait for the first values, then stop listening (the broker is about to go)."""
        wait_for(lambda: len(self.sub.collect()) >= 5, 20, what=f"first values\n{gw.output()}")
        self.sub.close()

    def spooled(self) -> list[Path]:
        return list((self.tmp / "spool").rglob("*.seg"))

    def close(self) -> None:
        self.sub.close()
        self.mq.stop()
        self.bg_loop.run(self.plc.stop())


@pytest.fixture
def rig(tmp_path: Path, prefix: str, daemons: Any, bg_loop: Any) -> Iterator[Rig]:
    r = Rig(tmp_path, prefix, daemons, bg_loop)
    yield r
    r.close()


def test_outage_is_buffered_on_disk_and_sent_after(rig: Rig) -> None:
    gw = rig.gateway()
    rig.first_values(gw)
    rig.mq.stop()
    outage = time.time()
    time.sleep(3.0)
    assert rig.spooled(), "polls during the outage go to the disk buffer"
    back = time.time()
    rig.mq.start()
    rig.sub = rig.subscribe()  # subscribed before the gateway's reconnect (0.5 s)
    wait_for(lambda: covered(rig.sub.collect(), outage + 0.3, back - 0.2) >= 0.9, 20,
             what=f"the outage's polls delivered\n{gw.output()}")
    wait_for(lambda: max(rig.sub.collect()) > back * 1000 + 500, 10, what="live values after the replay")
    assert gw.stop() == 0
    assert "kept in the spool" not in gw.output()  # everything was sent
    assert rig.spooled() == []


def test_gateway_stopped_during_an_outage_sends_its_spool_after_restart(rig: Rig) -> None:
    gw = rig.gateway()
    rig.first_values(gw)
    rig.mq.stop()
    outage = time.time()
    time.sleep(2.0)
    stopped = time.time()  # polling ends with the SIGTERM, not when the process is gone
    assert gw.stop() == 0  # SIGTERM with the broker down
    assert "kept in the spool" in gw.output()
    assert rig.spooled()
    rig.mq.start()
    rig.sub = rig.subscribe()
    gw2 = rig.gateway()
    wait_for(lambda: covered(rig.sub.collect(), outage + 0.3, stopped - 0.3) >= 0.9, 20,
             what=f"the first run's spooled polls delivered\n{gw2.output()}")
    assert gw2.stop() == 0
    assert rig.spooled() == []


def test_a_broker_that_freezes_then_dies_with_a_full_window(rig: Rig) -> None:
    """The broker stops acknowledging (frozen) until the in-flight window is full, then dies: the
    gateway must spool instead of waiting for window room, and still stop within its deadline."""
    gw = rig.gateway(NEXUS_GATEWAY_MQTT_MAX_INFLIGHT="5")
    rig.first_values(gw)
    assert rig.mq.proc is not None
    os.kill(rig.mq.proc.pid, signal.SIGSTOP)  # no more PUBACKs: the window of 5 fills in ~0.5 s
    frozen = time.time()
    time.sleep(1.5)
    os.kill(rig.mq.proc.pid, signal.SIGKILL)
    rig.mq.proc.wait()
    time.sleep(1.5)
    t0 = time.monotonic()
    stopped = time.time()  # polling ends with the SIGTERM, not when the process is gone
    assert gw.stop(timeout=25) == 0
    assert time.monotonic() - t0 < 20  # no hang on a window that will never have room
    assert "kept in the spool" in gw.output()
    rig.mq.start()
    rig.sub = rig.subscribe()
    gw2 = rig.gateway()
    # the polls of the frozen and dead time are all delivered by the restarted gateway
    wait_for(lambda: covered(rig.sub.collect(), frozen + 0.3, stopped - 0.5) >= 0.9, 20,
             what=f"the outage's polls delivered\n{gw.output()}\n{gw2.output()}")
    assert gw2.stop() == 0
