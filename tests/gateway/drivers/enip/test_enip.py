"""The EtherNet/IP driver (gateway.drivers.enip.driver) against cpppo's Logix simulator, a real child process.

Values are set and checked with cpppo's own client (an independent CIP implementation), so a read
proves the driver decodes what cpppo encoded, and a write proves cpppo received what was meant.
cpppo cannot upload its tag list, so these devices use ``upload_tags = false``; the upload path is
covered only by the test that shows it fails against cpppo and by unit tests of its type checks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pycomm3 import LogixDriver

from devtools.local import free_port
from gateway.config import DeviceConfig, parse_plant
from gateway.drivers.enip.config import EnipAddress, EnipConnection
from gateway.drivers.enip.driver import Driver, declare, uploaded_problem
from gateway.drivers.enip.simulator import EnipSimulator, tags_for
from gateway.errors import ConfigError, PermanentError, TemporaryError, WriteRefused
from gateway.poller import DevicePoller
from gateway.readings import DeviceBatch
from proto.points import Point, Status
from tests.support.wait import until

PLANT = {"enterprise": "acme", "site": "berlin", "area": "press-shop", "line": "line-2"}

# one tag per type cpppo serves, array elements and (flat, dotted) structure members
TAGS: list[dict[str, Any]] = [
    {"name": "s8", "tag": "S8", "type": "sint"},
    {"name": "u8", "tag": "U8", "type": "usint"},
    {"name": "i16", "tag": "I16", "type": "int"},
    {"name": "u16", "tag": "U16", "type": "uint"},
    {"name": "i32", "tag": "I32", "type": "dint"},
    {"name": "u32", "tag": "U32", "type": "udint"},
    {"name": "i64", "tag": "I64", "type": "lint"},
    {"name": "u64", "tag": "U64", "type": "ulint"},
    {"name": "r32", "tag": "Speed", "type": "real", "writable": True},
    {"name": "r64", "tag": "R64", "type": "lreal"},
    {"name": "flag", "tag": "Flag", "type": "bool"},
    {"name": "text", "tag": "Text", "type": "string"},
    {"name": "count3", "tag": "Counts[3]", "type": "dint"},
    {"name": "count9", "tag": "Counts[9]", "type": "int32"},
    {"name": "motor_speed", "tag": "Motor.Speed", "type": "float32"},
    {"name": "motor_hist2", "tag": "Motor.Hist[2]", "type": "real"},
]
# value per tag name: (cpppo path, CIP type, value), extremes of each range
VALUES: dict[str, tuple[str, str, Any]] = {
    "s8": ("S8", "SINT", -128), "u8": ("U8", "USINT", 255), "i16": ("I16", "INT", -32768),
    "u16": ("U16", "UINT", 65535), "i32": ("I32", "DINT", -2**31), "u32": ("U32", "UDINT", 2**32 - 1),
    "i64": ("I64", "LINT", -2**63), "u64": ("U64", "ULINT", 2**64 - 1), "r32": ("Speed", "REAL", -273.25),
    "r64": ("R64", "LREAL", 0.1), "flag": ("Flag", "BOOL", True), "text": ("Text", "STRING", "line-2 RUNNING"),
    "count3": ("Counts[3]", "DINT", -7), "count9": ("Counts[9]", "DINT", 123456),
    "motor_speed": ("Motor.Speed", "REAL", 2.25), "motor_hist2": ("Motor.Hist[2]", "REAL", 7.5),
}


def make_device(port: int, tags: list[dict[str, Any]], **keys: Any) -> DeviceConfig:
    dev = {"id": "plc-7", "protocol": "enip", "host": "127.0.0.1", "port": port, "upload_tags": False,
           "interval_ms": 100, "timeout_ms": 300, **keys, "tags": tags}
    return parse_plant({"plant": PLANT, "devices": [dev]}).devices[0]


def by_name(points: list[Point]) -> dict[str, Point]:
    return {p.tag: p for p in points}


@pytest.fixture
def device() -> DeviceConfig:
    return make_device(free_port(), TAGS)


@pytest.fixture
def sim(device: DeviceConfig, tmp_path: Path) -> Iterator[EnipSimulator]:
    s = EnipSimulator.for_device(device, log=tmp_path / "cpppo.log")
    with s:
        yield s


@pytest.fixture
async def drv(device: DeviceConfig, sim: EnipSimulator) -> AsyncIterator[Driver]:
    d = Driver(device)
    await d.connect()
    yield d
    await d.close()


# ---------------------------------------------------------------- configuration


def test_connection_defaults_and_tag_addresses() -> None:
    dev = make_device(44818, [{"name": "t", "tag": "Program:Main.Motor.Hist[2]", "type": "LREAL"},
                              {"name": "s", "tag": "Text", "type": "string"}], upload_tags=True)
    assert dev.conn == EnipConnection(host="127.0.0.1", port=44818, route="0", upload_tags=True)
    assert dev.conn.path == "127.0.0.1:44818/0"
    t, s = dev.tags
    assert (t.address, t.type, t.length) == (EnipAddress("Program:Main.Motor.Hist[2]"), "float64", 0)
    assert (s.type, s.length) == ("string", 82)
    routed = make_device(1, [], route="bp/1/enet/10.0.0.9/bp/0/")
    assert routed.conn.path == "127.0.0.1:1/bp/1/enet/10.0.0.9/bp/0"
    assert make_device(1, [], slot=3).conn.path == "127.0.0.1:1/3"


TAG = {"name": "x", "tag": "Speed", "type": "real"}


@pytest.mark.parametrize(("keys", "tag", "message"), [
    ({"host": None}, TAG, "devices[0]: 'host' is required"),
    ({"host": "10.0.0.5:44818"}, TAG,
     "devices[0]: 'host' '10.0.0.5:44818' must be an IPv4 address or host name (no port, no path)"),
    ({"port": 0}, TAG, "devices[0]: 'port' 0 outside 1..65534"),
    ({"slot": 256}, TAG, "devices[0]: 'slot' 256 outside 0..255"),
    ({"slot": 1, "route": "bp/1"}, TAG, "devices[0]: give either 'slot' or 'route', not both"),
    ({"route": "bp/1/enet"}, TAG, ("devices[0]: 'route' 'bp/1/enet' is not a CIP route: it must be port/link pairs, "
                                  "got 3 segments")),
    ({"route": "bus/1"}, TAG, ("devices[0]: 'route' 'bus/1' is not a CIP route: port 'bus' is neither 1..14 nor one "
                              "of backplane, bp, enet, dhrio-a, dhrio-b, dnet, cnet, dh485-a, dh485-b")),
    ({"route": "bp/256"}, TAG, "devices[0]: 'route' 'bp/256' is not a CIP route: link '256' outside 0..255"),
    ({"route": "enet/plc.local"}, TAG, ("devices[0]: 'route' 'enet/plc.local' is not a CIP route: link 'plc.local' "
                                       "is neither a slot number nor an IP address")),
    ({"upload_tags": "no"}, TAG, "devices[0]: 'upload_tags' must be bool, got 'no'"),
    ({"micro800": True}, TAG, "devices[0]: unknown key(s) ['micro800']"),
    ({}, {"name": "x", "type": "real"}, "devices[0].tags[0]: 'tag' is required"),
    ({}, {"name": "x", "tag": "Speed"}, "devices[0].tags[0]: 'type' is required"),
    ({}, {**TAG, "type": "udt"}, ("devices[0].tags[0]: 'type' is 'udt'; expected one of bool, int8, uint8, "
                                 "int16, uint16, int32, uint32, int64, uint64, float32, float64, string")),
    ({}, {**TAG, "tag": "Counts{3}"}, ("devices[0].tags[0]: 'tag' 'Counts{3}' is not a Logix tag path of one "
                                      "element (e.g. Speed, Counts[3], Motor.Speed, Program:Main.Step)")),
    ({}, {**TAG, "tag": "Counts[1-3]"}, ("devices[0].tags[0]: 'tag' 'Counts[1-3]' is not a Logix tag path of one "
                                        "element (e.g. Speed, Counts[3], Motor.Speed, Program:Main.Step)")),
    ({"upload_tags": False}, {**TAG, "tag": "Status.3", "type": "bool"},
     "devices[0].tags[0]: 'tag' 'Status.3' addresses a bit of an integer, which needs upload_tags = true"),
    ({}, {**TAG, "tag": "Status.3", "type": "dint"},
     "devices[0].tags[0]: 'tag' 'Status.3' addresses a bit; its type must be bool, not int32"),
    ({}, {**TAG, "length": 10}, "devices[0].tags[0]: 'length' only applies to string tags, not float32"),
    ({}, {**TAG, "elements": 3}, "devices[0].tags[0]: unknown key(s) ['elements']"),
])
def test_config_errors(keys: dict[str, Any], tag: dict[str, Any], message: str) -> None:
    dev = {"id": "plc-7", "protocol": "enip", "host": "127.0.0.1", "tags": [tag]}
    dev.update(keys)
    for k in [k for k, v in dev.items() if v is None]:
        del dev[k]
    with pytest.raises(ConfigError) as ei:
        parse_plant({"plant": PLANT, "devices": [dev]})
    assert str(ei.value) == message


def test_declared_types_that_contradict_each_other_are_reported_per_tag() -> None:
    dev = make_device(1, [{"name": "a", "tag": "A", "type": "dint"}, {"name": "ab", "tag": "A.B", "type": "real"},
                          {"name": "c1", "tag": "C[1]", "type": "dint"}, {"name": "c2", "tag": "C[2]", "type": "real"},
                          {"name": "m1", "tag": "M.X", "type": "real"}, {"name": "m2", "tag": "M.Y", "type": "bool"}])
    defs, problems = declare(dev.tags)
    assert problems == {"ab": "'A.B' as REAL contradicts another tag of this device",
                        "c2": "'C[2]' as REAL contradicts another tag of this device"}
    assert defs["C"]["data_type_name"] == "DINT"
    assert sorted(defs["M"]["data_type"]["internal_tags"]) == ["X", "Y"]


def test_uploaded_types_are_checked_against_the_config() -> None:
    """The checks on an uploaded tag list (shaped as pycomm3's LogixDriver builds it); cpppo cannot upload."""
    plc = LogixDriver("127.0.0.1", init_tags=False)
    real = {"tag_type": "atomic", "data_type": "REAL", "data_type_name": "REAL"}
    plc._tags = {
        "Speed": {"tag_name": "Speed", **real},
        "Status": {"tag_name": "Status", "tag_type": "atomic", "data_type": "DINT", "data_type_name": "DINT"},
        "Flags": {"tag_name": "Flags", "tag_type": "atomic", "data_type": "DWORD", "data_type_name": "DWORD"},
        "Text": {"tag_name": "Text", "tag_type": "struct", "data_type_name": "STRING",
                 "data_type": {"name": "STRING", "string": 82, "internal_tags": {}}},
        "Motor": {"tag_name": "Motor", "tag_type": "struct", "data_type_name": "MotorUDT",
                  "data_type": {"name": "MotorUDT", "internal_tags": {"Speed": real}}},
    }
    tags = [{"name": n, "tag": p, "type": t} for n, p, t in [
        ("ok", "Speed", "real"), ("bit", "Status.3", "bool"), ("flag", "Flags[40]", "bool"),
        ("text", "Text", "string"), ("member", "Motor.Speed", "real"), ("wrong", "Speed", "lreal"),
        ("missing", "Nope", "dint"), ("udt", "Motor", "real"), ("no_member", "Motor.Torque", "real"),
        ("real_bit", "Speed.1", "bool")]]
    dev = make_device(1, tags, upload_tags=True)
    problems = {t.name: uploaded_problem(plc, t) for t in dev.tags}
    assert problems == {
        "ok": None, "bit": None, "flag": None, "text": None, "member": None,
        "wrong": "'Speed' is REAL (float32) in the controller, configured as float64",
        "missing": "'Nope' is not in the controller's tag list",
        "udt": "'Motor' is a MotorUDT structure; configure its members instead",
        "no_member": "'Motor.Torque' is not in the controller's tag list",
        "real_bit": "'Speed' is float32; bits are of integers",
    }


# ---------------------------------------------------------------- reads and writes against cpppo


async def test_reads_exact_values_of_every_type(drv: Driver, sim: EnipSimulator) -> None:
    await asyncio.to_thread(sim.set, **{path: (cip, v) for path, cip, v in VALUES.values()})
    points = by_name(await drv.read())
    assert {n: p.value for n, p in points.items()} == {n: v for n, (_, _, v) in VALUES.items()}
    assert all(p.status == Status.GOOD and p.reason is None for p in points.values())
    assert type(points["flag"].value) is bool and type(points["r32"].value) is float
    assert drv.requests == 1  # 16 tags, one Multiple Service Packet


@pytest.fixture
async def partial(tmp_path: Path) -> AsyncIterator[tuple[Driver, EnipSimulator]]:
    """A device with tags cpppo does not serve: ``Nope`` (no such tag), ``Counts[10]`` (beyond DINT[10])."""
    dev = make_device(free_port(), [{"name": "speed", "tag": "Speed", "type": "real"},
                                    {"name": "nope", "tag": "Nope", "type": "dint"},
                                    {"name": "beyond", "tag": "Counts[10]", "type": "dint"}])
    with EnipSimulator({"Speed": "REAL", "Counts": "DINT[10]"}, port=dev.conn.port, log=tmp_path / "c.log") as s:
        d = Driver(dev)
        await d.connect()
        yield d, s
        await d.close()


async def test_refused_tags_are_bad_points_next_to_good_ones(partial: tuple[Driver, EnipSimulator]) -> None:
    d, sim = partial
    await asyncio.to_thread(sim.set, Speed=("REAL", 1.5))
    p = by_name(await d.read())
    p2 = by_name(await d.read())  # the connection survives refusals
    assert (p["speed"].value, p["speed"].status, p2["speed"].value) == (1.5, Status.GOOD, 1.5)
    assert p["nope"].value is None and p["nope"].status == Status.BAD_CONFIGURATION_ERROR
    assert p["nope"].reason.startswith("Destination unknown, class unsupported, instance undefined")
    assert p["beyond"].value is None and p["beyond"].status == Status.BAD_CONFIGURATION_ERROR
    assert p["beyond"].reason.startswith("General Error (see extended status) - Access beyond end of the object")
    assert d.requests == 2


async def test_writes_round_trip(drv: Driver, sim: EnipSimulator, device: DeviceConfig) -> None:
    for name, (_, _, value) in VALUES.items():
        tag = device.tag(name)
        assert tag is not None
        await drv.write(tag, value)
    seen = await asyncio.to_thread(sim.get, *(path for path, _, _ in VALUES.values()))  # cpppo's client
    assert dict(zip(VALUES, seen, strict=True)) == {n: v for n, (_, _, v) in VALUES.items()}
    assert {p.tag: p.value for p in await drv.read()} == {n: v for n, (_, _, v) in VALUES.items()}
    # single-tag writes, one request each (pycomm3's doubled single-write message is fixed)
    assert drv.requests == len(VALUES) + 1


async def test_refused_writes(partial: tuple[Driver, EnipSimulator]) -> None:
    d, sim = partial
    speed, nope, beyond = d.device.tags
    with pytest.raises(WriteRefused, match=r"^expected a number for a float32 tag, got 'fast'$"):
        await d.write(speed, "fast")
    with pytest.raises(PermanentError) as ei:
        await d.write(nope, 1)
    assert str(ei.value).startswith("write of 'Nope' refused: Destination unknown, class unsupported, "
                                    "instance undefined or structure element undefined")
    with pytest.raises(PermanentError, match=r"^write of 'Counts\[10\]' refused: General Error \(see extended "
                                             r"status\) - Access beyond end of the object"):
        await d.write(beyond, 1)
    assert d.connected
    await d.write(speed, 12)  # an int for a REAL tag is fine, and the session still works
    assert by_name(await d.read())["speed"].value == 12.0
    assert await asyncio.to_thread(sim.get, "Speed") == [12.0]


# ---------------------------------------------------------------- connection failures


async def test_connect_refused_and_upload_unsupported_by_cpppo(sim: EnipSimulator, device: DeviceConfig) -> None:
    closed = make_device(free_port(), TAGS)
    d = Driver(closed)
    with pytest.raises(TemporaryError, match=rf"^connect to 127.0.0.1:{closed.conn.port}/0 failed: "
                                             r"failed to open a connection"):
        await d.connect()
    assert not d.connected
    with pytest.raises(TemporaryError, match=r"^not connected$"):
        await d.read()
    # cpppo has no Get Instance Attribute List on the Symbol object: the tag list upload fails
    up = Driver(make_device(device.conn.port, TAGS, upload_tags=True))
    with pytest.raises(TemporaryError, match=rf"^connect to 127.0.0.1:{device.conn.port}/0 failed: "
                                             r"failed to get attribute list"):
        await up.connect()
    assert not up.connected
    await up.close()
    await d.close()


async def test_route_reaches_the_slot(tmp_path: Path) -> None:
    """cpppo started with --route-path 1/3 answers only requests routed to backplane slot 3."""
    port = free_port()
    tags = [{"name": "speed", "tag": "Speed", "type": "real"}]
    with EnipSimulator({"Speed": "REAL"}, port=port, route_path="1/3", log=tmp_path / "c.log"):
        for keys, ok in [({"slot": 3}, True), ({"route": "bp/3"}, True), ({"slot": 0}, False)]:
            d = Driver(make_device(port, tags, **keys))
            try:
                if ok:
                    await d.connect()
                    assert (await d.read())[0].status == Status.GOOD
                else:
                    with pytest.raises(TemporaryError, match=rf"^connect to 127.0.0.1:{port}/0 failed"):
                        await d.connect()
            finally:
                await d.close()


async def test_hung_device_times_out_without_blocking_the_loop(drv: Driver, sim: EnipSimulator) -> None:
    """SIGSTOP freezes cpppo with its socket open: the read times out, the event loop keeps running."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    assert sim.proc is not None
    os.kill(sim.proc.pid, signal.SIGSTOP)
    try:
        async with asyncio.TaskGroup() as tg:
            t = tg.create_task(ticker())
            t0 = time.monotonic()
            with pytest.raises(TemporaryError, match=r"^read timed out after 300 ms$"):
                await drv.read()
            elapsed = time.monotonic() - t0
            t.cancel()
    finally:
        os.kill(sim.proc.pid, signal.SIGCONT)
    assert 0.29 < elapsed < 0.6 and ticks >= 10  # ~30 ticks of 10 ms while the read hung
    assert not drv.connected
    await drv.connect()  # waits for the abandoned call's thread, then opens a fresh session
    assert all(p.status == Status.GOOD for p in await drv.read())


async def test_connection_loss_raises_and_reconnects(drv: Driver, sim: EnipSimulator) -> None:
    await asyncio.to_thread(sim.kill)
    with pytest.raises(TemporaryError, match=r"^read failed: failed to (send message|receive reply)"):
        await drv.read()
    assert not drv.connected
    await asyncio.to_thread(sim.start)
    await drv.connect()
    assert by_name(await drv.read())["r32"].value == 0.0  # a fresh cpppo starts from zero


async def next_batch(queue: asyncio.Queue[DeviceBatch], pred: Callable[[list[Point]], bool],
                     timeout: float, what: str) -> list[Point]:
    last: list[Point] = []

    async def matches() -> bool:
        nonlocal last
        last = (await queue.get()).points
        return pred(last)

    await until(matches, timeout, 0, what=lambda: f"a batch with {what} (last: {last})")
    return last


async def test_outage_with_the_poller(tmp_path: Path) -> None:
    """Kill cpppo for real: every tag BAD with a reason, at the lost read and at each failed reconnect;
    restart it on the same port: GOOD again within 5 s, with the same poller."""
    tags = [{"name": "speed", "tag": "Speed", "type": "real"}, {"name": "count3", "tag": "Counts[3]", "type": "dint"}]
    dev = make_device(free_port(), tags, breaker_open_ms=100)
    port = dev.conn.port
    sim = EnipSimulator.for_device(dev, log=tmp_path / "cpppo.log")
    await asyncio.to_thread(sim.start)
    await asyncio.to_thread(sim.set, Speed=("REAL", 12.5), **{"Counts[3]": ("DINT", 42)})
    queue: asyncio.Queue[DeviceBatch] = asyncio.Queue(maxsize=1000)
    stop = asyncio.Event()

    def all_good(values: dict[str, Any]) -> Callable[[list[Point]], bool]:
        return lambda pts: len(pts) == 2 and {p.tag: (p.value, p.status) for p in pts} == \
            {n: (v, Status.GOOD) for n, v in values.items()}

    def all_bad(status: int) -> Callable[[list[Point]], bool]:
        return lambda pts: len(pts) == 2 and all(p.value is None and p.status == status and p.reason for p in pts)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(DevicePoller(dev, queue).poll_loop(stop), name="gateway[plc-7].poll_loop")
            try:
                await next_batch(queue, all_good({"speed": 12.5, "count3": 42}), 5, "good values")
                await asyncio.to_thread(sim.kill)
                lost = await next_batch(queue, all_bad(Status.BAD_COMMUNICATION_ERROR), 5, "the lost read")
                refused = await next_batch(queue, all_bad(Status.BAD_NOT_CONNECTED), 5, "a failed reconnect")
                await asyncio.sleep(1)  # a longer outage: the circuit breaker opens and backs off
                during = [b.points for b in [queue.get_nowait() for _ in range(queue.qsize())]]
                await asyncio.to_thread(sim.start)
                t0 = time.monotonic()
                await next_batch(queue, all_good({"speed": 0.0, "count3": 0}), 5, "good values after restart")
                recovered_in = time.monotonic() - t0
            finally:
                stop.set()
    finally:
        sim.stop()
    assert lost[0].reason == "read failed: failed to receive reply: connection closed by the device"
    assert refused[0].reason is not None and refused[0].reason.startswith(
        f"connect to 127.0.0.1:{port}/0 failed: failed to open a connection: Failed to open socket to "
        f"127.0.0.1:{port}")
    assert during and all(p.value is None and p.status == Status.BAD_NOT_CONNECTED for b in during for p in b)
    assert recovered_in < 5


def test_simulator_tags_for_a_device() -> None:
    dev = make_device(1, [{"name": "a", "tag": "Counts[3]", "type": "dint"},
                          {"name": "b", "tag": "Counts[7]", "type": "dint"},
                          {"name": "c", "tag": "Motor.Speed", "type": "real"},
                          {"name": "d", "tag": "Flag", "type": "bool"}])
    assert tags_for(dev) == {"Counts": "DINT[8]", "Motor.Speed": "REAL", "Flag": "BOOL"}
    with pytest.raises(ValueError, match="only the last segment may have an index"):
        tags_for(make_device(1, [{"name": "a", "tag": "Line[1].Speed", "type": "real"}]))
