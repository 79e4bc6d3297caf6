"""The configuration wire contract (proto.config): topics, encode/decode round trips, precise errors."""

from __future__ import annotations

import orjson
import pytest

from proto import config as pc
from proto.errors import TopicError


def test_topics() -> None:
    assert pc.device_topic("$nexus", "press-1") == "$nexus/config/devices/press-1"
    assert pc.device_filter("$nexus") == "$nexus/config/devices/+"
    assert pc.sync_request_topic("$nexus") == "$nexus/config/sync/request"
    assert pc.sync_response_topic("$nexus", "gw-a") == "$nexus/config/sync/response/gw-a"
    assert pc.status_topic("site/$x", "gw-a") == "site/$x/status/gateways/gw-a"
    assert pc.last_level("$nexus", "$nexus/status/gateways/gw-a", "status/gateways") == "gw-a"
    with pytest.raises(TopicError):
        pc.last_level("$nexus", "$nexus/status/gateways/a/b", "status/gateways")
    with pytest.raises(TopicError, match="contains '\\+'"):
        pc.device_topic("$nexus", "a+b")
    assert pc.validate_control_root("$nexus/plant-1") == "$nexus/plant-1"
    for bad in ("", "$", "a//b", "a/#", "a/$b"):
        with pytest.raises(TopicError):
            pc.validate_control_root(bad)
    assert pc.HEARTBEAT_TIMEOUT == 3 * pc.HEARTBEAT_INTERVAL == 6.0


def test_round_trips() -> None:
    dev = pc.DeviceMessage(
        revision=7, device_id="press-1", gateway="gw-a", device={"id": "press-1", "tags": []}
    )
    assert orjson.loads(pc.encode_device(dev)) == {
        "schema": 1,
        "revision": 7,
        "device_id": "press-1",
        "gateway": "gw-a",
        "device": {"id": "press-1", "tags": []},
    }
    assert pc.decode_device(pc.encode_device(dev)) == dev
    tomb = pc.DeviceMessage(revision=8, device_id="press-1", gateway=None, device=None)
    assert pc.decode_device(pc.encode_device(tomb)) == tomb
    req = pc.SyncRequest(gateway="gw-a")
    assert pc.decode_sync_request(pc.encode_sync_request(req)) == req
    resp = pc.SyncResponse(revision=3, devices=[{"id": "a"}, {"id": "b"}])
    assert pc.decode_sync_response(pc.encode_sync_response(resp)) == resp
    st = pc.GatewayStatus(
        gateway="gw-a",
        online=True,
        capacity=50,
        applied_revision=3,
        devices=("a",),
        errors={"a": "timeout"},
        ts=1732370000123,
    )
    assert pc.decode_status(pc.encode_status(st)) == st
    assert orjson.loads(pc.offline_will("gw-a")) == {"schema": 1, "gateway": "gw-a", "online": False}
    assert pc.decode_status(pc.offline_will("gw-a")) == pc.GatewayStatus(gateway="gw-a", online=False)


@pytest.mark.parametrize(
    ("decode", "doc", "field", "text"),
    [
        (pc.decode_device, b"[1]", "", "expected a JSON object"),
        (pc.decode_device, b"{", "", "not valid JSON"),
        (pc.decode_device, {"schema": 2}, "schema", "unsupported schema 2"),
        (pc.decode_device, {"schema": 1, "revision": 1, "device": None}, "device_id", "is required"),
        (
            pc.decode_device,
            {"schema": 1, "revision": -1, "device_id": "a", "gateway": None, "device": None},
            "revision",
            "must be >= 0",
        ),
        (
            pc.decode_device,
            {"schema": 1, "revision": True, "device_id": "a", "gateway": None, "device": None},
            "revision",
            "got a bool",
        ),
        (
            pc.decode_device,
            {"schema": 1, "revision": 1, "device_id": "a", "gateway": "g", "device": None},
            "gateway",
            "tombstone",
        ),
        (
            pc.decode_device,
            {"schema": 1, "revision": 1, "device_id": "a", "gateway": None, "device": {"id": "b"}},
            "device.id",
            "differs",
        ),
        (pc.decode_sync_request, {"schema": 1, "gateway": "a/b"}, "gateway", "contains '/'"),
        (
            pc.decode_sync_response,
            {"schema": 1, "revision": 1, "devices": [{"x": 1}]},
            "devices[0]",
            "string 'id'",
        ),
        (pc.decode_status, {"schema": 1, "gateway": "g", "online": "yes"}, "online", "expected bool"),
        (pc.decode_status, {"schema": 1, "gateway": "g", "online": True, "capacity": -1}, "capacity", ">= 0"),
        (
            pc.decode_status,
            {"schema": 1, "gateway": "g", "online": True, "capacity": 1, "devices": [1]},
            "devices[0]",
            "device id string",
        ),
        (
            pc.decode_status,
            {
                "schema": 1,
                "gateway": "g",
                "online": True,
                "capacity": 1,
                "devices": [],
                "errors": {"a": 1},
                "ts": 0,
                "applied_revision": 0,
            },
            "errors.a",
            "message string",
        ),
        (
            pc.decode_status,
            {"schema": 1, "gateway": "g", "online": True, "capacity": 1, "devices": []},
            "ts",
            "is required",
        ),
    ],
)
def test_decode_errors_name_the_field(decode: object, doc: object, field: str, text: str) -> None:
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    with pytest.raises(pc.ConfigMessageError, match=text) as info:
        decode(payload)  # type: ignore[operator]
    assert info.value.field == field


def test_sequence_numbers_round_trip_and_default_to_zero() -> None:
    msg = pc.DeviceMessage(revision=3, device_id="d1", gateway="gw-a", device={"id": "d1"}, seq=1795455678959665689)
    assert pc.decode_device(pc.encode_device(msg)) == msg
    st = pc.GatewayStatus(gateway="gw-a", online=True, capacity=1, ts=5, config_seq=42)
    assert pc.decode_status(pc.encode_status(st)).config_seq == 42
    old = b'{"schema":1,"revision":1,"device_id":"d1","gateway":null,"device":null}'  # from before seq
    assert pc.decode_device(old).seq == 0
    with pytest.raises(pc.ConfigMessageError, match="seq: must be >= 0"):
        pc.decode_device(b'{"schema":1,"revision":1,"device_id":"d1","gateway":null,"device":null,"seq":-1}')
