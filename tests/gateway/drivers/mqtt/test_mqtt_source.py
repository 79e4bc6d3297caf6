"""The MQTT source driver (gateway.drivers.mqtt.driver): config errors, payload mapping, writes, and a real
broker outage under the gateway poller. Integration tests use real mosquitto brokers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.publish as mqtt_publish
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from devtools.local import Mosquitto, free_port
from gateway.config import DeviceConfig, parse_plant
from gateway.drivers.mqtt.driver import Driver, subscriptions
from gateway.drivers.mqtt.mapping import coerce, timestamp_ms
from gateway.errors import ConfigError, PermanentError, TemporaryError, WriteRefused
from gateway.poller import DevicePoller
from gateway.readings import DeviceBatch
from proto.points import Point, Quality, Status
from tests.support.wait import until

pytestmark = pytest.mark.timeout(30)
NOT_UTF8 = b"\xff\xfe"


def device(port: int, tags: list[dict[str, Any]], **keys: Any) -> DeviceConfig:
    doc = {"plant": {"enterprise": "acme", "site": "berlin", "area": "utilities", "line": "line-1"},
           "devices": [{"id": "collector", "protocol": "mqtt", "host": "127.0.0.1", "port": port,
                        "interval_ms": 100, "timeout_ms": 1000, "tags": tags, **keys}]}
    return parse_plant(doc).devices[0]


def config_error(tag: dict[str, Any], **keys: Any) -> str:
    with pytest.raises(ConfigError) as ei:
        device(1883, [{"name": "t", "topic": "a/b", **tag}], **keys)
    return str(ei.value)


async def publish(port: int, *msgs: tuple[str, str | bytes], retain: bool = False) -> None:
    """Publish in order over one connection, QoS 1 (returns after the broker acknowledged)."""
    await asyncio.to_thread(mqtt_publish.multiple, [(t, p, 1, retain) for t, p in msgs],
                            hostname="127.0.0.1", port=port)


async def read_until(drv: Driver, done: Callable[[list[Point]], bool], timeout: float = 5) -> list[Point]:
    """Everything read() returns until ``done(points so far)``."""
    points: list[Point] = []

    async def read() -> bool:
        points.extend(p for p in await drv.read() if p.status != Status.BAD_WAITING_FOR_INITIAL_DATA)
        return done(points)

    await until(read, timeout, 0.02, what=lambda: f"the points wanted (read so far: {points})")
    return points


def orjson_error(payload: bytes) -> str:
    """orjson's own words for why ``payload`` is not JSON (they differ between orjson versions)."""
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return str(exc)
    raise AssertionError(f"{payload!r} is JSON")


def has(n: int) -> Callable[[list[Point]], bool]:
    return lambda points: len(points) >= n


# ------------------------------------------------------------------ config

@pytest.mark.parametrize(("tag", "message"), [
    ({"format": "json", "value": "$.values[x]"},
     "'value' path '$.values[x]' is invalid at position 8: expected .name, [index] or ['name']"),
    ({"value": "$."}, "'value' path '$.' is invalid at position 1: expected .name, [index] or ['name']"),
    ({"value": "$data"}, "'value' path '$data' is invalid at position 1: expected .name, [index] or ['name']"),
    ({"value": "data..temp"},
     "'value' path 'data..temp' is invalid at position 4: expected .name, [index] or ['name']"),
    ({"timestamp": ".t"}, "'timestamp' path '.t' is invalid at position 0: expected .name, [index] or ['name']"),
    ({"value": ""}, "'value' path is empty"),
    ({"format": "xml"}, "'format' is 'xml'; expected one of auto, json, number, bool, string"),
    ({"writable": True}, "a writable tag needs a 'write_topic'"),
    ({"writable": True, "write_topic": "a/cmd", "value": "$.v[0]"},
     ("'value' path '$.v[0]' has an array index; a writable auto tag needs a path of key names "
     "(the write payload is built from it)")),
    ({"write_topic": "a/+/cmd"}, "'write_topic' 'a/+/cmd' must not contain wildcards (+ or #)"),
    ({"topic": "a/#/b"}, "'topic' 'a/#/b': '+' must be a whole level and '#' the whole last level"),
    ({"topic": "a/b+"}, "'topic' 'a/b+': '+' must be a whole level and '#' the whole last level"),
    ({"format": "number", "value": "$.v"}, "'value' needs format json or auto, not 'number'"),
    ({"quality_map": {"ok": "good"}}, "'quality_map' needs a 'quality' path"),
    ({"quality": "$.q", "quality_map": {"ok": "fine"}},
     "'quality_map' value for 'ok' must be good/uncertain/bad or an OPC UA status code 0..0xFFFFFFFF, got 'fine'"),
    ({"type": "decimal"}, ("'type' is 'decimal'; expected one of bool, int8, uint8, int16, uint16, int32, uint32, "
                          "int64, uint64, float32, float64, string")),
    ({"unknown": 1}, "unknown key(s) ['unknown']"),
])
def test_tag_config_errors(tag: dict[str, Any], message: str) -> None:
    assert config_error(tag) == f"devices[0].tags[0]: {message}"


