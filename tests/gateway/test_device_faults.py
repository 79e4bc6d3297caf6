"""The gateway's device fault paths: a driver that raises what its contract does not allow (a library
bug), a device task that ends anyway, a lost connection, and the bounded write path.

Devices are real simulators (pymodbus, snap7) on free loopback ports; the faults are injected into a
driver subclass given to the public poller / fleet API, since the subject is the poller's and the
fleet's reaction, not a protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from snap7 import AsyncClient

from devtools.local import free_port
from gateway import commands as commands_mod
from gateway.commands import Commands
from gateway.config import DeviceConfig, TagConfig, parse_plant
from gateway.drivers.modbus import driver as modbus
from gateway.drivers.modbus.simulator import SimulatedPlc
from gateway.drivers.s7 import driver as s7
from gateway.drivers.s7.simulator import S7Simulator
from gateway.fleet import Fleet
from gateway.managed import Managed
from gateway.poller import DevicePoller, PollPool, WriteCommand
from gateway.readings import DeviceBatch
from nexus.mqtt import Message
from proto.commands import decode_response, encode_request, set_topic
from proto.points import Point, Status
from tests.support.wait import until

pytestmark = pytest.mark.timeout(60)

VALUES = {"speed": 1200, "temp": 80.5}
Fault = Callable[[], BaseException]


def speed_tag(dev: DeviceConfig) -> TagConfig:
    tag = dev.tag("speed")
    assert tag is not None
    return tag


def modbus_device(dev_id: str, port: int, **extra: Any) -> DeviceConfig:
    dev = {"id": dev_id, "port": port, "interval_ms": 50, "timeout_ms": 300, "breaker_failures": 3,
           "breaker_open_ms": 100, "tags": [{"name": "speed", "address": 0, "type": "uint16", "writable": True},
                                            {"name": "temp", "address": 1, "type": "float32"}], **extra}
    return parse_plant({"plant": {"enterprise": "acme", "site": "s", "area": "a", "line": "l"},
                        "devices": [dev]}).devices[0]


class FaultyModbus(modbus.Driver):
    """The real Modbus driver, with faults switched on and off per operation by the test."""

    def __init__(self, device: DeviceConfig, faults: dict[str, Fault]) -> None:
        super().__init__(device)
        self.faults = faults

    def _maybe(self, op: str) -> None:
        if (make := self.faults.get(op)) is not None:
            raise make()

    @property
    def connected(self) -> bool:
        self._maybe("connected")  # outside the poller's guards: ends the device's loops
        return super().connected

    async def connect(self) -> None:
        self._maybe("connect")
        await super().connect()

    async def read(self) -> list[Point]:
        self._maybe("read")
        return await super().read()

    async def write(self, tag: Any, value: Any) -> None:
        self._maybe("write")
        await super().write(tag, value)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0




class Points:
    """Everything a device queue received, in order."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue
        self.seen: list[Point] = []

    def take(self) -> list[Point]:
        while not self.queue.empty():
            batch: DeviceBatch = self.queue.get_nowait()
            self.seen.extend(batch.points)
        return self.seen

    def since(self, n: int) -> list[Point]:
        return self.take()[n:]

    async def wait(self, pred: Callable[[Point], bool], timeout: float, what: str, start: int = 0) -> Point:
        found: Point = await until(lambda: next((p for p in self.since(start) if pred(p)), None), timeout, what=what)
        return found


@pytest.fixture
async def plc() -> AsyncIterator[tuple[int, SimulatedPlc]]:
    port = free_port()
    sim = SimulatedPlc(modbus_device("sim", port), constants=dict(VALUES))
    await sim.start()
    yield port, sim
    await sim.stop()


def good(p: Point) -> bool:
    return p.status == Status.GOOD and p.tag == "speed" and p.value == VALUES["speed"]


