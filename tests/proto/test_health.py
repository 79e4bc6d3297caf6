"""proto.health: the per-device health report's topic and payload; a round trip of every field, and the
refusal, naming the field, of every payload off the contract."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proto.errors import ContractError, TopicError
from proto.health import (
    MAX_ERROR_CHARS,
    MAX_HEALTH_BYTES,
    DeviceHealth,
    HealthMessageError,
    Latency,
    decode_health,
    encode_health,
    health_device,
    health_filter,
    health_topic,
)

FULL = DeviceHealth(
    device_id="press-1", gateway="gw-a", path="acme/berlin/stamping/line-1/press-1", state="polling",
    connected=False, breaker="open", consecutive_errors=4, last_error="connect to 127.0.0.1:502 refused",
    last_error_ts=1732370000100, last_good_ts=1732369990000,
    latency=Latency(p50=1.25, p99=4.5, samples=120, window_s=60.0), polls=5120, errors=7,
    ts=1732370000456, heartbeat_ms=10_000,
)


def doc(**changes: Any) -> bytes:
    d = orjson.loads(encode_health(FULL))
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return orjson.dumps(d)


def test_topics() -> None:
    assert health_topic("$nexus", "press-1") == "$nexus/status/devices/press-1"
    assert health_filter("$t/x") == "$t/x/status/devices/+"
    assert health_device("$nexus", "$nexus/status/devices/press-1") == "press-1"
    for bad in ("$nexus/status/devices/", "$nexus/status/devices/a/b", "$nexus/status/gateways/a"):
        with pytest.raises(TopicError):
            health_device("$nexus", bad)
    with pytest.raises(TopicError):
        health_topic("$nexus", "a/b")


def test_round_trip() -> None:
    assert decode_health(encode_health(FULL)) == FULL
    minimal = DeviceHealth(device_id="d", gateway="g", state="offline", connected=False, breaker="closed",
                           ts=0, heartbeat_ms=1)
    assert decode_health(encode_health(minimal)) == minimal
    wire = orjson.loads(encode_health(FULL))
    assert wire["schema"] == 1 and wire["latency_ms"] == {"p50": 1.25, "p99": 4.5, "samples": 120, "window_s": 60.0}
    assert "path" not in orjson.loads(encode_health(minimal))
    # unknown keys are ignored: a later field needs no new schema
    assert decode_health(doc(added_later=[1, 2])) == FULL
    # integers where a number is due
    assert decode_health(doc(latency_ms={"p50": 1, "p99": 2, "samples": 1, "window_s": 60})).latency == \
        Latency(p50=1.0, p99=2.0, samples=1, window_s=60.0)


def test_error_text_is_bounded() -> None:
    long = DeviceHealth(device_id="d", gateway="g", state="polling", connected=False, breaker="closed", ts=1,
                        heartbeat_ms=1, last_error="x" * 5000)
    got = decode_health(encode_health(long)).last_error
    assert got is not None and len(got) == MAX_ERROR_CHARS and got.endswith("…")
    with pytest.raises(HealthMessageError) as info:
        decode_health(doc(last_error="y" * (MAX_ERROR_CHARS + 1)))
    assert info.value.field == "last_error"


@pytest.mark.parametrize(("payload", "field"), [
    (doc(schema=2), "schema"), (doc(schema=1.0), "schema"), (doc(schema=True), "schema"), (doc(schema=...), "schema"),
    (doc(device_id=...), "device_id"), (doc(device_id="a/b"), "device_id"), (doc(device_id=""), "device_id"),
    (doc(device_id=7), "device_id"), (doc(gateway="+"), "gateway"), (doc(gateway=...), "gateway"),
    (doc(state="running"), "state"), (doc(state=...), "state"), (doc(connected="yes"), "connected"),
    (doc(connected=1), "connected"), (doc(breaker="shut"), "breaker"), (doc(polls=-1), "polls"),
    (doc(polls=True), "polls"), (doc(polls=1.5), "polls"), (doc(errors=...), "errors"), (doc(ts=...), "ts"),
    (doc(ts=-5), "ts"), (doc(heartbeat_ms=0), "heartbeat_ms"), (doc(last_good_ts="today"), "last_good_ts"),
    (doc(last_error_ts=2**60), "last_error_ts"), (doc(last_error=5), "last_error"),
    (doc(path="acme/berlin"), "path"), (doc(path="a/b/c/d/e+"), "path"),
    (doc(consecutive_errors=-1), "consecutive_errors"), (doc(latency_ms=[1, 2]), "latency_ms"),
    (doc(latency_ms={"p50": 5, "p99": 1, "samples": 3, "window_s": 60}), "latency_ms.p50"),
    (doc(latency_ms={"p50": -1, "p99": 1, "samples": 3, "window_s": 60}), "latency_ms.p50"),
    (doc(latency_ms={"p50": 1, "p99": 2, "samples": 0, "window_s": 60}), "latency_ms.samples"),
    (doc(latency_ms={"p50": 1, "p99": 2, "samples": 3}), "latency_ms.window_s"),
    (doc(latency_ms={"p50": 1, "p99": "2", "samples": 3, "window_s": 1}), "latency_ms.p99"),
])
def test_refused_with_the_field(payload: bytes, field: str) -> None:
    with pytest.raises(HealthMessageError) as info:
        decode_health(payload)
    assert info.value.field == field, info.value


@pytest.mark.parametrize("payload", [b"", b"{", b"[]", b"null", b'"x"', b"{}", b" " * (MAX_HEALTH_BYTES + 1)])
def test_refused_whole(payload: bytes) -> None:
    with pytest.raises(ContractError):
        decode_health(payload)