def test_connection_config_errors() -> None:
    assert config_error({}, qos=2) == "devices[0]: 'qos' 2 outside 0..1"
    assert config_error({}, password="secret") == "devices[0]: 'password' needs a 'username'"
    assert config_error({}, tls="ca.pem") == "devices[0]: unknown key(s) ['tls']"


def test_config_defaults_and_password_not_in_repr() -> None:
    d = device(1884, [{"name": "t", "topic": "a/b"}, {"name": "s", "topic": "a/s", "format": "string"}],
               username="u", password="secret")
    assert (d.conn.port, d.conn.qos, d.conn.buffer_size) == (1884, 1, 10_000)
    assert [(t.type, t.address.format, t.address.value.steps) for t in d.tags] == \
        [("float64", "auto", ()), ("string", "string", ())]
    assert "secret" not in repr(d)


# ------------------------------------------------------------------ pure mapping rules

def test_timestamps() -> None:
    assert timestamp_ms(1732370000, "$.t") == 1732370000000
    assert timestamp_ms(1732370000.25, "$.t") == 1732370000250
    assert timestamp_ms(1732370000123, "$.t") == 1732370000123
    assert timestamp_ms(1732370000123456, "$.t") == 1732370000123
    assert timestamp_ms(1732370000123456789, "$.t") == 1732370000123
    assert timestamp_ms("1732370000", "$.t") == 1732370000000
    assert timestamp_ms("2024-11-23T13:53:20.123Z", "$.t") == 1732370000123
    assert timestamp_ms("2024-11-23T14:53:20.123+01:00", "$.t") == 1732370000123
    assert timestamp_ms("2024-11-23 13:53:20", "$.t") == 1732370000000  # no offset: UTC
    for bad in ("yesterday", True, None, -5, 1e300):
        with pytest.raises(Exception, match=r"^\$\.t: "):
            timestamp_ms(bad, "$.t")


def test_coercion() -> None:
    assert coerce("float64", "21.5") == 21.5 and coerce("int16", 7.0) == 7 and coerce("int16", "7") == 7
    assert coerce("bool", "ON") is True and coerce("bool", 0) is False and coerce("string", 1.5) == "1.5"
    assert coerce("string", {"a": [1]}) == '{"a":[1]}'
    for dtype, value, reason in [("int16", 1.5, "a int16 tag takes whole numbers, got 1.5"),
                                 ("float64", True, "expected a number for a float64 tag, got True"),
                                 ("bool", 2, "expected a bool (true/false), got 2"),
                                 ("uint8", 256, "256 is outside the uint8 range 0..255"),
                                 ("float64", "nan", "expected a finite number, got nan"),
                                 ("int32", None, "value is null")]:
        with pytest.raises(Exception) as ei:
            coerce(dtype, value)
        assert str(ei.value) == reason


def test_overlapping_filters_are_subscribed_once() -> None:
    subs = subscriptions({"p/#", "p/a/+", "p/a/b", "q/+/c", "q/b/+", "$SYS/x", "+/x"})
    assert subs == {"p/#": "p/#", "p/a/+": "p/#", "p/a/b": "p/#", "q/+/c": "q/+/c", "q/b/+": "q/b/+",
                    "$SYS/x": "$SYS/x", "+/x": "+/x"}


# ------------------------------------------------------------------ against a real broker