async def test_unexpected_connect_error_is_bad_with_reason_retried_and_recovers(
        plc: tuple[int, SimulatedPlc], caplog: pytest.LogCaptureFixture) -> None:
    port, _ = plc
    dev = modbus_device("faulty-connect", port)
    faults: dict[str, Fault] = {"connect": lambda: RuntimeError("library bug " + "x" * 100_000)}
    queue: asyncio.Queue[Any] = asyncio.Queue(1000)
    points = Points(queue)
    poller = DevicePoller(dev, queue, driver=FaultyModbus(dev, faults))
    stop = asyncio.Event()
    before = sample("nexus_gateway_driver_errors_total", device=dev.id, op="connect")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        task = asyncio.create_task(poller.run(stop), name=f"gateway[{dev.id}].run")
        try:
            bad = await points.wait(lambda p: p.status == Status.BAD_INTERNAL_ERROR, 5, "BAD_INTERNAL_ERROR")
            assert bad.value is None and bad.reason is not None
            assert bad.reason.startswith("driver error in connect: RuntimeError: library bug xxx")
            assert len(bad.reason) < 300  # the 100,000 character message is quoted bounded
            # retried under the breaker: it opens, and the reason says so
            await until(lambda: poller.breaker.opens >= 2, 5, what="the breaker to open twice")
            assert any("circuit open after" in (p.reason or "") for p in points.take())
            assert sample("nexus_gateway_driver_errors_total", device=dev.id, op="connect") - before >= 4
            assert not task.done()
            faults.clear()
            n = len(points.take())
            await points.wait(good, 6, "GOOD after the fault cleared", start=n)
            assert not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
    tracebacks = [r for r in caplog.records if "unexpected error in the driver's connect" in r.getMessage()]
    assert len(tracebacks) == 1, "the traceback is logged once per cause, not per retry"
    text = tracebacks[0].getMessage()
    assert "in connect" in text and "self._maybe(\"connect\")" in text and len(text) < 5000
    assert len([r for r in caplog.records if "device not connected" in r.getMessage()]) == 1


async def test_s7_library_bug_in_connect_does_not_end_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    dev = parse_plant({"plant": {"enterprise": "acme", "site": "s", "area": "a", "line": "l"}, "devices": [
        {"id": "s7-bug", "protocol": "s7", "host": "127.0.0.1", "port": port, "interval_ms": 50, "timeout_ms": 300,
         "breaker_open_ms": 100, "tags": [{"name": "temp", "address": "DB1.DBD0", "type": "real"}]}]}).devices[0]
    sim = S7Simulator(dev, values={"temp": 21.5}).start()
    broken = {"on": True}

    class BuggyClient(AsyncClient):
        async def connect(self, *args: Any, **kwargs: Any) -> Any:
            if broken["on"]:
                raise AttributeError("'NoneType' object has no attribute 'send'")
            return await super().connect(*args, **kwargs)

    monkeypatch.setattr(s7, "AsyncClient", BuggyClient)
    queue: asyncio.Queue[Any] = asyncio.Queue(1000)
    points = Points(queue)
    poller = DevicePoller(dev, queue)  # the real S7 driver, which re-raises what it does not know
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop), name=f"gateway[{dev.id}].run")
    try:
        bad = await points.wait(lambda p: p.status == Status.BAD_INTERNAL_ERROR, 5, "BAD_INTERNAL_ERROR")
        assert bad.reason == "driver error in connect: AttributeError: 'NoneType' object has no attribute 'send'"
        assert poller.breaker.consecutive >= 1
        broken["on"] = False
        n = len(points.take())
        back = await points.wait(lambda p: p.status == Status.GOOD, 6, "GOOD", start=n)
        assert back.value == 21.5 and not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await asyncio.to_thread(sim.stop)


