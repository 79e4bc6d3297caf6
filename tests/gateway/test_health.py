"""Per-device health reports of a real gateway (in this test's event loop) against mosquitto and a simulated
Modbus PLC: connected with latencies, disconnected with the last error and the breaker open while the PLC is
stopped, connected again after; rate-limited; cleared when the device is removed; offline at a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.local import Mosquitto, free_port
from gateway.config import PlantConfig, load_plant
from gateway.daemon import Gateway
from gateway.drivers.modbus.simulator import SimulatedPlc
from gateway.fleet import Fleet
from gateway.health import HealthReporter
from gateway.poller import PollPool
from gateway.settings import HealthSettings, Settings
from nexus.common import MqttSettings
from nexus.mqtt import MqttClient
from proto.health import DeviceHealth, decode_health, health_filter, health_topic
from tests.gateway.test_device_faults import VALUES, Fault, FaultyModbus, modbus_device
from tests.support.core import Recorder
from tests.support.gateway import serving
from tests.support.health import retained_now
from tests.support.wait import until

pytestmark = pytest.mark.slow


@dataclass
class Running:
    gw: Gateway
    plant: PlantConfig
    plc: SimulatedPlc
    rec: Recorder
    root: str

    def reports(self, device: str = "press-1") -> list[tuple[float, bytes, bool]]:
        topic = health_topic(self.root, device)
        return [(t, p, r) for t, tp, p, r in self.rec.snapshot() if tp == topic]

    def latest(self, device: str = "press-1") -> DeviceHealth | None:
        got = self.reports(device)
        return decode_health(got[-1][1]) if got and got[-1][1] else None


def write_plant(tmp_path: Path) -> Path:
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(
        '[plant]\nenterprise = "acme"\nsite = "berlin"\narea = "stamping"\nline = "line-1"\n'
        f'[[devices]]\nid = "press-1"\nport = {free_port()}\ninterval_ms = 100\ntimeout_ms = 300\n'
        'breaker_failures = 2\nbreaker_open_ms = 500\n'
        '[[devices.tags]]\nname = "temp"\ntable = "holding"\naddress = 0\ntype = "int16"\n'
    )
    return plant_file


@contextlib.asynccontextmanager
async def running(tmp_path: Path, broker: Any, prefix: str, bg_loop: Any,
                  health: HealthSettings | None = None) -> AsyncIterator[Running]:
    plant_file = write_plant(tmp_path)
    plant = load_plant(plant_file)
    root = f"$t/{prefix}"
    settings = Settings(gateway_id=f"{prefix}-gw", plant=str(plant_file), topic_root=prefix, control_root=root,
                        tag_topics=False, delivery="broker", spool_dir="",
                        mqtt=MqttSettings(port=broker.port, reconnect_min=0.2, reconnect_max=1.0),
                        health=health or HealthSettings(interval_s=0.5, heartbeat_s=1.5, window_s=30))
    plc = SimulatedPlc(plant.devices[0], constants={"temp": 215})
    bg_loop.run(plc.start())
    rec = Recorder(broker.port, [health_filter(root)])
    try:
        async with serving(settings, plant) as gw:
            yield Running(gw, plant, plc, rec, root)
    finally:
        rec.close()
        bg_loop.run(plc.stop())


async def test_device_health_follows_the_plc(tmp_path: Path, broker: Any, prefix: str, bg_loop: Any) -> None:
    async with running(tmp_path, broker, prefix, bg_loop) as r:
        gid = f"{prefix}-gw"

        def healthy() -> DeviceHealth | None:
            h = r.latest()
            ok = h is not None and h.connected and h.latency is not None and h.latency.samples >= 3
            return h if ok else None

        h = await until(healthy, 15, what=lambda: f"a connected report with latencies ({r.latest()})")
        assert h.gateway == gid and h.state == "polling" and h.breaker == "closed"
        assert h.path == "acme/berlin/stamping/line-1/press-1"
        assert h.latency is not None and 0 < h.latency.p50 <= h.latency.p99 < 300
        assert h.polls >= 3 and h.errors == 0 and h.last_error is None and h.last_good_ts is not None
        assert h.heartbeat_ms == 1500 and abs(h.ts - h.last_good_ts) < 2000

        bg_loop.run(r.plc.stop())

        def broken() -> DeviceHealth | None:
            h = r.latest()
            return h if h is not None and not h.connected and h.breaker == "open" else None

        h = await until(broken, 15, what=lambda: f"a disconnected report, breaker open ({r.latest()})")
        assert h.last_error and h.last_error_ts is not None and h.errors >= 2 and h.consecutive_errors >= 2
        assert h.state == "polling"
        good_before = h.last_good_ts
        bg_loop.run(r.plc.start())
        h = await until(lambda: (x := r.latest()) is not None and x.connected and x.breaker == "closed" and x,
                        15, what=lambda: f"connected again ({r.latest()})")
        assert h.last_good_ts is not None and good_before is not None and h.last_good_ts > good_before
        assert h.last_error  # the newest failure is kept, with its time, after recovery

        # at most one report per interval_s, and one at least every heartbeat_s
        await until(lambda: len(r.reports()) >= 12, 20, what="a dozen reports")
        times = [t for t, _, _ in r.reports()]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.5 - 0.1, gaps
        assert max(gaps) <= 1.5 + 0.6, gaps

        # the device leaves the gateway: its retained report is cleared
        await r.gw.fleet.apply([])
        await until(lambda: r.reports()[-1][1] == b"", 5, what="an empty retained report")
        assert health_topic(r.root, "press-1") not in await asyncio.to_thread(retained_now, broker.port, r.root)

        # back, then a clean stop: the report says offline
        await r.gw.fleet.apply(r.plant.devices)
        await until(lambda: (x := r.latest()) is not None and x.connected, 15, what="connected after re-adding")
        assert r.gw.health is not None
    h = r.latest()
    assert h is not None and h.state == "offline" and not h.connected, h
    retained = await asyncio.to_thread(retained_now, broker.port, r.root)
    offline = decode_health(retained[health_topic(r.root, "press-1")])
    assert offline.state == "offline" and offline.gateway == gid


async def test_an_ended_device_task_is_reported_failed_and_its_counts_go_on(broker: Any, prefix: str) -> None:
    """A bug outside the poller's guards ends the device's task: its report says ``failed`` with the reason at
    once; after the fleet's restart it says ``polling`` again, its counts carried over to the new poller."""
    port = free_port()
    dev = modbus_device("crashy", port)
    sim = SimulatedPlc(modbus_device("sim", port), constants=dict(VALUES))
    await sim.start()
    root = f"$t/{prefix}"
    settings = Settings(gateway_id="gw-h", control_root=root, spool_dir="", mqtt=MqttSettings(port=broker.port),
                        health=HealthSettings(interval_s=0.2, heartbeat_s=1.0))
    faults: dict[str, Fault] = {}
    fleet = Fleet(asyncio.Queue(5000), PollPool(4), driver_factory=lambda d: FaultyModbus(d, faults),
                  restart_first_s=0.4, restart_max_s=2.0)
    mqtt = MqttClient(settings.mqtt, client_id=f"{prefix}-health")
    reporter = HealthReporter(settings, mqtt, fleet)
    rec = Recorder(broker.port, [health_filter(root)])
    topic = health_topic(root, "crashy")

    def latest() -> DeviceHealth | None:
        got = [p for _, t, p, _ in rec.snapshot() if t == topic]
        return decode_health(got[-1]) if got else None

    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(mqtt.run_loop(stop), name="test.mqtt_loop")
        tg.create_task(reporter.health_loop(stop), name="test.health_loop")
        try:
            await fleet.apply([dev])
            h = await until(lambda: (x := latest()) is not None and x.polls >= 5 and x, 10, what="five polls")
            faults["connected"] = lambda: RuntimeError("connected exploded")
            h = await until(lambda: (x := latest()) is not None and x.state == "failed" and x, 5,
                            what=lambda: f"a failed report ({latest()})")
            assert h.last_error is not None and h.last_error.startswith(
                "device task ended: RuntimeError: connected exploded") and not h.connected
            polls = h.polls
            faults.clear()
            h = await until(lambda: (x := latest()) is not None and x.state == "polling" and x.connected
                            and x.polls > polls and x, 10, what=lambda: f"polling again ({latest()})")
        finally:
            await fleet.stop_all()
            stop.set()
            rec.close()
            await sim.stop()


async def test_reports_go_out_again_after_a_reconnect(tmp_path: Path, prefix: str, bg_loop: Any) -> None:
    """A broker restarted without persistence has forgotten every retained report: the gateway sends them
    again as soon as it is connected, not at its next heartbeat (a minute here)."""
    broker = Mosquitto(tmp_path / "mosquitto", free_port())
    broker.start()
    try:
        async with running(tmp_path, broker, prefix, bg_loop,
                           HealthSettings(interval_s=0.5, heartbeat_s=60, window_s=30)) as r:
            await until(lambda: (x := r.latest()) is not None and x.connected, 15, what="a connected report")
            topic = health_topic(r.root, "press-1")
            assert topic in await asyncio.to_thread(retained_now, broker.port, r.root)
            broker.stop()
            await until(lambda: not r.gw.mqtt.connected, 10, what="the gateway disconnected")
            broker.start()
            await until(lambda: r.gw.mqtt.connected, 15, what="the gateway connected again")
            retained = await until(lambda: _retained(broker.port, r.root, topic), 5, what="the report again")
            assert decode_health(retained).connected
    finally:
        broker.stop()


async def _retained(port: int, root: str, topic: str) -> bytes | None:
    return (await asyncio.to_thread(retained_now, port, root)).get(topic)