async def test_exact_values(broker: Mosquitto, prefix: str) -> None:
    p = prefix
    dev = device(broker.port, [
        {"name": "temp", "topic": f"{p}/dev/state", "format": "json", "value": "$.data.temp", "unit": "degC"},
        {"name": "third", "topic": f"{p}/dev/state", "format": "json", "value": "$.values[2]", "type": "int32"},
        {"name": "last", "topic": f"{p}/dev/state", "format": "json", "value": "$.values[-1]", "type": "int16"},
        {"name": "label", "topic": f"{p}/dev/state", "format": "json", "value": "$['meta']['the name']",
         "type": "string"},
        {"name": "running", "topic": f"{p}/dev/state", "value": "data.on", "type": "bool"},
        {"name": "ts_s", "topic": f"{p}/ts/s", "value": "$.v", "timestamp": "$.t"},
        {"name": "ts_ms", "topic": f"{p}/ts/ms", "value": "$.v", "timestamp": "$.t"},
        {"name": "ts_iso", "topic": f"{p}/ts/iso", "value": "$.v", "timestamp": "$.t"},
        {"name": "num", "topic": f"{p}/raw/num", "format": "number", "type": "float32"},
        {"name": "count", "topic": f"{p}/raw/count", "format": "number", "type": "uint16"},
        {"name": "flag", "topic": f"{p}/raw/flag", "format": "bool"},
        {"name": "text", "topic": f"{p}/raw/text", "format": "string"},
        {"name": "auto_num", "topic": f"{p}/raw/auto"},
        {"name": "q_mapped", "topic": f"{p}/q/mapped", "value": "$.v", "quality": "$.q",
         "quality_map": {"ok": "good", "stale": "uncertain", "fail": "bad", "192": "good"}},
        {"name": "q_code", "topic": f"{p}/q/code", "value": "$.v", "quality": "$.status"},
    ])
    drv = Driver(dev)
    await drv.connect()
    try:
        t0 = int(time.time() * 1000)
        await publish(broker.port,
                      (f"{p}/dev/state", ('{"data": {"temp": 21.5, "on": true}, "values": [1, 2, 3, 4],'
                                         ' "meta": {"the name": "Pump A"}}')),
                      (f"{p}/ts/s", '{"v": 1, "t": 1732370000.5}'),
                      (f"{p}/ts/ms", '{"v": 2, "t": 1732370000123}'),
                      (f"{p}/ts/iso", '{"v": 3, "t": "2024-11-23T14:53:20.250+01:00"}'),
                      (f"{p}/raw/num", " 21.25\n"), (f"{p}/raw/count", "42"), (f"{p}/raw/flag", "on"),
                      (f"{p}/raw/text", "hello wörld"), (f"{p}/raw/auto", "17"),
                      (f"{p}/q/mapped", '{"v": 1, "q": "ok"}'), (f"{p}/q/mapped", '{"v": 2, "q": "stale"}'),
                      (f"{p}/q/mapped", '{"v": 3, "q": "fail"}'), (f"{p}/q/mapped", '{"v": 4, "q": 192}'),
                      (f"{p}/q/code", '{"v": 5, "status": 1073741824}'), (f"{p}/q/code", '{"v": 6, "status": "bad"}'))
        points = await read_until(drv, has(19))
        t1 = int(time.time() * 1000)
    finally:
        await drv.close()
    now = {p.tag: p.ts for p in points if p.tag not in ("ts_s", "ts_ms", "ts_iso")}
    assert all(t0 <= ts <= t1 for ts in now.values()), (t0, now, t1)
    got = [(p.tag, p.value, p.ts if p.tag.startswith("ts_") else None, p.status, p.unit, p.reason) for p in points]
    good = Status.GOOD
    assert got == [
        ("temp", 21.5, None, good, "degC", None), ("third", 3, None, good, None, None),
        ("last", 4, None, good, None, None), ("label", "Pump A", None, good, None, None),
        ("running", True, None, good, None, None),
        ("ts_s", 1.0, 1732370000500, good, None, None), ("ts_ms", 2.0, 1732370000123, good, None, None),
        ("ts_iso", 3.0, 1732370000250, good, None, None),
        ("num", 21.25, None, good, None, None), ("count", 42, None, good, None, None),
        ("flag", True, None, good, None, None), ("text", "hello wörld", None, good, None, None),
        ("auto_num", 17.0, None, good, None, None),
        ("q_mapped", 1.0, None, good, None, None),
        ("q_mapped", 2.0, None, Status.UNCERTAIN, None, "source quality 'stale'"),
        ("q_mapped", 3.0, None, Status.BAD, None, "source quality 'fail'"),
        ("q_mapped", 4.0, None, good, None, None),
        ("q_code", 5.0, None, Status.UNCERTAIN, None, "source quality 1073741824"),
        ("q_code", 6.0, None, Status.BAD, None, "source quality 'bad'"),
    ]
    assert isinstance(points[2].value, int) and drv.health()["bad_payloads"] == 0