async def test_unexpected_read_and_write_errors_answer_and_recover(plc: tuple[int, SimulatedPlc]) -> None:
    port, _ = plc
    dev = modbus_device("faulty-rw", port)
    faults: dict[str, Fault] = {}
    queue: asyncio.Queue[Any] = asyncio.Queue(1000)
    points = Points(queue)
    poller = DevicePoller(dev, queue, driver=FaultyModbus(dev, faults))
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop), name=f"gateway[{dev.id}].run")
    try:
        await points.wait(good, 5, "first GOOD")
        n = len(points.take())
        faults["read"] = lambda: KeyError("span")
        bad = await points.wait(lambda p: p.status == Status.BAD_INTERNAL_ERROR, 5, "BAD", start=n)
        assert bad.reason == "driver error in read: KeyError: 'span'"
        faults.clear()
        await points.wait(good, 6, "GOOD again", start=len(points.take()))

        async def write(value: int) -> str | None:
            answers: list[str | None] = []
            assert poller.submit(WriteCommand(speed_tag(dev), value, answers.append))
            await until(lambda: answers, 5, what="the write's answer")
            return answers[0]

        faults["write"] = lambda: TypeError("unsupported operand")
        assert await write(7) == "driver error in write: TypeError: unsupported operand"
        faults.clear()
        await until(lambda: poller.driver.connected, 5, what="reconnected after the write's driver error")
        assert await write(1300) is None
        await points.wait(lambda p: p.tag == "speed" and p.value == 1300, 5, "the written value",
                          start=len(points.take()))
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_lost_connection_is_logged_once_with_its_cause(plc: tuple[int, SimulatedPlc],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    port, sim = plc
    # polls 500 ms apart: the PLC stops right after a poll, between two, so the loss is the connection
    # closing (at 50 ms a poll could be in flight now and then, and the loss would be that request failing)
    dev = modbus_device("lossy", port, interval_ms=500)
    queue: asyncio.Queue[Any] = asyncio.Queue(5000)
    points = Points(queue)
    poller = DevicePoller(dev, queue)
    stop = asyncio.Event()
    before = sample("nexus_gateway_device_connections_lost_total", device=dev.id)
    with caplog.at_level(logging.INFO, logger="gateway.poller"):
        task = asyncio.create_task(poller.run(stop), name=f"gateway[{dev.id}].run")
        try:
            await points.wait(good, 5, "first GOOD")
            await sim.stop()
            n = len(points.take())
            await points.wait(lambda p: p.status != Status.GOOD, 5, "BAD", start=n)
            await until(lambda: poller.breaker.opens >= 2, 5, what="several failed reconnects")
            await sim.start()
            await points.wait(good, 8, "GOOD again", start=len(points.take()))
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("gateway")]
    assert warnings == [f"device connection lost: connection to 127.0.0.1:{port} closed by the device or the network",
                        f"device not connected: connect to 127.0.0.1:{port} failed (retried with backoff)"]
    assert sample("nexus_gateway_device_connections_lost_total", device=dev.id) - before == 1
    assert [r.getMessage() for r in caplog.records].count("device connected") == 2


