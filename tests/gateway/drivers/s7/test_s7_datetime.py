"""S7 DATE_AND_TIME (8 bytes BCD) and DTL (12 bytes) as datetime tags: the codec against bytes packed
here by hand and against python-snap7's own helpers (an independent implementation), and the driver
against snap7's server (gateway.drivers.s7.simulator): both formats read in DB and M, bytes that are
no date as BAD points with their neighbours good, writes of ISO text or Unix ms through the command
path's checks, landing as the expected bytes in the PLC's memory."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from snap7.util import get_date_time_object, get_dtl, set_dt, set_dtl

from devtools.local import free_port
from gateway.commands import to_raw
from gateway.config import DeviceConfig, parse_plant
from gateway.drivers import make_driver
from gateway.drivers.s7.config import decode_dt, decode_dtl, decode_value, encode_dt, encode_dtl, size_of
from gateway.drivers.s7.driver import Driver
from gateway.drivers.s7.simulator import S7Simulator
from gateway.errors import WriteRefused
from normalizer import DeviceRules
from proto.points import Status, decode_batch, encode_batch
from proto.types import DateTime

pytestmark = pytest.mark.timeout(30)


def bcd(n: int) -> int:
    return (n // 10) * 16 + n % 10


def dt_bytes(y: int, mo: int, d: int, h: int, mi: int, s: int, ms: int, weekday: int) -> bytes:
    """DATE_AND_TIME as the S7 manual lays it out."""
    return bytes([bcd(y % 100), bcd(mo), bcd(d), bcd(h), bcd(mi), bcd(s), bcd(ms // 10), (ms % 10) * 16 + weekday])


def dtl_bytes(y: int, mo: int, d: int, weekday: int, h: int, mi: int, s: int, ns: int) -> bytes:
    return struct.pack(">HBBBBBBI", y, mo, d, weekday, h, mi, s, ns)


def ms_of(*args: int) -> int:
    return DateTime.of(datetime(*args, tzinfo=UTC)).ms  # type: ignore[misc]


DT_CASES = [  # (bytes, the date): weekday 1 = Sunday
    (dt_bytes(1990, 1, 1, 0, 0, 0, 0, 2), ms_of(1990, 1, 1)),  # a Monday
    (dt_bytes(1999, 12, 31, 23, 59, 59, 999, 6), ms_of(1999, 12, 31, 23, 59, 59, 999000)),
    (dt_bytes(2000, 2, 29, 12, 30, 15, 7, 3), ms_of(2000, 2, 29, 12, 30, 15, 7000)),
    (dt_bytes(2026, 12, 2, 10, 0, 0, 123, 4), 1_796_205_600_123),
    (dt_bytes(2089, 12, 31, 23, 59, 59, 999, 7), ms_of(2089, 12, 31, 23, 59, 59, 999000)),
]
DTL_CASES = [
    (dtl_bytes(1970, 1, 1, 5, 0, 0, 0, 0), 0),  # a Thursday
    (dtl_bytes(2026, 12, 2, 4, 10, 0, 0, 123_000_000), 1_796_205_600_123),
    (dtl_bytes(2000, 2, 29, 3, 12, 30, 15, 7_000_000), ms_of(2000, 2, 29, 12, 30, 15, 7000)),
    (dtl_bytes(2262, 4, 11, 6, 23, 47, 16, 854_000_000), ms_of(2262, 4, 11, 23, 47, 16, 854000)),
]


@pytest.mark.parametrize(("raw", "ms"), DT_CASES)
def test_date_and_time_both_ways(raw: bytes, ms: int) -> None:
    assert decode_dt(raw) == DateTime(ms)
    assert encode_dt(DateTime(ms)) == raw
    naive = DateTime(ms).to_datetime().replace(tzinfo=None)
    assert bytes(set_dt(bytearray(8), 0, naive)) == raw  # python-snap7's own encoder agrees
    assert get_date_time_object(bytearray(raw), 0) == naive
    assert decode_value("datetime", raw, length=8) == DateTime(ms) and size_of("datetime", 8) == 8


@pytest.mark.parametrize(("raw", "ms"), DTL_CASES)
def test_dtl_both_ways(raw: bytes, ms: int) -> None:
    assert decode_dtl(raw) == DateTime(ms)
    assert encode_dtl(DateTime(ms)) == raw
    naive = DateTime(ms).to_datetime().replace(tzinfo=None)
    assert bytes(set_dtl(bytearray(12), 0, naive)) == raw
    assert get_dtl(bytearray(raw), 0) == naive
    assert decode_value("datetime", raw, length=12) == DateTime(ms) and size_of("datetime", 12) == 12


def test_dtl_nanoseconds_are_cut_to_the_millisecond() -> None:
    assert decode_dtl(dtl_bytes(2026, 12, 2, 4, 10, 0, 0, 123_999_999)) == DateTime(1_796_205_600_123)
    assert decode_dtl(dtl_bytes(2262, 4, 11, 6, 23, 47, 16, 854_775_807)).iso() == "2262-04-11T23:47:16.854Z"


@pytest.mark.parametrize(("raw", "message"), [
    (bytes(8), "not a DATE_AND_TIME: 2000-00-00 00:00:00 (month must be in 1..12)"),  # zeroed memory
    (dt_bytes(2026, 2, 30, 0, 0, 0, 0, 1), "not a DATE_AND_TIME: 2026-02-30 00:00:00 (day is out of range for month)"),
    (dt_bytes(2026, 1, 1, 24, 0, 0, 0, 1), "not a DATE_AND_TIME: 2026-01-01 24:00:00"),
    (bytes([0x26, 0x1A, 1, 0, 0, 0, 0, 1]), "month 0x1a is not BCD"),
    (bytes([0x26, 1, 1, 0, 0, 0, 0xA0, 1]), "milliseconds 0xa0 is not BCD"),
    (bytes([0x26, 1, 1, 0, 0, 0, 0, 0xF1]), "millisecond digit 0xf is not BCD"),
])
def test_bytes_that_are_no_date_and_time(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError) as err:
        decode_dt(raw)
    assert message in str(err.value)


@pytest.mark.parametrize(("raw", "message"), [
    (bytes(12), "not a DTL: year 0, nanoseconds 0 (1970..2262, 0..999999999)"),
    (dtl_bytes(1969, 12, 31, 4, 0, 0, 0, 0), "not a DTL: year 1969"),
    (dtl_bytes(2026, 1, 1, 5, 0, 0, 0, 1_000_000_000), "nanoseconds 1000000000"),
    (dtl_bytes(2026, 13, 1, 5, 0, 0, 0, 0), "not a DTL: 2026-13-01 00:00:00 (month must be in 1..12)"),
    (dtl_bytes(2026, 1, 1, 5, 0, 60, 0, 0), "not a DTL: 2026-01-01 00:60:00"),
])
def test_bytes_that_are_no_dtl(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError) as err:
        decode_dtl(raw)
    assert message in str(err.value)


@pytest.mark.parametrize(("encode", "ms", "message"), [
    (encode_dt, ms_of(1989, 12, 31, 23, 59, 59, 999000), "1989-12-31T23:59:59.999Z is outside DATE_AND_TIME's "
                                                         "1990-01-01 .. 2089-12-31"),
    (encode_dt, ms_of(2090, 1, 1), "2090-01-01T00:00:00.000Z is outside DATE_AND_TIME's"),
    (encode_dtl, ms_of(2263, 1, 1), "2263-01-01T00:00:00.000Z is after DTL's last year 2262"),
])
def test_dates_a_format_cannot_hold(encode: Any, ms: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(DateTime(ms))


# ---------------------------------------------------------------- against snap7's server

TAGS = [
    {"name": "dt", "address": "DB7.DBDT0", "writable": True},
    {"name": "dtl", "address": "DB7.DBDTL8", "type": "dtl", "writable": True},
    {"name": "after", "address": "DB7.DBW20", "type": "int"},
    {"name": "m_dt", "address": "MDT16"},
    {"name": "m_dtl", "area": "M", "offset": 32, "type": "DTL"},
]


def device(port: int) -> DeviceConfig:
    doc = {"plant": {"enterprise": "acme", "site": "berlin", "area": "press", "line": "l1"},
           "devices": [{"id": "plc-1", "protocol": "s7", "host": "127.0.0.1", "port": port, "tags": TAGS}]}
    return parse_plant(doc).devices[0]


@pytest.fixture
def dev() -> DeviceConfig:
    return device(free_port())


@pytest.fixture
def sim(dev: DeviceConfig) -> Iterator[S7Simulator]:
    s = S7Simulator(dev).start()
    yield s
    s.stop()


@pytest.fixture
async def drv(dev: DeviceConfig, sim: S7Simulator) -> AsyncIterator[Driver]:
    d = make_driver(dev)
    assert isinstance(d, Driver)
    await d.connect()
    yield d
    await d.close()


async def test_both_formats_read_from_db_and_m(sim: S7Simulator, drv: Driver) -> None:
    assert (len(drv.plan), sum(len(r) for r in drv.plan)) == (1, 2)  # DB7 0..22 and M16..44: 2 items
    sim.write_bytes("DB", 7, 0, DT_CASES[3][0])
    sim.write_bytes("DB", 7, 8, DTL_CASES[1][0])
    sim.write_bytes("DB", 7, 20, struct.pack(">h", -5))
    sim.write_bytes("M", 0, 16, DT_CASES[0][0])
    sim.write_bytes("M", 0, 32, DTL_CASES[3][0])
    points = await drv.read()
    assert [(p.tag, p.value, p.status, p.reason) for p in points] == [
        ("dt", DateTime(1_796_205_600_123), Status.GOOD, None),
        ("dtl", DateTime(1_796_205_600_123), Status.GOOD, None),
        ("after", -5, Status.GOOD, None),
        ("m_dt", DateTime(ms_of(1990, 1, 1)), Status.GOOD, None),
        ("m_dtl", DateTime(ms_of(2262, 4, 11, 23, 47, 16, 854000)), Status.GOOD, None),
    ]
    assert decode_batch(encode_batch(points, seq=1)).points == points  # as ingestion receives them


async def test_bytes_that_are_no_date_are_bad_points_and_neighbours_stay_good(sim: S7Simulator,
                                                                              drv: Driver) -> None:
    sim.write_bytes("DB", 7, 0, bytes(8))  # a zeroed DT: month 0
    sim.write_bytes("DB", 7, 8, dtl_bytes(2026, 2, 29, 1, 0, 0, 0, 0))
    sim.write_bytes("DB", 7, 20, struct.pack(">h", 7))
    by_tag = {p.tag: p for p in await drv.read()}
    assert (by_tag["dt"].value, by_tag["dt"].status, by_tag["dt"].reason) == (
        None, Status.BAD_DECODING_ERROR, "DB7.DBDT0: not a DATE_AND_TIME: 2000-00-00 00:00:00 (month must be in 1..12)")
    assert (by_tag["dtl"].value, by_tag["dtl"].status, by_tag["dtl"].reason) == (
        None, Status.BAD_DECODING_ERROR, "DB7.DBDTL8: not a DTL: 2026-02-29 00:00:00 (day is out of range for month)")
    assert (by_tag["after"].value, by_tag["after"].status) == (7, Status.GOOD)


async def test_writes_of_iso_text_or_ms_land_as_the_formats_bytes(dev: DeviceConfig, sim: S7Simulator,
                                                                  drv: Driver) -> None:
    rules = DeviceRules(dev.tags)
    dt, dtl = dev.tag_map["dt"], dev.tag_map["dtl"]
    await drv.write(dt, to_raw(dt, "2026-12-02T11:00:00.123+01:00", rules))
    await drv.write(dtl, to_raw(dtl, 1_796_205_600_123, rules))
    assert sim.read_bytes("DB", 7, 0, 8) == dt_bytes(2026, 12, 2, 10, 0, 0, 123, 4)
    assert sim.read_bytes("DB", 7, 8, 12) == dtl_bytes(2026, 12, 2, 4, 10, 0, 0, 123_000_000)
    got = {p.tag: p.value for p in await drv.read()}
    assert (got["dt"], got["dtl"]) == (DateTime(1_796_205_600_123), DateTime(1_796_205_600_123))
    with pytest.raises(WriteRefused, match=r"cannot write DateTime\(3786912000000\) to datetime tag 'dt': "
                                           r"2090-01-01T00:00:00\.000Z is outside DATE_AND_TIME's"):
        await drv.write(dt, to_raw(dt, "2090-01-01T00:00:00Z", rules))
    with pytest.raises(WriteRefused, match="has no time zone"):
        to_raw(dtl, "2026-12-02T10:00:00", rules)
    assert sim.read_bytes("DB", 7, 0, 8) == dt_bytes(2026, 12, 2, 10, 0, 0, 123, 4)  # unchanged
    await drv.write(dtl, to_raw(dtl, "2262-04-11T23:47:16.854Z", rules))
    assert sim.read_bytes("DB", 7, 8, 12) == dtl_bytes(2262, 4, 11, 6, 23, 47, 16, 854_000_000)
