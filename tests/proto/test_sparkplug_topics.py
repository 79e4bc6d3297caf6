"""Sparkplug topics (build and parse, one rule at a time) and the host's STATE payloads: 3.0 JSON
and the 2.x plain text, told apart."""

from __future__ import annotations

import orjson
import pytest

from proto.errors import ContractError, TopicError
from proto.sparkplug.errors import SparkplugError
from proto.sparkplug.topics import (
    MAX_ID_BYTES,
    HostState,
    HostTopic,
    MessageType,
    Topic,
    build_topic,
    decode_state,
    encode_state,
    legacy_state_topic,
    node_filter,
    parse_topic,
    state_topic,
    validate_id,
)

NODE_TYPES = ["NBIRTH", "NDEATH", "NDATA", "NCMD"]
DEVICE_TYPES = ["DBIRTH", "DDEATH", "DDATA", "DCMD"]


@pytest.mark.parametrize("mtype", NODE_TYPES)
def test_edge_node_topics(mtype: str) -> None:
    topic = build_topic("Plant A", mtype, "gw-1")
    assert topic == f"spBv1.0/Plant A/{mtype}/gw-1"
    assert parse_topic(topic) == Topic("Plant A", MessageType(mtype), "gw-1", None)
    assert parse_topic(topic).topic == topic
    assert not MessageType(mtype).is_device


@pytest.mark.parametrize("mtype", DEVICE_TYPES)
def test_device_topics(mtype: str) -> None:
    topic = build_topic("g", MessageType(mtype), "gw-1", "press-1")
    assert topic == f"spBv1.0/g/{mtype}/gw-1/press-1"
    assert parse_topic(topic) == Topic("g", MessageType(mtype), "gw-1", "press-1")
    assert MessageType(mtype).is_device


def test_state_topics_3_0_and_2_x() -> None:
    assert state_topic("scada-1") == "spBv1.0/STATE/scada-1"
    assert parse_topic("spBv1.0/STATE/scada-1") == HostTopic("scada-1", legacy=False)
    assert legacy_state_topic("scada-1") == "STATE/scada-1"
    assert parse_topic("STATE/scada-1") == HostTopic("scada-1", legacy=True)
    assert HostTopic("h", legacy=True).topic == "STATE/h"
    assert node_filter() == "spBv1.0/#"
    assert node_filter("g") == "spBv1.0/g/#"


@pytest.mark.parametrize(("args", "match"), [
    (("g", "DDATA", "n"), "DDATA topics need a device_id"),
    (("g", "NDATA", "n", "d"), "NDATA topics have no device_id"),
    (("g", "XDATA", "n"), "'XDATA' is not a Sparkplug message type"),
    (("g", "ndata", "n"), "is not a Sparkplug message type"),
    (("g+", "NDATA", "n"), "group_id 'g\\+' contains '\\+'"),
    (("g", "NDATA", "n#"), "edge_node_id 'n#' contains '#'"),
    (("g", "DDATA", "n", "a/b"), "device_id 'a/b' contains '/'"),
    (("", "NDATA", "n"), "group_id is empty"),
    (("g", "NDATA", "n\x00"), "control character"),
    (("g", "NDATA", "n\x1b"), "control character"),
    (("g", "NDATA", "\ud800"), "lone surrogate"),
    (("g", "NDATA", "x" * (MAX_ID_BYTES + 1)), f"longer than {MAX_ID_BYTES} bytes"),
    (("g", "NDATA", "ü" * (MAX_ID_BYTES // 2 + 1)), f"longer than {MAX_ID_BYTES} bytes"),
])
def test_building_a_topic_checks_every_rule(args: tuple[str, ...], match: str) -> None:
    with pytest.raises(TopicError, match=match) as err:
        build_topic(*args)
    assert len(str(err.value)) < 300


@pytest.mark.parametrize(("topic", "match"), [
    ("spBv1.0/g/DDATA/n", "DDATA topics end with a device_id"),
    ("spBv1.0/g/NDATA/n/d", "NDATA topics have no device_id"),
    ("spBv1.0/g/NDATA", "has 3 levels"),
    ("spBv1.0/g/DDATA/n/d/x", "has 6 levels"),
    ("spBv1.0/g/BIRTH/n", "'BIRTH' is not a Sparkplug message type"),
    ("spBv2.0/g/NDATA/n", "not in the spBv1.0 namespace"),
    ("nexus/batch/v1/a/b/c/d/e", "not in the spBv1.0 namespace"),
    ("spBv1.0//NDATA/n", "group_id is empty"),
    ("spBv1.0/g/NDATA/", "edge_node_id is empty"),
    ("spBv1.0/g/DDATA/n/", "device_id is empty"),
    ("spBv1.0/STATE/", "host_id is empty"),
    ("spBv1.0/g/NDATA/+", "contains '\\+'"),
    ("STATE/a/b", "not in the spBv1.0 namespace"),
    ("spBv1.0/g/NDATA/" + "x" * 5000, "too long for a Sparkplug topic"),
])
def test_parsing_a_topic_checks_every_rule(topic: str, match: str) -> None:
    with pytest.raises(TopicError, match=match) as err:
        parse_topic(topic)
    assert len(str(err.value)) < 300
    assert isinstance(err.value, ContractError)


def test_ids_may_hold_what_the_specification_allows() -> None:
    for ok in ("Plant A", "$line", "ä-1", "a.b:c", "x" * MAX_ID_BYTES, "STATE"):
        assert validate_id(ok) == ok


def test_state_payload_3_0_json() -> None:
    data = encode_state(True, 1732370000123)
    assert orjson.loads(data) == {"online": True, "timestamp": 1732370000123}
    assert decode_state(data) == HostState(True, 1732370000123, legacy=False)
    assert decode_state(b'{"online": false, "timestamp": 5, "extra": 1}') == HostState(False, 5)


def test_state_payload_2_x_text_is_recognised_as_such() -> None:
    assert decode_state(b"ONLINE") == HostState(True, None, legacy=True)
    assert decode_state(b"OFFLINE") == HostState(False, None, legacy=True)
    assert decode_state(b"OFFLINE\n") == HostState(False, None, legacy=True)


@pytest.mark.parametrize(("payload", "match"), [
    (b"online", "must be JSON or ONLINE/OFFLINE"),
    (b"", "must be JSON or ONLINE/OFFLINE"),
    (b"[true, 5]", "must be a JSON object, got list"),
    (b'{"online": "true", "timestamp": 5}', "'online' must be true or false"),
    (b'{"online": 1, "timestamp": 5}', "'online' must be true or false"),
    (b'{"online": true}', "'timestamp' must be Unix milliseconds, got None"),
    (b'{"online": true, "timestamp": 1.5}', "'timestamp' must be Unix milliseconds"),
    (b'{"online": true, "timestamp": -1}', "'timestamp' must be Unix milliseconds"),
    (b'{"online": true, "timestamp": "5"}', "'timestamp' must be Unix milliseconds"),
    (b" " * 2000, "larger than 1024"),
])
def test_bad_state_payloads(payload: bytes, match: str) -> None:
    with pytest.raises(SparkplugError, match=match):
        decode_state(payload)


def test_encode_state_checks_its_arguments() -> None:
    with pytest.raises(SparkplugError, match="online must be a bool"):
        encode_state(1, 5)  # type: ignore[arg-type]
    with pytest.raises(SparkplugError, match="timestamp must be Unix milliseconds"):
        encode_state(True, -5)