async def test_wildcards_and_retained_initial_values(broker: Mosquitto, prefix: str) -> None:
    p = prefix
    await publish(broker.port, (f"{p}/line/m1/temp", "20.5"), retain=True)
    dev = device(broker.port, [
        {"name": "any_temp", "topic": f"{p}/+/+/temp", "format": "number"},
        {"name": "everything", "topic": f"{p}/#", "format": "string"},
        {"name": "m2_temp", "topic": f"{p}/line/m2/temp", "format": "number"},
        {"name": "quiet", "topic": f"{p}/never", "format": "number"},
    ])
    drv = Driver(dev)
    await drv.connect()
    try:
        first: list[Point] = []

        async def two_good() -> bool:
            first.extend(await drv.read())
            return len([x for x in first if x.status == Status.GOOD]) >= 2

        # the retained value arrives right after SUBACK
        await until(two_good, 5, 0.02, what=lambda: f"two GOOD points (read so far: {first})")
        assert [(x.tag, x.value, x.status) for x in first if x.status == Status.GOOD] == \
            [("any_temp", 20.5, Status.GOOD), ("everything", "20.5", Status.GOOD)]
        waiting = {(x.tag, x.reason) for x in first if x.status == Status.BAD_WAITING_FOR_INITIAL_DATA}
        assert {("quiet", f"no message on '{p}/never' since connecting"),
                ("m2_temp", f"no message on '{p}/line/m2/temp' since connecting")} <= waiting
        assert {tag for tag, _ in waiting} <= {"quiet", "m2_temp", "any_temp", "everything"}  # first read raced
        await publish(broker.port, (f"{p}/line/m2/temp", "7"), (f"{p}/other", "x"))
        points = await read_until(drv, has(4))
    finally:
        await drv.close()
        await publish(broker.port, (f"{p}/line/m1/temp", ""), retain=True)  # clear the retained message
    # p/# covers the other filters: one subscription, so each message is mapped once per tag
    assert drv.health()["subscriptions"] == 1
    assert [(x.tag, x.value) for x in points] == \
        [("any_temp", 7.0), ("everything", "7"), ("m2_temp", 7.0), ("everything", "x")]


async def test_bad_payloads_are_bad_points_and_the_driver_goes_on(broker: Mosquitto, prefix: str) -> None:
    topic = f"{prefix}/sensor"
    dev = device(broker.port, [
        {"name": "v", "topic": topic, "format": "json", "value": "$.v", "type": "int16"},
        {"name": "at", "topic": topic, "format": "json", "value": "$.v", "timestamp": "$.t", "type": "int16"},
        {"name": "n", "topic": f"{prefix}/n", "format": "number"},
    ])
    drv = Driver(dev)
    await drv.connect()
    try:
        await publish(broker.port, (topic, "not json"), (topic, '{"w": 1}'), (topic, '{"v": "abc"}'),
                      (topic, '{"v": [1]}'), (topic, '{"v": 70000}'), (topic, NOT_UTF8),
                      (topic, '{"v": 5, "t": "noon"}'), (f"{prefix}/n", "twelve"),
                      (topic, '{"v": 7, "t": 1732370000}'), (f"{prefix}/n", "12"))
        points = await read_until(drv, has(18))
    finally:
        await drv.close()
    got = [(x.tag, x.value, x.status, x.reason) for x in points]
    bad, good = Status.BAD_TYPE_MISMATCH, Status.GOOD
    not_json = f"payload is not JSON ({orjson_error(b'not json')}): b'not json'"
    not_utf8 = f"payload is not JSON ({orjson_error(NOT_UTF8)}): {NOT_UTF8!r}"
    assert got == [
        ("v", None, bad, not_json), ("at", None, bad, not_json),
        ("v", None, bad, "$.v: no key 'v' at $"), ("at", None, bad, "$.v: no key 'v' at $"),
        ("v", None, bad, "$.v: 'abc' is not a number"), ("at", None, bad, "$.v: 'abc' is not a number"),
        ("v", None, bad, "$.v: expected a number for a int16 tag, got [1]"),
        ("at", None, bad, "$.v: expected a number for a int16 tag, got [1]"),
        ("v", None, bad, "$.v: 70000 is outside the int16 range -32768..32767"),
        ("at", None, bad, "$.v: 70000 is outside the int16 range -32768..32767"),
        ("v", None, bad, not_utf8), ("at", None, bad, not_utf8),
        ("v", 5, good, None), ("at", None, bad, "$.t: 'noon' is neither epoch time nor ISO 8601"),
        ("n", None, bad, "payload 'twelve' is not a number"),
        ("v", 7, good, None), ("at", 7, good, None), ("n", 12.0, good, None),
    ]
    h = drv.health()
    assert (h["bad_payloads"], h["received"], h["overflows"]) == (14, 10, 0)
    assert h["last_error"] == "n: payload 'twelve' is not a number"
    assert [x.ts for x in points if x.tag == "at" and x.value == 7] == [1732370000000]