async def test_an_ended_device_task_shows_in_status_and_metrics_and_restarts(plc: tuple[int, SimulatedPlc],
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    port, _ = plc
    dev, other = modbus_device("crashy", port), modbus_device("steady", port)
    faults: dict[str, dict[str, Fault]] = {dev.id: {}, other.id: {}}
    queue: asyncio.Queue[Any] = asyncio.Queue(5000)
    points = Points(queue)
    fleet = Fleet(queue, PollPool(4), driver_factory=lambda d: FaultyModbus(d, faults[d.id]),
                  restart_first_s=0.4, restart_max_s=2.0)
    managed = Managed(gateway_id="gw-faults", root="$nexus/t", capacity=1, heartbeat_s=10, fleet=fleet)
    ended = sample("nexus_gateway_device_task_failures_total", device=dev.id)
    await fleet.apply([dev, other])
    try:
        await points.wait(lambda p: good(p), 5, "first GOOD")
        assert managed.status().devices == ("crashy", "steady") and managed.status().errors == {}
        first = fleet.get(dev.id)
        with caplog.at_level(logging.ERROR, logger="gateway.fleet"):
            # a bug outside the poller's guards: the driver's `connected` property raises
            faults[dev.id]["connected"] = lambda: RuntimeError("connected exploded")
            await until(lambda: dev.id in fleet.failed, 5, what="the fleet to notice the ended task")
        status = managed.status()
        assert status.devices == ("steady",)  # not listed as polled...
        assert status.errors[dev.id].startswith("device task ended: RuntimeError: connected exploded (restart 1 in ")
        assert managed._status_due.is_set()  # ...and the status goes out at once, not at the next heartbeat
        assert sample("nexus_gateway_device_task_failures_total", device=dev.id) - ended == 1
        assert sample("nexus_gateway_devices_failed") == 1 and sample("nexus_gateway_devices") == 1
        logged = [r for r in caplog.records if "device task ended while the device is assigned" in r.getMessage()]
        assert len(logged) == 1 and "RuntimeError: connected exploded" in logged[0].getMessage()
        # writes meanwhile get an answer saying why, not "busy" and not silence
        answers: list[str | None] = []
        assert first is not None and not first.submit(WriteCommand(speed_tag(dev), 1, answers.append))
        assert first.halted == "device task ended: RuntimeError: connected exploded"
        # the fault stays: restarted with backoff, it ends again, counted each time
        await until(lambda: sample("nexus_gateway_device_task_failures_total", device=dev.id) - ended >= 2, 5,
                    what="a restart that failed again")
        assert "(restart 2 in " in fleet.failed[dev.id]
        faults[dev.id].clear()
        await until(lambda: dev.id not in fleet.failed, 5, what="the restart after the fault cleared")
        assert fleet.get(dev.id) is not first
        n = len(points.take())
        await points.wait(lambda p: good(p) and p in points.since(n), 5, "GOOD from the restarted device", start=n)
        assert managed.status().devices == ("crashy", "steady") and managed.status().errors == {}
        assert sample("nexus_gateway_devices_failed") == 0
        task = fleet._running[dev.id].task
        assert task is not None and not task.done()
        assert fleet.get(other.id) is not None and fleet.get(other.id).polls > 0  # type: ignore[union-attr]
    finally:
        await fleet.stop_all()
    assert fleet.devices == [] and fleet.failed == {}


async def test_a_spurious_cancellation_inside_the_loops_is_reported_not_silent(
        plc: tuple[int, SimulatedPlc]) -> None:
    port, _ = plc
    dev = modbus_device("cancelled-inside", port)
    faults: dict[str, Fault] = {}
    queue: asyncio.Queue[Any] = asyncio.Queue(5000)
    fleet = Fleet(queue, PollPool(4), driver_factory=lambda d: FaultyModbus(d, faults), restart_first_s=0.4)
    await fleet.apply([dev])
    try:
        await until(lambda: (p := fleet.get(dev.id)) is not None and p.polls > 0, 5, what="polling")
        faults["read"] = asyncio.CancelledError  # a library raising CancelledError of its own accord
        await until(lambda: dev.id in fleet.failed, 5, what="the fleet to notice")
        assert "poll_loop ended by a CancelledError raised inside it" in fleet.failed[dev.id]
        faults.clear()
        await until(lambda: dev.id in fleet.devices and (p := fleet.get(dev.id)) is not None and p.polls > 0, 5,
                    what="polling again after the restart")
    finally:
        await fleet.stop_all()


async def test_a_task_cancelled_from_outside_is_reported_by_the_done_callback(plc: tuple[int, SimulatedPlc]) -> None:
    port, _ = plc
    dev = modbus_device("cancelled-outside", port)
    fleet = Fleet(asyncio.Queue(5000), PollPool(4))
    before = sample("nexus_gateway_device_task_failures_total", device=dev.id)
    await fleet.apply([dev])
    try:
        task = fleet._running[dev.id].task
        assert task is not None and task.get_name() == "gateway[cancelled-outside].run"
        task.cancel()  # a stray cancel(): no supervision left to restart it
        await until(lambda: dev.id in fleet.failed, 5, what="the done callback")
        assert fleet.failed[dev.id] == "device task ended: cancelled" and fleet.devices == []
        assert sample("nexus_gateway_device_task_failures_total", device=dev.id) - before == 1
        assert (await fleet.apply([dev]))["started"] == [dev.id]  # the next config change starts it again
        assert fleet.failed == {} and fleet.devices == [dev.id]
        assert (await fleet.apply([]))["stopped"] == [dev.id]
    finally:
        await fleet.stop_all()


class FakeMqtt:
    """Commands only needs publish() for its respond loop."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.release = asyncio.Event()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        await self.release.wait()
        self.sent.append((topic, payload))


def request(root: str, device: str, value: Any, rid: int) -> Message:
    return Message(set_topic(root, device, "speed"), encode_request(value, rid), 1, False,
                   rid, 1)


async def test_command_queues_are_bounded(plc: tuple[int, SimulatedPlc], monkeypatch: pytest.MonkeyPatch) -> None:
    port, _ = plc
    dev = modbus_device("bounded", port, max_pending_writes=2)
    poller = DevicePoller(dev, asyncio.Queue(100))  # not running: its queue only fills
    mqtt = FakeMqtt()
    monkeypatch.setattr(commands_mod, "MAX_PENDING_RESPONSES", 5)
    cmds = Commands("$nexus/t", mqtt, {dev.id: poller}.get)  # type: ignore[arg-type]
    busy = sample("nexus_gateway_writes_total", device=dev.id, result="busy")
    dropped = sample("nexus_gateway_write_requests_dropped_total", device=dev.id)
    for rid in range(1, 8):
        cmds.on_message(request("$nexus/t", dev.id, 100 + rid, rid))
    # two queued for the device, three answered busy at once, the last two beyond the response bound
    assert poller.commands.qsize() == 2
    assert sample("nexus_gateway_writes_total", device=dev.id, result="busy") - busy == 3
    assert sample("nexus_gateway_write_requests_dropped_total", device=dev.id) - dropped == 2
    assert cmds.dropped == 2
    stop, responses_done = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(cmds.respond_loop(responses_done), name="test.respond_loop")
        mqtt.release.set()
        await until(lambda: len(mqtt.sent) == 3, 5, what="the busy answers")
        answers = [decode_response(p) for _, p in mqtt.sent]
        assert [a.request_id for a in answers] == ["3", "4", "5"]
        assert all("is busy: 2 writes already waiting" in (a.error or "") for a in answers)
        # the device runs: the two queued writes are executed and answered; room for new requests again
        tg.create_task(poller.poll_loop(stop), name=f"gateway[{dev.id}].poll_loop")
        await until(lambda: poller.driver.connected, 5, what="connected")
        tg.create_task(poller.command_loop(stop), name=f"gateway[{dev.id}].command_loop")
        await until(lambda: len(mqtt.sent) == 5, 5, what="the queued writes' answers")
        assert [decode_response(p).error for _, p in mqtt.sent[3:]] == [None, None]
        cmds.on_message(request("$nexus/t", dev.id, 1234, 8))
        await until(lambda: len(mqtt.sent) == 6, 5, what="a new request answered")
        assert decode_response(mqtt.sent[5][1]).request_id == "8"
        stop.set()
        responses_done.set()
    # a stopped device answers at once why it is not polled
    cmds.on_message(request("$nexus/t", dev.id, 1, 9))
    assert poller.halted == "device polling stopped"
    assert cmds._out.get_nowait()[1] and cmds.dropped == 2
