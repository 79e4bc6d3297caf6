"""OPC UA DateTime variables as datetime tags, against asyncua's own server (the simulator's
Plant.Dates folder) in its own process: reads in both modes, OPC UA's null DateTime, dates before
1970 and MaxDateTime, writes through the command path's checks (ISO text or Unix ms), discovery,
and the points through the JSON batch contract."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from asyncua import Client, ua

from devtools.local import free_port
from gateway.commands import to_raw
from gateway.drivers import make_driver
from gateway.drivers.opcua.browse import discover
from gateway.drivers.opcua.driver import NULL_DATE_REASON
from gateway.drivers.opcua.simulator import DATES, NS_URI
from gateway.errors import WriteRefused
from normalizer import DeviceRules
from proto.points import Point, Status, decode_batch, encode_batch
from proto.types import DateTime
from tests.gateway.drivers.opcua.test_opcua import SimProcess, device, node, read_until

#: 2026-12-02T10:00:00.123456Z cut to the millisecond
VALUE_MS = 1_796_205_600_123
#: 9999-12-31T23:59:59Z, what asyncua decodes MaxDateTime (Int64 max) to
MAX_MS = 253_402_300_799_000
DATE_TAGS = [{"name": n, "node": node(f"Dates.{n}"), "type": "datetime"} for n in DATES]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path_factory.mktemp("opcua-dates") / "sim.log").start()
    yield s
    s.stop()


async def read_raw(endpoint: str, path: str) -> datetime:
    """The variable's value as another OPC UA client reads it."""
    async with Client(endpoint) as c:
        idx = await c.get_namespace_index(NS_URI)
        value: datetime = await c.get_node(f"ns={idx};s=Plant.{path}").read_value()
        return value


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_datetime_variables_read_as_datetime_points(sim: SimProcess, mode: str) -> None:
    tags = [*DATE_TAGS, {"name": "as_float", "node": node("Dates.Value"), "type": "float64"},
            {"name": "double_as_date", "node": node("Types.Double"), "type": "datetime"}]
    drv = make_driver(device(sim.endpoint, tags, mode=mode))
    await drv.connect()
    try:
        seen = await read_until(drv, {t["name"] for t in tags})
    finally:
        await drv.close()
    got = {name: (p[0].value, p[0].status, p[0].reason) for name, p in seen.items()}
    assert got == {
        "Value": (DateTime(VALUE_MS), Status.GOOD, None),
        "Null": (None, Status.GOOD, NULL_DATE_REASON),
        "PreEpoch": (None, ua.StatusCodes.BadOutOfRange,
                     "BadOutOfRange: 1969-07-20T20:17:40+00:00 is before 1970-01-01, the earliest datetime"),
        "Max": (DateTime(MAX_MS), Status.GOOD, None),
        "Setpoint": (DateTime(946_684_800_000), Status.GOOD, None),
        "as_float": (None, ua.StatusCodes.BadTypeMismatch, "BadTypeMismatch: a datetime value does not fit a "
                                                           "float64 tag"),
        "double_as_date": (None, ua.StatusCodes.BadTypeMismatch,
                           "BadTypeMismatch: a float value does not fit a datetime tag"),
    }
    assert DateTime(VALUE_MS).iso() == "2026-12-02T10:00:00.123Z"
    assert DateTime(MAX_MS).iso() == "9999-12-31T23:59:59.000Z"
    # the same points through the JSON batch contract, as ingestion receives them
    points = [seen[t["name"]][0] for t in tags]
    assert decode_batch(encode_batch(points, seq=1)).points == points


async def test_writes_take_iso_text_or_unix_ms_through_the_command_checks(sim: SimProcess) -> None:
    dev = device(sim.endpoint, [{"name": "sp", "node": node("Dates.Setpoint"), "type": "datetime", "writable": True},
                                {"name": "ro", "node": node("Dates.Value"), "type": "datetime", "writable": False}])
    rules = DeviceRules(dev.tags)
    sp = dev.tag_map["sp"]
    drv = make_driver(dev)
    await drv.connect()
    try:
        # (request, what the checks make of it, what the server keeps): from 9999-12-31T23:59:59Z on,
        # OPC UA encodes MaxDateTime (Int64 max), read back as 23:59:59.000
        for request, ms, kept in (("2026-12-02T11:00:00.123+01:00", VALUE_MS, VALUE_MS), (0, 0, 0),
                                  ("9999-12-31T23:59:59.999Z", 253_402_300_799_999, MAX_MS),
                                  (VALUE_MS + 1.0, VALUE_MS + 1, VALUE_MS + 1)):
            raw = to_raw(sp, request, rules)
            assert raw == DateTime(ms)
            await drv.write(sp, raw)
            assert {p.tag: p.value for p in await drv.read()}["sp"] == DateTime(kept)
            assert await read_raw(sim.endpoint, "Dates.Setpoint") == DateTime(kept).to_datetime()
        for bad, message in (("2026-12-02T10:00:00", "has no time zone"), (-1, "got -1"),
                             (True, "expected ISO 8601 text"), ("tomorrow", "is not an ISO 8601 date and time")):
            with pytest.raises(WriteRefused, match=message):
                to_raw(sp, bad, rules)
        with pytest.raises(WriteRefused, match="tag 'ro' is read-only"):
            to_raw(dev.tag_map["ro"], VALUE_MS, rules)
        assert await read_raw(sim.endpoint, "Dates.Setpoint") == datetime(2026, 12, 2, 10, 0, 0, 124000, tzinfo=UTC)
    finally:
        await drv.write(sp, DateTime.of(DATES["Setpoint"]))
        await drv.close()


async def test_discover_finds_datetime_variables(sim: SimProcess) -> None:
    conn = device(sim.endpoint, []).conn
    tags = await discover(conn, f"0:Objects/{NS_URI}:Plant/{NS_URI}:Dates")
    assert tags == DATE_TAGS
    drv = make_driver(device(sim.endpoint, tags))
    await drv.connect()
    try:
        values = {p.tag: p.value for p in await drv.read()}
    finally:
        await drv.close()
    assert values == {"Value": DateTime(VALUE_MS), "Null": None, "PreEpoch": None, "Max": DateTime(MAX_MS),
                      "Setpoint": DateTime(946_684_800_000)}


def test_a_point_of_opc_ua_s_null_date_is_good_and_null() -> None:
    """What the historian gets for it: no value, good, the reason (stored once in nexus.reasons)."""
    point = Point("Null", None, 1, Status.GOOD, None, NULL_DATE_REASON)
    assert decode_batch(encode_batch([point])).points == [point]