async def test_overflow_keeps_the_newest_value_per_tag(broker: Mosquitto, prefix: str) -> None:
    dev = device(broker.port, [{"name": "a", "topic": f"{prefix}/a", "format": "number", "type": "int32"},
                               {"name": "b", "topic": f"{prefix}/b", "format": "number", "type": "int32"}],
                 buffer_size=100)
    drv = Driver(dev)
    await drv.connect()
    try:
        await drv.read()  # the initial waiting points
        await publish(broker.port, *[(f"{prefix}/a", str(i)) for i in range(150)], (f"{prefix}/b", "-1"),
                      *[(f"{prefix}/a", str(i)) for i in range(150, 160)])
        points = await read_until(drv, lambda ps: any(x.value == 159 for x in ps))
    finally:
        await drv.close()
    values = [x.value for x in points if x.tag == "a" and isinstance(x.value, int)]
    assert values[-1] == 159 and values == sorted(values) and [x.value for x in points if x.tag == "b"] == [-1]
    assert drv.health()["overflows"] == 161 - len(points) > 0


async def test_write_round_trip(broker: Mosquitto, prefix: str) -> None:
    p = prefix
    dev = device(broker.port, [
        {"name": "setpoint", "topic": f"{p}/sp/state", "format": "json", "value": "$.setpoint.value",
         "writable": True, "write_topic": f"{p}/sp/set"},
        {"name": "speed", "topic": f"{p}/speed", "format": "number", "type": "uint16",
         "writable": True, "write_topic": f"{p}/speed/set"},
        {"name": "enable", "topic": f"{p}/en", "format": "bool", "writable": True, "write_topic": f"{p}/en/set"},
        {"name": "whole", "topic": f"{p}/whole", "format": "json", "writable": True, "write_topic": f"{p}/whole/set"},
        {"name": "read_only", "topic": f"{p}/ro", "format": "number"},
        # a subscriber of the write topics: sees the raw payloads
        {"name": "seen", "topic": f"{p}/+/set", "format": "string"},
        {"name": "seen2", "topic": f"{p}/+/+/set", "format": "string"},
    ])
    drv = Driver(dev)
    await drv.connect()
    try:
        await drv.write(dev.tags[0], 21.5)
        await drv.write(dev.tags[1], 1500)
        await drv.write(dev.tags[2], True)
        await drv.write(dev.tags[3], 3)
        points = await read_until(drv, has(4))
        with pytest.raises(PermanentError, match=r"^tag 'read_only' has no write_topic$"):
            await drv.write(dev.tags[4], 1.0)
        with pytest.raises(WriteRefused, match=r"^65536 is outside the uint16 range 0\.\.65535$"):
            await drv.write(dev.tags[1], 65536)
    finally:
        await drv.close()
    assert sorted(str(x.value) for x in points) == sorted(['{"setpoint":{"value":21.5}}', "1500", "true", "3.0"])
    with pytest.raises(TemporaryError, match=r"^not connected to the broker$"):
        await drv.write(dev.tags[1], 1)


async def test_refused_subscription_makes_its_tags_bad() -> None:
    """mosquitto 2.0 grants subscriptions its ACL denies (and then delivers nothing), so a broker that
    refuses one (HiveMQ, EMQX, AWS IoT: SUBACK 0x87) is simulated at paho's SUBACK callback."""
    drv = Driver(device(1883, [{"name": "ok", "topic": "plant/+/ok"}, {"name": "secret", "topic": "hr/#"},
                               {"name": "pay", "topic": "hr/pay"}]))
    granted, refused = ReasonCode(PacketTypes.SUBACK, identifier=0), ReasonCode(PacketTypes.SUBACK, identifier=0x87)
    drv._on_subscribe(None, None, 1, [refused, granted], None)  # subscriptions are sorted: hr/#, plant/+/ok
    assert [(x.tag, x.status, x.reason) for x in drv._initial_points(set())] == [
        ("ok", Status.BAD_WAITING_FOR_INITIAL_DATA, "no message on 'plant/+/ok' since connecting"),
        ("secret", Status.BAD_CONFIGURATION_ERROR, "broker refused subscription 'hr/#': Not authorized"),
        ("pay", Status.BAD_CONFIGURATION_ERROR, "broker refused subscription 'hr/#': Not authorized")]
    assert drv.health()["refused_tags"] == 2


