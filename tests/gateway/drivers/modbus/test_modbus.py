"""Modbus driver against pymodbus's own server: TCP, RTU over TCP, RTU on a serial line (a
pseudo-terminal null modem), exact values, writes, refused writes; and the poller's resilience
(circuit breaker, bounded poll pool, jitter, write queue) with real devices."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import tty
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.local import free_port
from gateway.breaker import CLOSED, OPEN
from gateway.commands import to_raw
from gateway.config import DeviceConfig, parse_plant
from gateway.drivers import make_driver
from gateway.drivers.modbus.simulator import SimulatedPlc
from gateway.errors import PermanentError, TemporaryError, WriteRefused
from gateway.poller import DevicePoller, PollPool, WriteCommand
from gateway.readings import DeviceBatch
from normalizer import DeviceRules
from proto.points import Status
from tests.support.wait import until

TAGS: list[dict[str, Any]] = [
    {"name": "speed", "address": 0, "type": "uint16", "writable": True},
    {"name": "temp", "address": 1, "type": "float32", "writable": True},
    {"name": "count", "address": 3, "type": "int32", "writable": True},
    {"name": "total", "address": 5, "type": "uint64", "writable": True},
    {"name": "energy", "address": 9, "type": "float64", "writable": True},
    {"name": "delta", "address": 13, "type": "int16", "writable": True},
    {"name": "recipe", "address": 14, "type": "string", "length": 6, "writable": True},
    {"name": "flag3", "address": 17, "type": "bool", "bit": 3, "writable": True},
    {"name": "flag4", "address": 17, "type": "bool", "bit": 4, "writable": True},
    {"name": "level", "address": 18, "type": "int16", "writable": True,
     "transform": {"scale": 0.1, "offset": 0, "min": -100, "max": 100}},
    {"name": "pressure", "table": "input", "address": 0, "type": "float32"},
    {"name": "pump", "table": "coil", "address": 2, "writable": True},
    {"name": "door", "table": "discrete", "address": 5},
]
VALUES = {"speed": 1500, "temp": 21.5, "count": -70000, "total": 2**60 + 7, "energy": 1234.5678901,
          "delta": -12, "recipe": "PVC-3", "flag3": True, "flag4": False, "level": 425, "pressure": 1.25,
          "pump": True, "door": True}


def device(protocol: str = "modbus_tcp", **conn: Any) -> DeviceConfig:
    dev = {"id": "plc-1", "protocol": protocol, "interval_ms": 100, "timeout_ms": 300, "tags": TAGS,
           "word_order": "little", **conn}
    plant = {"plant": {"enterprise": "acme", "site": "s", "area": "a", "line": "l"}, "devices": [dev]}
    return parse_plant(plant).devices[0]


@pytest.fixture
async def tcp_plc() -> Any:
    dev = device(port=free_port())
    plc = SimulatedPlc(dev, constants=dict(VALUES))
    await plc.start()
    yield dev, plc
    await plc.stop()


class NullModem:
    """Two pseudo-terminals wired back to back (what ``socat pty pty`` does), in a thread."""

    def __init__(self) -> None:
        self._fds = []
        self.paths = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            self._fds.append((master, slave))
            self.paths.append(os.ttyname(slave))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        import select

        a, b = self._fds[0][0], self._fds[1][0]
        while not self._stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                os.write(b if fd == a else a, data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for m, s in self._fds:
            os.close(m)
            os.close(s)


@pytest.fixture
def null_modem() -> Iterator[NullModem]:
    nm = NullModem()
    yield nm
    nm.close()


async def read_all(dev: DeviceConfig) -> dict[str, Any]:
    drv = make_driver(dev)
    await drv.connect()
    try:
        points = await drv.read()
    finally:
        await drv.close()
    assert all(p.status == Status.GOOD for p in points), points
    return {p.tag: p.value for p in points}


async def test_tcp_every_type_exact(tcp_plc: Any) -> None:
    dev, _ = tcp_plc
    assert await read_all(dev) == VALUES  # raw values: the poller applies transforms


async def test_rtu_over_tcp_every_type_exact() -> None:
    dev = device("modbus_rtu_tcp", port=free_port(), unit_id=7)
    plc = SimulatedPlc(dev, constants=dict(VALUES))
    await plc.start()
    try:
        assert dev.conn.transport == "rtu_tcp"
        assert await read_all(dev) == VALUES
    finally:
        await plc.stop()


async def test_rtu_serial_line_every_type_exact(null_modem: NullModem) -> None:
    server_end, client_end = null_modem.paths
    dev = device("modbus_rtu", serial_port=client_end, baudrate=115200, unit_id=3)
    plc = SimulatedPlc(dev, constants=dict(VALUES), serial_port=server_end)
    await plc.start()
    try:
        assert await read_all(dev) == VALUES
        drv = make_driver(dev)
        await drv.connect()
        await drv.write(dev.tag("speed"), 42)
        assert (await drv.read())[0].value == 42
        await drv.close()
    finally:
        await plc.stop()


async def test_writes_round_trip_every_type(tcp_plc: Any) -> None:
    dev, _ = tcp_plc
    drv = make_driver(dev)
    await drv.connect()
    new = {"speed": 7, "temp": -3.25, "count": 123456, "total": 2**64 - 1, "energy": -0.5, "delta": 300,
           "recipe": "ABS", "flag3": False, "pump": False}
    for name, value in new.items():
        await drv.write(dev.tag(name), value)
    rules = DeviceRules(dev.tags)
    await drv.write(dev.tag("level"), to_raw(dev.tag("level"), 12.3, rules))  # engineering 12.3 -> raw 123
    got = {p.tag: p.value for p in await drv.read()}
    await drv.close()
    assert got == {**VALUES, **new, "level": 123}
    assert got["flag4"] is False  # the neighbouring bit of flag3's register is untouched


async def test_bit_write_keeps_neighbour_bits(tcp_plc: Any) -> None:
    dev, _ = tcp_plc
    drv = make_driver(dev)
    await drv.connect()
    await drv.write(dev.tag("flag4"), True)
    got = {p.tag: p.value for p in await drv.read()}
    await drv.close()
    assert (got["flag3"], got["flag4"]) == (True, True)


async def test_refused_writes_are_precise(tcp_plc: Any) -> None:
    dev, _ = tcp_plc
    far = parse_plant({"plant": {"enterprise": "e", "site": "s", "area": "a", "line": "l"}, "devices": [
        {"id": "plc-1", "port": dev.conn.port, "tags": [{"name": "far", "address": 60000, "writable": True}]}]})
    fdev = far.devices[0]
    drv = make_driver(fdev)
    await drv.connect()
    with pytest.raises(PermanentError, match="write refused by the device: modbus exception 2: illegal data address"):
        await drv.write(fdev.tag("far"), 1)
    await drv.close()
    rules = DeviceRules(dev.tags)
    with pytest.raises(WriteRefused, match="tag 'pressure' is read-only"):
        to_raw(dev.tag("pressure"), 1.0, rules)
    with pytest.raises(WriteRefused, match=r"70000 is outside the uint16 range 0\.\.65535"):
        to_raw(dev.tag("speed"), 70000, rules)
    with pytest.raises(WriteRefused, match="expected a number for a uint16 tag, got 'fast'"):
        to_raw(dev.tag("speed"), "fast", rules)
    with pytest.raises(WriteRefused, match=r"a int32 tag takes whole numbers, got 1\.5"):
        to_raw(dev.tag("count"), 1.5, rules)
    with pytest.raises(WriteRefused, match="expected a bool"):
        to_raw(dev.tag("pump"), "on", rules)
    with pytest.raises(WriteRefused, match=r"150 is outside the tag's range -100\.\.100"):
        to_raw(dev.tag("level"), 150, rules)
    with pytest.raises(WriteRefused, match="longer than the tag's 6"):
        to_raw(dev.tag("recipe"), "TOO-LONG", rules)


async def drain(queue: asyncio.Queue[DeviceBatch]) -> list[Any]:
    out = []
    while not queue.empty():
        out.extend(queue.get_nowait().points)
    return out


async def test_poller_normalizes_and_writes_through_its_queue(tcp_plc: Any) -> None:
    dev, _ = tcp_plc
    queue: asyncio.Queue[DeviceBatch] = asyncio.Queue(100)
    poller = DevicePoller(dev, queue)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    try:
        seen: list[Any] = []

        async def level_read() -> bool:
            seen.extend(await drain(queue))
            return any(p.tag == "level" for p in seen)

        await until(level_read, 5, what="a poll of level")
        points = {p.tag: p.value for p in seen}
        assert points["level"] == pytest.approx(42.5)  # raw 425 at scale 0.1
        answers: list[str | None] = []
        done = asyncio.Event()

        def reply(err: str | None) -> None:
            answers.append(err)
            done.set()

        assert poller.submit(WriteCommand(dev.tag("level"), to_raw(dev.tag("level"), -7.5, poller.rules), reply))
        await asyncio.wait_for(done.wait(), 3)
        assert answers == [None]
        after: list[Any] = []

        async def written_read() -> bool:
            after.extend(p for p in await drain(queue) if p.tag == "level")
            return bool(after) and after[-1].value == pytest.approx(-7.5)

        await until(written_read, 5, what="level read back as -7.5")
    finally:
        stop.set()
        await task


async def test_write_queue_is_bounded_and_answered_at_stop(tcp_plc: Any) -> None:
    dev, _ = tcp_plc
    small = DeviceConfig(**{**dev.__dict__, "max_pending_writes": 2})  # type: ignore[arg-type]
    small.__dict__.pop("tag_map", None)
    poller = DevicePoller(small, asyncio.Queue(10))
    answers: list[str | None] = []
    cmd = WriteCommand(small.tag("speed"), 1, answers.append)
    assert poller.submit(cmd) and poller.submit(cmd)
    assert not poller.submit(cmd)  # full: the caller answers busy
    stop = asyncio.Event()
    stop.set()
    await poller.command_loop(stop)  # stopping answers what is queued, nothing is left unanswered
    assert answers == ["device polling stopped", "device polling stopped"]


async def test_circuit_breaker_opens_probes_and_closes() -> None:
    port = free_port()
    dev = device(port=port, breaker_failures=2, breaker_open_ms=300, timeout_ms=200)
    queue: asyncio.Queue[DeviceBatch] = asyncio.Queue(1000)
    poller = DevicePoller(dev, queue)
    stop = asyncio.Event()
    task = asyncio.create_task(poller.poll_loop(stop))
    try:
        await until(lambda: poller.breaker.state == OPEN, 5, 0.02, what="the breaker open")
        assert poller.breaker.state == OPEN
        bad = await drain(queue)
        assert bad and all(p.value is None and p.status == Status.BAD_NOT_CONNECTED for p in bad)
        assert any("circuit open after 2 consecutive failures" in (p.reason or "") for p in bad)
        attempts = poller.breaker.consecutive
        await asyncio.sleep(0.2)  # open: no attempts while it waits
        assert poller.breaker.consecutive == attempts
        plc = SimulatedPlc(dev, constants=dict(VALUES))
        await plc.start()
        t0 = time.monotonic()
        try:
            await until(lambda: poller.breaker.state == CLOSED, 5, 0.02, what="the breaker closed")
            assert poller.breaker.state == CLOSED and poller.breaker.opens >= 1
            await asyncio.sleep(0.3)
            good = [p for p in await drain(queue) if p.status == Status.GOOD]
            assert {p.tag for p in good} == set(VALUES)
            assert time.monotonic() - t0 < 5
        finally:
            stop.set()
            await task
            await plc.stop()
    finally:
        stop.set()
        await task


class SlowDriver:
    """A stand-in device for scheduling tests only (the pool and jitter, not a protocol)."""

    def __init__(self, dev: DeviceConfig, delay: float, calls: list[tuple[str, float]]) -> None:
        self.device, self.delay, self.calls, self.connected = dev, delay, calls, False

    async def connect(self) -> None:
        self.connected = True

    async def read(self) -> list[Any]:
        self.calls.append((self.device.id, time.monotonic()))
        await asyncio.sleep(self.delay)
        return []

    async def close(self) -> None:
        self.connected = False

    def bad_points(self, status: int, reason: str) -> list[Any]:
        return []


def fleet(n: int, interval_ms: int, jitter: float) -> list[DeviceConfig]:
    devs = [{"id": f"d{i}", "port": 1, "interval_ms": interval_ms, "jitter_pct": jitter, "tags": []} for i in range(n)]
    return list(parse_plant({"plant": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
                             "devices": devs}).devices)


async def test_pool_skips_polls_that_cannot_start_on_time() -> None:
    calls: list[tuple[str, float]] = []
    pool = PollPool(1)
    stop = asyncio.Event()
    pollers = [DevicePoller(d, asyncio.Queue(10), pool=pool, driver=SlowDriver(d, 0.15, calls))  # type: ignore[arg-type]
               for d in fleet(3, 100, 0)]
    tasks = [asyncio.create_task(p.poll_loop(stop)) for p in pollers]
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    # one slot, 150 ms per poll: at most ~7 polls fit in 1 s; the rest were skipped and counted, not queued
    assert len(calls) <= 8
    assert sum(p.skipped for p in pollers) >= 10


async def test_jitter_spreads_polls_and_does_not_slow_the_rate() -> None:
    calls: list[tuple[str, float]] = []
    stop = asyncio.Event()
    t0 = time.monotonic()
    pollers = [DevicePoller(d, asyncio.Queue(10), pool=PollPool(100), driver=SlowDriver(d, 0, calls))  # type: ignore[arg-type]
               for d in fleet(40, 200, 10)]
    tasks = [asyncio.create_task(p.poll_loop(stop)) for p in pollers]
    await asyncio.sleep(1.05)
    stop.set()
    await asyncio.gather(*tasks)
    by_device: dict[str, list[float]] = {}
    for dev, t in calls:
        by_device.setdefault(dev, []).append(t - t0)
    firsts = sorted(ts[0] for ts in by_device.values())
    assert firsts[-1] < 0.05  # started alone (no spread): the first poll is at once
    seconds = sorted(ts[1] for ts in by_device.values())
    # later polls are shifted by 0..10% of 200 ms: spread, not in step; never early. The spread, not the absolute
    # time, is asserted: on a loaded CI machine the event loop may stall ~100 ms and shift the whole round
    # (it did once: 0.36..0.42 s), which says nothing about the jitter
    assert seconds[0] >= 0.2 and 0.005 < seconds[-1] - seconds[0] <= 0.1 + 0.02
    # the jitter does not accumulate: 5 or 6 polls in 1.05 s at 200 ms, for every device
    assert all(len(ts) in (5, 6) for ts in by_device.values()), {d: len(ts) for d, ts in by_device.items()}


async def test_devices_started_together_spread_their_first_polls() -> None:
    calls: list[tuple[str, float]] = []
    stop = asyncio.Event()
    t0 = time.monotonic()
    pollers = [DevicePoller(d, asyncio.Queue(10), pool=PollPool(100), driver=SlowDriver(d, 0, calls),  # type: ignore[arg-type]
                            spread_s=0.3) for d in fleet(30, 1000, 0)]
    tasks = [asyncio.create_task(p.poll_loop(stop)) for p in pollers]
    await asyncio.sleep(0.4)
    stop.set()
    await asyncio.gather(*tasks)
    firsts = sorted(t - t0 for _, t in calls)
    assert len(firsts) == 30 and firsts[-1] <= 0.32 and firsts[-1] - firsts[0] > 0.1


async def test_unreachable_device_raises_temporary_error() -> None:
    drv = make_driver(device(port=free_port(), timeout_ms=200))
    with pytest.raises(TemporaryError, match=r"connect to 127\.0\.0\.1:"):
        await drv.connect()
    assert not drv.connected
    await drv.close()


async def test_poll_groups_poll_their_tags_at_their_own_rate(tcp_plc: Any) -> None:
    dev, _ = tcp_plc
    tags = [dict(t) for t in TAGS]
    for t in tags:
        if t["name"] in ("speed", "temp"):
            t["poll_group"] = "fast"
    doc = {"id": "plc-1", "port": dev.conn.port, "interval_ms": 1000, "word_order": "little", "tags": tags,
           "poll_groups": {"fast": 100}}
    gdev = parse_plant({"plant": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
                        "devices": [doc]}).devices[0]
    assert gdev.poll_groups == (("fast", 100),) and gdev.tag("speed").poll_group == "fast"
    queue: asyncio.Queue[DeviceBatch] = asyncio.Queue(1000)
    poller = DevicePoller(gdev, queue)
    assert [(i, sorted(n) if n else n) for i, n in poller.groups()] == [
        (1.0, sorted(set(VALUES) - {"speed", "temp"})), (0.1, ["speed", "temp"])]
    stop = asyncio.Event()
    task = asyncio.create_task(poller.poll_loop(stop))
    await asyncio.sleep(0.75)
    stop.set()
    await task
    seen: dict[str, int] = {}
    for p in await drain(queue):
        assert p.status == Status.GOOD and p.value == (42.5 if p.tag == "level" else VALUES[p.tag])  # scaled
        seen[p.tag] = seen.get(p.tag, 0) + 1
    assert 6 <= seen["speed"] == seen["temp"] <= 9  # every 100 ms
    assert all(seen[t] == 1 for t in VALUES if t not in ("speed", "temp"))  # every 1000 ms: once so far
    # the fast group reads its two neighbouring tags in one request, not the whole device
    assert poller.driver.requests <= seen["speed"] + 4  # type: ignore[attr-defined]


def test_poll_group_config_errors() -> None:
    def err(dev: dict[str, Any]) -> str:
        from gateway.errors import ConfigError

        with pytest.raises(ConfigError) as ei:
            parse_plant({"plant": {"enterprise": "e", "site": "s", "area": "a", "line": "l"}, "devices": [dev]})
        return str(ei.value)

    base = {"id": "d", "port": 1, "tags": [{"name": "a", "address": 0, "poll_group": "fast"}]}
    assert err(base) == "devices[0].tags[0]: 'poll_group' 'fast' is not in the device's poll_groups (none defined)"
    assert err({**base, "poll_groups": {"fast": 5}}) == "devices[0].poll_groups: 'fast' 5 outside 10..86400000"
    assert err({**base, "poll_groups": {"fa/st": 100}}).startswith("devices[0].poll_groups: poll group name 'fa/st'")
    mqtt = {"id": "m", "protocol": "mqtt", "host": "127.0.0.1", "poll_groups": {"fast": 100},
            "tags": [{"name": "a", "topic": "x/y"}]}
    assert err(mqtt) == ("devices[0]: 'poll_groups' need a polling driver; this one reports changes as they "
                         "come")


async def test_several_connections_read_a_poll_in_parallel(tcp_plc: Any) -> None:
    dev, plc = tcp_plc
    pooled = device(port=dev.conn.port, connections=3)  # 4 spans (one per table) over 3 connections
    drv = make_driver(pooled)
    await drv.connect()
    try:
        assert drv.health()["connections"] == 3 and len(drv.spans) == 4  # type: ignore[attr-defined]
        assert {p.tag: p.value for p in await drv.read()} == VALUES
        await drv.write(pooled.tag("speed"), 99)
        assert {p.tag: p.value for p in await drv.read()}["speed"] == 99
    finally:
        await drv.close()
    await plc.stop()  # the device goes away: one TemporaryError, as with one connection
    drv2 = make_driver(pooled)
    with pytest.raises(TemporaryError):
        await drv2.connect()
    assert not drv2.connected


def test_serial_line_has_one_connection() -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="'connections' must be 1 for modbus_rtu"):
        device("modbus_rtu", serial_port="/dev/ttyUSB0", connections=2)


async def test_fleet_starts_nothing_once_stopping(tcp_plc: Any) -> None:
    from gateway.fleet import Fleet

    dev, _ = tcp_plc
    fleet = Fleet(asyncio.Queue(10), PollPool(4))
    await fleet.stop_all()
    assert fleet.start(dev) is None  # a hot reload racing the shutdown
    await fleet.apply([dev])
    assert fleet.devices == []
