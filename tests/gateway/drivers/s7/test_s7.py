"""The S7 driver against snap7's own server (gateway.drivers.s7.simulator) on a free loopback port.

Expected bytes are packed here with ``struct``, independently of the driver's codec, and written
into (or read from) the simulated PLC's memory directly.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from devtools.local import free_port
from gateway.config import DeviceConfig, TagConfig, parse_plant
from gateway.drivers import make_driver
from gateway.drivers.s7.config import S7Address
from gateway.drivers.s7.driver import MAX_ITEMS, Driver
from gateway.drivers.s7.simulator import S7Simulator
from gateway.errors import ConfigError, PermanentError, TemporaryError, WriteRefused
from gateway.poller import DevicePoller
from gateway.readings import DeviceBatch
from proto.points import Point, Status
from tests.support.wait import until

pytestmark = pytest.mark.timeout(30)


def plant(tags: list[dict[str, Any]], **device: Any) -> dict[str, Any]:
    return {"plant": {"enterprise": "acme", "site": "berlin", "area": "press", "line": "l1"},
            "devices": [{"id": "plc-1", "protocol": "s7", "host": "127.0.0.1", "tags": tags, **device}]}


def device(tags: list[dict[str, Any]], **dev: Any) -> DeviceConfig:
    return parse_plant(plant(tags, **dev)).devices[0]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def sims() -> Iterator[list[S7Simulator]]:
    """Simulators to stop after the test, whatever happened."""
    started: list[S7Simulator] = []
    yield started
    for sim in started:
        sim.stop()


@pytest.fixture
async def drivers() -> AsyncIterator[list[Driver]]:
    opened: list[Driver] = []
    yield opened
    for d in opened:
        await d.close()


async def serve(dev: DeviceConfig, sims: list[S7Simulator], drivers: list[Driver],
                **sim_args: Any) -> tuple[S7Simulator, Driver]:
    sim = S7Simulator(dev, **sim_args).start()
    sims.append(sim)
    drv = make_driver(dev)
    assert isinstance(drv, Driver)
    drivers.append(drv)
    await drv.connect()
    return sim, drv


def tag(dev: DeviceConfig, name: str) -> TagConfig:
    t = dev.tag(name)
    assert t is not None
    return t


def by_tag(points: list[Point]) -> dict[str, Point]:
    return {p.tag: p for p in points}


# ---------------------------------------------------------------- config

GOOD_ADDRESSES = [
    # address, type given, -> (area, db, offset, bit, canonical type, text)
    ("DB1.DBD4", "real", ("DB", 1, 4, None, "float32", "DB1.DBD4")),
    ("DB1.DBX0.3", None, ("DB", 1, 0, 3, "bool", "DB1.DBX0.3")),
    ("DB1.DBW2", None, ("DB", 1, 2, None, "uint16", "DB1.DBW2")),
    ("db1.dbw2", "int", ("DB", 1, 2, None, "int16", "DB1.DBW2")),
    ("DB10.DBB8", None, ("DB", 10, 8, None, "uint8", "DB10.DBB8")),
    ("DB10.DBB8", "sint", ("DB", 10, 8, None, "int8", "DB10.DBB8")),
    ("DB2.DBS10", None, ("DB", 2, 10, None, "string", "DB2.DBS10")),
    ("DB3.DBL16", "lreal", ("DB", 3, 16, None, "float64", "DB3.DBL16")),
    ("DB3.DBL24", "lint", ("DB", 3, 24, None, "int64", "DB3.DBL24")),
    ("%DB65535.DBD0", "dint", ("DB", 65535, 0, None, "int32", "DB65535.DBD0")),
    ("M10.2", None, ("M", 0, 10, 2, "bool", "M10.2")),
    ("MW20", "int", ("M", 0, 20, None, "int16", "MW20")),
    ("MD24", None, ("M", 0, 24, None, "uint32", "MD24")),
    ("I0.1", None, ("I", 0, 0, 1, "bool", "I0.1")),
    ("IX0.7", None, ("I", 0, 0, 7, "bool", "I0.7")),
    ("IW2", "word", ("I", 0, 2, None, "uint16", "IW2")),
    ("Q0.0", None, ("Q", 0, 0, 0, "bool", "Q0.0")),
    ("QB1", "byte", ("Q", 0, 1, None, "uint8", "QB1")),
    ("EW4", None, ("I", 0, 4, None, "uint16", "IW4")),  # German mnemonics
    ("A1.5", None, ("Q", 0, 1, 5, "bool", "Q1.5")),
    ("DB1.DBDT16", None, ("DB", 1, 16, None, "datetime", "DB1.DBDT16")),
    ("db1.dbdt16", "date_and_time", ("DB", 1, 16, None, "datetime", "DB1.DBDT16")),
    ("DB1.DBDTL24", "dtl", ("DB", 1, 24, None, "datetime", "DB1.DBDTL24")),
    ("%MDTL40", "datetime", ("M", 0, 40, None, "datetime", "MDTL40")),
    ("EDT8", "DT", ("I", 0, 8, None, "datetime", "IDT8")),
]


@pytest.mark.parametrize(("address", "dtype", "want"), GOOD_ADDRESSES)
def test_address_parsing_good(address: str, dtype: str | None, want: tuple[Any, ...]) -> None:
    tag: dict[str, Any] = {"name": "t", "address": address}
    if dtype:
        tag["type"] = dtype
    t = device([tag]).tags[0]
    a = t.address
    assert (a.area, a.db, a.offset, a.bit, t.type, str(a)) == want
    assert t.length == {"string": 254, "datetime": 12 if a.letter == "DTL" else 8}.get(t.type, 0)


BAD_TAGS = [
    ({"address": "DB1.DBQ4"}, ("'address' 'DB1.DBQ4': unknown size 'Q'; expected X (bit), B (byte), W (word), "
                              "D (double word), L (64 bits), S (string), DT (DATE_AND_TIME) or DTL")),
    ({"address": "DB1,DBW4"}, ("'address' 'DB1,DBW4' is not an S7 address; expected e.g. DB1.DBX0.3, DB1.DBW2, "
                              "DB1.DBD4, DB2.DBS10, DB1.DBDT16, DB1.DBDTL24, M10.2, MW20, I0.1, QB1")),
    ({"address": "T5"}, ("'address' 'T5' is not an S7 address; expected e.g. DB1.DBX0.3, DB1.DBW2, DB1.DBD4, "
                        "DB2.DBS10, DB1.DBDT16, DB1.DBDTL24, M10.2, MW20, I0.1, QB1")),
    ({"address": "DB1.DBD4", "type": "datetime"},
     "type datetime does not fit 'DB1.DBD4' (a double word, 4 bytes); use DB1.DBDTL4"),
    ({"address": "DB1.DBDT4", "type": "ulint"},
     "type uint64 does not fit 'DB1.DBDT4' (a DATE_AND_TIME, 8 bytes); use DB1.DBL4"),
    ({"address": "DB1.DBDT4", "type": "dtl"}, "type 'dtl' does not fit 'DB1.DBDT4' (a DATE_AND_TIME, 8 bytes)"),
    ({"address": "DB1.DBDTL4", "type": "DATE_AND_TIME"}, "type 'DATE_AND_TIME' does not fit 'DB1.DBDTL4' (a DTL, "
                                                         "12 bytes)"),
    ({"address": "DB1.DBDTL4", "length": 12}, "'length' applies to string tags only"),
    ({"address": "MDT4.1"}, "'address' 'MDT4.1': a bit number is only allowed on bit addresses"),
    ({"area": "DB", "db": 1, "offset": 0, "type": "datetime"},
     "type 'datetime' does not say the PLC's format: use 'date_and_time' (DT, 8 bytes) or 'dtl' (12 bytes)"),
    ({"address": "DB1.DBX0"}, "'address' 'DB1.DBX0' needs a bit number, e.g. DB1.DBX0.0"),
    ({"address": "M10"}, "'address' 'M10' needs a bit number, e.g. M10.0, or a size letter, e.g. MW10"),
    ({"address": "DB1.DBX0.8"}, "'address' 'DB1.DBX0.8': bit 8 outside 0..7"),
    ({"address": "DB1.DBW2.1"}, "'address' 'DB1.DBW2.1': a bit number is only allowed on bit addresses"),
    ({"address": "DB0.DBW0"}, "'address' 'DB0.DBW0': DB number 0 outside 1..65535"),
    ({"address": "MW70000"}, "'address' 'MW70000': byte offset 70000 outside 0..65535"),
    ({"address": "DB1.DBW2", "type": "real"}, "type float32 does not fit 'DB1.DBW2' (a word, 2 bytes); use DB1.DBD2"),
    ({"address": "DB1.DBD4", "type": "lreal"},
     "type float64 does not fit 'DB1.DBD4' (a double word, 4 bytes); use DB1.DBL4"),
    ({"address": "MW20", "type": "bool"}, "type bool does not fit 'MW20' (a word, 2 bytes); use M20.0"),
    ({"address": "DB1.DBX0.3", "type": "int"}, "type int16 does not fit 'DB1.DBX0.3' (a bit); use DB1.DBW0"),
    ({"address": "DB1.DBB8", "type": "string"}, "type string does not fit 'DB1.DBB8' (a byte); use DB1.DBS8"),
    ({"address": "QB1", "type": "dint"}, "type int32 does not fit 'QB1' (a byte); use QD1"),
    ({"address": "DB1.DBS0", "length": 255}, "'length' 255 outside 1..254"),
    ({"address": "DB1.DBW0", "length": 4}, "'length' applies to string tags only"),
    ({"address": "DB1.DBW0", "type": "bcd"}, ("'type' is 'bcd'; expected one of bool, int8, uint8, int16, uint16, "
                                             "int32, uint32, int64, uint64, float32, float64, string, datetime")),
    ({"type": "int"}, "'address' is required (e.g. \"DB1.DBD4\"), or 'area' and 'offset'"),
    ({"address": 4}, "'address' must be str, got 4"),
    ({"address": "DB1.DBW0", "db": 1}, "'address' and ['db'] both given; use one form"),
    ({"area": "T", "offset": 0, "type": "int"}, "'area' is 'T'; expected one of DB, M, I, Q"),
    ({"area": "DB", "offset": 0, "type": "int"}, "'db' is required"),
    ({"area": "M", "db": 1, "offset": 0, "type": "int"}, "'db' applies to area DB only"),
    ({"area": "M", "offset": 0, "type": "bool"}, "'bit' is required"),
    ({"area": "M", "offset": 0, "bit": 1, "type": "int"}, "'bit' applies to bool tags only"),
    ({"area": "M", "offset": 0}, "'type' is required"),
    ({"address": "DB1.DBW0", "table": "x"}, "unknown key(s) ['table']"),
]


@pytest.mark.parametrize(("tag", "message"), BAD_TAGS)
def test_address_parsing_bad(tag: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        device([{"name": "t", **tag}])
    assert str(ei.value) == f"devices[0].tags[0]: {message}"


def test_explicit_keys_equal_siemens_syntax() -> None:
    dev = device([{"name": "a", "area": "DB", "db": 3, "offset": 4, "type": "real"},
                  {"name": "b", "area": "M", "offset": 10, "bit": 2, "type": "bool"},
                  {"name": "c", "area": "Q", "offset": 8, "type": "lreal"}])
    assert [str(t.address) for t in dev.tags] == ["DB3.DBD4", "M10.2", "QL8"]
    assert dev.tags[0].address == S7Address("DB", 3, 4, None, "D")


def test_connection_keys() -> None:
    conn = device([], port=1102, rack=0, slot=2, pdu_size=960, max_gap=0).conn
    assert (conn.port, conn.remote_tsap, conn.local_tsap, conn.pdu_size, conn.max_gap) == (1102, 0x0102, 0x0100, 960, 0)
    assert device([]).conn.remote_tsap == 0x0101  # rack 0 slot 1 (S7-1200/1500)
    assert device([], tsap="03.01", local_tsap=0x1000).conn.remote_tsap == 0x0301


BAD_CONNECTIONS: list[tuple[dict[str, Any], str]] = [
    ({"tsap": "03.01", "slot": 2}, "give either 'tsap' or 'rack'/'slot', not both"),
    ({"tsap": "0301"}, "'tsap' '0301' is not a TSAP; expected e.g. \"03.01\" (hex) or an integer"),
    ({"tsap": 70000}, "'tsap' 70000 outside 0..65535"),
    ({"pdu_size": 2048}, "'pdu_size' 2048 outside 240..960"),
    ({"slot": 32}, "'slot' 32 outside 0..31"),
    ({"host": None}, "'host' is required"),
    ({"unit_id": 1}, "unknown key(s) ['unit_id']"),
]


@pytest.mark.parametrize(("keys", "message"), BAD_CONNECTIONS)
def test_connection_keys_bad(keys: dict[str, Any], message: str) -> None:
    doc = plant([], **keys)
    doc["devices"][0] = {k: v for k, v in doc["devices"][0].items() if v is not None}
    with pytest.raises(ConfigError) as ei:
        parse_plant(doc)
    assert str(ei.value) == f"devices[0]: {message}"


# ---------------------------------------------------------------- reads

def addr(area: str, letter: str, offset: int, bit: int | None = None) -> str:
    base = f"DB7.DB{letter}{offset}" if area == "DB" else f"{area}{'' if letter == 'X' else letter}{offset}"
    return f"{base}.{bit}" if bit is not None else base


#: name, IEC type, size letter, offset, value, its bytes packed independently of the driver
TYPED = [
    ("byte", "byte", "B", 1, 200, b"\xc8"),
    ("sint", "sint", "B", 2, -100, struct.pack(">b", -100)),
    ("int", "int", "W", 4, -12345, struct.pack(">h", -12345)),
    ("word", "word", "W", 6, 54321, struct.pack(">H", 54321)),
    ("dint", "dint", "D", 8, -2_000_000_000, struct.pack(">i", -2_000_000_000)),
    ("dword", "dword", "D", 12, 4_000_000_000, struct.pack(">I", 4_000_000_000)),
    ("real", "real", "D", 16, 0.1, struct.pack(">f", 0.1)),
    ("real2", "real", "D", 20, -21.5, struct.pack(">f", -21.5)),
    ("lreal", "lreal", "L", 24, -1234.5678, struct.pack(">d", -1234.5678)),
    ("lint", "lint", "L", 32, -9_000_000_000_000_000_000, struct.pack(">q", -9_000_000_000_000_000_000)),
    ("ulint", "ulint", "L", 40, 18_000_000_000_000_000_000, struct.pack(">Q", 18_000_000_000_000_000_000)),
    ("text", "string", "S", 48, "Hallo S7", bytes([10, 8]) + b"Hallo S7"),
]


def typed_tags(area: str) -> list[dict[str, Any]]:
    tags: list[dict[str, Any]] = [{"name": "on", "address": addr(area, "X", 0, 3)},
                                  {"name": "off", "address": addr(area, "X", 0, 4)}]
    for name, dtype, letter, off, _, _ in TYPED:
        tags.append({"name": name, "address": addr(area, letter, off), "type": dtype,
                     **({"length": 10} if dtype == "string" else {})})
    return tags


@pytest.mark.parametrize("area", ["DB", "M", "I", "Q"])
async def test_read_every_type_exactly(area: str, port: int, sims: list[S7Simulator], drivers: list[Driver]) -> None:
    dev = device(typed_tags(area), port=port)
    sim, drv = await serve(dev, sims, drivers)
    index = 7 if area == "DB" else 0
    sim.write_bytes(area, index, 0, bytes([0b1110_1000]))  # bit 3 set, bit 4 clear, neighbours set
    for _, _, _, off, _, raw in TYPED:
        sim.write_bytes(area, index, off, raw)
    before = drv.requests
    points = by_tag(await drv.read())
    assert drv.requests - before == 1  # every tag of the area is one contiguous item
    assert points["on"].value is True and points["off"].value is False
    for name, _, _, _, value, _ in TYPED:
        p = points[name]
        assert (p.value, p.status, p.reason) == (value, Status.GOOD, None), name
        assert type(p.value) is type(value), name
    assert points["real"].value == 0.1  # the shortest decimal of the float32, not 0.10000000149011612


async def test_item_errors_are_bad_points_and_neighbours_stay_good(port: int, sims: list[S7Simulator],
                                                                   drivers: list[Driver]) -> None:
    dev = device([{"name": "a", "address": "DB1.DBW0", "type": "int"},
                  {"name": "b", "address": "DB1.DBW2", "type": "int"},
                  {"name": "edge", "address": "DB1.DBW4", "type": "int"},  # just past the end of DB1
                  {"name": "far", "address": "DB1.DBD400", "type": "real"},
                  {"name": "nodb", "address": "DB99.DBW0"},
                  {"name": "m", "address": "MW0", "type": "int"}], port=port)
    _sim, drv = await serve(dev, sims, drivers, missing=("edge", "far", "nodb"), values={"a": 1, "b": -2, "m": 3})
    assert drv.health()["items_per_poll"] == 4  # a, b and edge are one item
    for _ in range(2):  # the first read splits the refused item and re-reads at once
        points = by_tag(await drv.read())
        assert [points[n].value for n in ("a", "b", "m")] == [1, -2, 3]
        assert all(points[n].status == Status.GOOD for n in ("a", "b", "m"))
        assert (points["edge"].value, points["edge"].status, points["edge"].reason) == \
            (None, Status.BAD_OUT_OF_RANGE, "PLC refused DB1.DBW4: Invalid address (0x05)")
        assert (points["far"].status, points["far"].reason) == \
            (Status.BAD_OUT_OF_RANGE, "PLC refused DB1.DBD400: Invalid address (0x05)")
        assert (points["nodb"].status, points["nodb"].reason) == \
            (Status.BAD_CONFIGURATION_ERROR, "PLC refused DB99.DBW0: Object does not exist (0x0a)")
        assert [p.tag for p in await drv.read()] == [t.name for t in dev.tags]  # config order
    assert drv.connected
    assert drv.health()["items_per_poll"] == 6


# ---------------------------------------------------------------- batching

def min_requests(n_items: int, item_bytes: int, pdu: int) -> int:
    """Fewest READ VAR requests for ``n_items`` items of ``item_bytes``: at most 20 items, a request
    of 12 + 12 per item bytes and a response of 14 + (4 + data + fill) per item bytes within the PDU."""
    per_request = min(MAX_ITEMS, (pdu - 12) // 12, (pdu - 14) // (4 + item_bytes + item_bytes % 2))
    return math.ceil(n_items / per_request)


@pytest.mark.parametrize("pdu", [240, 480])
async def test_many_tags_are_read_in_few_requests(pdu: int, port: int, sims: list[S7Simulator],
                                                  drivers: list[Driver]) -> None:
    # 100 reals 16 bytes apart: the 12-byte holes exceed max_gap, so each is an item of its own
    tags = [{"name": f"r{i}", "address": f"DB1.DBD{16 * i}", "type": "real"} for i in range(100)]
    dev = device(tags, port=port, pdu_size=pdu)
    _sim, drv = await serve(dev, sims, drivers, values={f"r{i}": i + 0.5 for i in range(100)})
    assert drv.pdu_size == pdu
    before = drv.requests
    points = await drv.read()
    assert [p.value for p in points] == [i + 0.5 for i in range(100)]
    assert drv.requests - before == min_requests(100, 4, pdu) == (6 if pdu == 240 else 5)


async def test_a_poll_group_reads_only_its_tags(port: int, sims: list[S7Simulator], drivers: list[Driver]) -> None:
    tags = [{"name": f"r{i}", "address": f"DB1.DBD{16 * i}", "type": "real",
             **({"poll_group": "fast"} if i < 3 else {})} for i in range(40)]
    dev = device(tags, port=port, poll_groups={"fast": 100})
    _sim, drv = await serve(dev, sims, drivers, values={f"r{i}": i + 0.5 for i in range(40)})
    before = drv.requests
    points = await drv.read_tags(frozenset({"r0", "r1", "r2"}))
    assert [(p.tag, p.value) for p in points] == [("r0", 0.5), ("r1", 1.5), ("r2", 2.5)]
    assert drv.requests - before == 1


async def test_neighbouring_tags_are_coalesced(port: int, sims: list[S7Simulator], drivers: list[Driver]) -> None:
    tags = [{"name": f"w{i}", "address": f"DB2.DBW{2 * i}", "type": "int"} for i in range(100)]
    tags += [{"name": f"x{i}", "address": f"M{i // 8}.{i % 8}"} for i in range(100)]
    tags += [{"name": f"g{i}", "address": f"DB3.DBW{10 * i}"} for i in range(10)]  # 8-byte holes: still coalesced
    dev = device(tags, port=port)
    _sim, drv = await serve(dev, sims, drivers, values={f"w{i}": -i for i in range(100)}
                           | {f"x{i}": i % 3 == 0 for i in range(100)} | {f"g{i}": i for i in range(10)})
    before = drv.requests
    values = {p.tag: p.value for p in await drv.read()}
    assert drv.requests - before == 1
    assert drv.health()["items_per_poll"] == 3
    assert [values[f"w{i}"] for i in range(100)] == [-i for i in range(100)]
    assert [values[f"x{i}"] for i in range(100)] == [i % 3 == 0 for i in range(100)]
    assert [values[f"g{i}"] for i in range(10)] == list(range(10))


async def test_string_longer_than_one_item_is_read_and_written_in_pieces(port: int, sims: list[S7Simulator],
                                                             drivers: list[Driver]) -> None:
    dev = device([{"name": "s", "address": "DB4.DBS0"}, {"name": "n", "address": "DB4.DBW300", "type": "int"}],
                 port=port, pdu_size=240)
    text = "".join(chr(ord("A") + i % 26) for i in range(254))
    sim, drv = await serve(dev, sims, drivers, values={"s": text, "n": 7})
    assert drv.health()["items_per_poll"] == 3  # 256 bytes > 222 per item at PDU 240: two pieces, and n
    assert {p.tag: p.value for p in await drv.read()} == {"s": text, "n": 7}
    before = drv.requests
    await drv.write(tag(dev, "s"), text[::-1])  # 255 bytes > 205 per write request at PDU 240
    assert drv.requests - before == 2
    assert sim.read_bytes("DB", 4, 0, 256) == bytes([254, 254]) + text[::-1].encode()


# ---------------------------------------------------------------- writes



@pytest.mark.parametrize("area", ["DB", "M", "Q"])
async def test_write_round_trip_every_type(area: str, port: int, sims: list[S7Simulator],
                                           drivers: list[Driver]) -> None:
    dev = device(typed_tags(area), port=port)
    sim, drv = await serve(dev, sims, drivers)
    index = 7 if area == "DB" else 0
    for name, _, _, off, value, raw in TYPED:
        await drv.write(tag(dev, name), value)
        assert sim.read_bytes(area, index, off, len(raw)) == raw, name
    values = {p.tag: p.value for p in await drv.read()}
    assert all(values[name] == value for name, _, _, _, value, _ in TYPED)


async def test_write_bool_keeps_neighbouring_bits(port: int, sims: list[S7Simulator], drivers: list[Driver]) -> None:
    dev = device([{"name": "d3", "address": "DB1.DBX4.3"}, {"name": "d0", "address": "DB1.DBX4.0"},
                  {"name": "q7", "address": "Q2.7"}, {"name": "i1", "address": "I0.1"}], port=port)
    sim, drv = await serve(dev, sims, drivers)
    sim.write_bytes("DB", 1, 4, bytes([0b1010_0101]))
    sim.write_bytes("Q", 0, 2, bytes([0b0101_0101]))
    await drv.write(tag(dev, "d3"), True)
    assert sim.read_bytes("DB", 1, 4, 1) == bytes([0b1010_1101])
    await drv.write(tag(dev, "d0"), False)
    assert sim.read_bytes("DB", 1, 4, 1) == bytes([0b1010_1100])
    await drv.write(tag(dev, "d0"), False)  # idempotent
    assert sim.read_bytes("DB", 1, 4, 1) == bytes([0b1010_1100])
    await drv.write(tag(dev, "q7"), True)
    assert sim.read_bytes("Q", 0, 2, 1) == bytes([0b1101_0101])
    await drv.write(tag(dev, "i1"), True)  # snap7's server lets clients write the input image
    assert sim.read_bytes("I", 0, 0, 1) == bytes([0b0000_0010])
    assert {p.tag: p.value for p in await drv.read()} == {"d3": True, "d0": False, "q7": True, "i1": True}


async def test_write_string(port: int, sims: list[S7Simulator], drivers: list[Driver]) -> None:
    dev = device([{"name": "s", "address": "DB2.DBS10", "length": 10},
                  {"name": "after", "address": "DB2.DBB22"}], port=port)
    sim, drv = await serve(dev, sims, drivers, values={"after": 0x55})
    await drv.write(tag(dev, "s"), "abc")
    assert sim.read_bytes("DB", 2, 10, 5) == bytes([10, 3]) + b"abc"
    await drv.write(tag(dev, "s"), "Größe 10 ä")  # latin-1: one byte per character
    assert sim.read_bytes("DB", 2, 10, 13) == bytes([10, 10]) + "Größe 10 ä".encode("latin-1") + b"\x55"
    await drv.write(tag(dev, "s"), "")
    assert {p.tag: p.value for p in await drv.read()} == {"s": "", "after": 0x55}
    with pytest.raises(WriteRefused) as ei:
        await drv.write(tag(dev, "s"), "x" * 11)
    assert str(ei.value) == "cannot write 'xxxxxxxxxxx' to string tag 's': string of 11 characters is longer " \
                            "than the tag's 10"
    with pytest.raises(WriteRefused) as ei:
        await drv.write(tag(dev, "s"), "€")
    assert str(ei.value).startswith("cannot write '€' to string tag 's': 'latin-1' codec can't encode")


async def test_refused_writes(port: int, sims: list[S7Simulator], drivers: list[Driver]) -> None:
    dev = device([{"name": "ok", "address": "DB1.DBW0", "type": "int"},
                  {"name": "nodb", "address": "DB99.DBW0", "type": "int"},
                  {"name": "nodb_bit", "address": "DB99.DBX0.1"},
                  {"name": "past", "address": "DB1.DBD2", "type": "dint"}], port=port)
    sim, drv = await serve(dev, sims, drivers, missing=("nodb", "nodb_bit", "past"))
    cases = [("nodb", 1, ("PLC refused write to DB99.DBW0: S7 protocol: The function cannot be performed "
                         "(error 0x8404)")),
             ("nodb_bit", True, "PLC refused DB99.DBX0.1: Object does not exist (0x0a)"),
             ("past", 1, ("PLC refused write to DB1.DBD2: S7 protocol: The function cannot be performed "
                         "(error 0x8404)"))]
    for name, value, message in cases:
        with pytest.raises(PermanentError) as ei:
            await drv.write(tag(dev, name), value)
        assert (str(ei.value), ei.value.device_id) == (message, "plc-1")
    with pytest.raises(WriteRefused) as ei:
        await drv.write(tag(dev, "ok"), 70000)
    assert str(ei.value) == "cannot write 70000 to int16 tag 'ok': 70000 does not fit int16"
    assert drv.connected  # a refusal is not a connection problem
    await drv.write(tag(dev, "ok"), -7)
    assert sim.get("ok") == -7


# ---------------------------------------------------------------- connection problems

async def test_connection_loss_and_timeouts(port: int, sims: list[S7Simulator], drivers: list[Driver]) -> None:
    dev = device([{"name": "a", "address": "DB1.DBW0", "type": "int"}], port=port, timeout_ms=300)
    sim, drv = await serve(dev, sims, drivers, values={"a": 5})
    await asyncio.to_thread(sim.stop)
    with pytest.raises(TemporaryError) as ei:
        for _ in range(3):  # snap7's server may answer one request already queued before it closes
            await drv.read()
    assert "read failed" in str(ei.value) and ei.value.device_id == "plc-1"
    assert not drv.connected
    with pytest.raises(TemporaryError) as ei:
        await drv.read()
    assert str(ei.value) == "not connected"
    with pytest.raises(TemporaryError) as ei:
        await drv.write(tag(dev, "a"), 1)
    assert str(ei.value) == "not connected"
    with pytest.raises(TemporaryError) as ei:
        await drv.connect()
    assert str(ei.value).startswith(f"connect to 127.0.0.1:{port} failed: ")
    # a listener that never answers the ISO handshake: connect is bounded by timeout_ms
    with socket.create_server(("127.0.0.1", 0)) as mute:
        silent = make_driver(device([], port=mute.getsockname()[1], timeout_ms=200))
        t0 = time.monotonic()
        with pytest.raises(TemporaryError) as ei:
            await silent.connect()
        assert time.monotonic() - t0 < 1.0
        assert str(ei.value) == f"connect to 127.0.0.1:{mute.getsockname()[1]} failed: timed out after 200 ms"
        assert not silent.connected
        await silent.close()
        await silent.close()  # close() twice, never raises


async def test_poller_outage_and_recovery(port: int, sims: list[S7Simulator]) -> None:
    tags: list[dict[str, Any]] = [
        {"name": "temp", "address": "DB1.DBD0", "type": "real"}, {"name": "run", "address": "M0.1"},
        {"name": "count", "address": "IW2", "type": "int"}, {"name": "state", "address": "DB1.DBS4", "length": 8}]
    dev = device(tags, port=port, interval_ms=100, timeout_ms=300, breaker_open_ms=100)
    sim = S7Simulator(dev, values={"temp": 21.5, "run": True, "count": -3, "state": "RUN"}).start()
    sims.append(sim)
    queue: asyncio.Queue[DeviceBatch] = asyncio.Queue(maxsize=1000)
    poller = DevicePoller(dev, queue)
    stop = asyncio.Event()

    async def points_until(pred: Any, timeout: float, what: str) -> dict[str, Point]:
        latest: dict[str, Point] = {}

        async def next_batch() -> bool:
            latest.update(by_tag((await queue.get()).points))
            return len(latest) == len(tags) and bool(pred(latest))

        await until(next_batch, timeout, 0, what=lambda: f"{what} ({latest})")
        return latest

    task = asyncio.create_task(poller.poll_loop(stop), name="gateway[plc-1].poll_loop")
    try:
        good = await points_until(lambda ps: all(p.status == Status.GOOD for p in ps.values()), 5, "first values")
        assert {n: p.value for n, p in good.items()} == {"temp": 21.5, "run": True, "count": -3, "state": "RUN"}
        await asyncio.to_thread(sim.stop)
        bad = await points_until(lambda ps: all(p.status != Status.GOOD for p in ps.values()), 5, "all BAD")
        assert all(p.value is None and p.reason and Status(p.status).name.startswith("BAD")
                   for p in bad.values()), bad
        await asyncio.sleep(0.5)  # stays down a while: reconnects are refused, the breaker opens
        down = [p for _ in range(queue.qsize()) for p in queue.get_nowait().points]
        assert down and all(p.value is None for p in down)
        assert any(p.status == Status.BAD_NOT_CONNECTED and p.reason is not None
                   and p.reason.startswith(f"connect to 127.0.0.1:{port} failed: ") for p in down)
        sim.set("temp", 22.25)
        sim.start()  # a new snap7 server on the same port, same memory
        t0 = time.monotonic()
        back = await points_until(lambda ps: all(p.status == Status.GOOD for p in ps.values()), 5, "GOOD again")
        assert time.monotonic() - t0 < 5
        assert {n: p.value for n, p in back.items()} == {"temp": 22.25, "run": True, "count": -3, "state": "RUN"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert not poller.driver.connected