async def test_connect_fails_fast_when_no_broker() -> None:
    drv = Driver(device(free_port(), [{"name": "t", "topic": "a/b"}], timeout_ms=300))
    t0 = time.monotonic()
    with pytest.raises(TemporaryError, match=r"^no connection to broker 127\.0\.0\.1:\d+ within 300 ms"):
        await drv.connect()
    assert time.monotonic() - t0 < 1.5 and not drv.connected
    with pytest.raises(TemporaryError, match=r"^not connected$"):
        await drv.read()
    await drv.close()


async def test_broker_outage_under_the_poller(tmp_path: Path, prefix: str) -> None:
    mq = Mosquitto(tmp_path / "mq", free_port())
    mq.start()
    dev = device(mq.port, [{"name": "temp", "topic": f"{prefix}/temp", "format": "json", "value": "$.v"},
                           {"name": "count", "topic": f"{prefix}/count", "format": "number", "type": "int32"}],
                 interval_ms=100, timeout_ms=300, breaker_open_ms=100)
    queue: asyncio.Queue[DeviceBatch] = asyncio.Queue(maxsize=1000)
    poller = DevicePoller(dev, queue)
    stop = asyncio.Event()
    seen: list[tuple[float, Point]] = []
    sent = 0

    async def publish_loop() -> None:
        nonlocal sent
        while not stop.is_set():
            with contextlib.suppress(OSError):  # the broker is down
                await publish(mq.port, (f"{prefix}/temp", f'{{"v": {sent}}}'), (f"{prefix}/count", str(sent)))
            sent += 1
            await asyncio.sleep(0.1)

    async def collect_loop() -> None:
        while True:
            batch = await queue.get()
            seen.extend((time.monotonic(), x) for x in batch.points)

    async def time_until(what: str, cond: Callable[[], bool], timeout: float) -> float:
        t0 = time.monotonic()
        await until(cond, timeout, 0.02, what=lambda: f"{what}: {seen[-6:]}")
        return time.monotonic() - t0

    def tags_since(t: float, quality: int) -> set[str]:
        return {x.tag for at, x in seen if at >= t and x.quality == quality}

    both = {"temp", "count"}
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(poller.poll_loop(stop), name="test.poll_loop")
            tg.create_task(publish_loop(), name="test.publish_loop")
            collector = tg.create_task(collect_loop(), name="test.collect_loop")
            await time_until("good values", lambda: tags_since(0, Quality.GOOD) == both, 5)
            mq.stop()  # for real: the process ends, the port closes
            down = time.monotonic()
            bad_in = await time_until("bad tags", lambda: tags_since(down, Quality.BAD) == both, 5)
            await asyncio.sleep(1.0)
            mq.start()  # same port
            up = time.monotonic()
            recovered_in = await time_until("values again", lambda: tags_since(up, Quality.GOOD) == both, 5)
            stop.set()
            collector.cancel()
    finally:
        stop.set()
        mq.stop()
    first_bad = min(at for at, x in seen if at >= down and x.quality == Quality.BAD)
    during = [x for at, x in seen if first_bad <= at < up]
    assert all(x.value is None and x.reason and x.quality == Quality.BAD for x in during), during
    assert {x.tag for x in during} == both and bad_in < 2 and recovered_in < 5
    broker = f"broker 127.0.0.1:{mq.port}"
    assert all(x.reason.startswith((f"lost connection to {broker}", f"no connection to {broker} within 300 ms"))
               for x in during if x.reason), {x.reason for x in during}
    counts = [(at, x.value) for at, x in seen if x.tag == "count" and isinstance(x.value, int)]
    before = max(v for at, v in counts if at < down)
    after = [v for at, v in counts if at >= up]
    assert after and min(after) > before  # new messages, published after the restart
    assert poller.driver.health()["connects"] >= 2  # the same poller and driver reconnected
