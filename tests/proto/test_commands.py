"""The write-command contract both sides use: gateway_core encodes requests and decodes answers,
the gateway decodes requests and encodes answers, all through proto.commands."""

from __future__ import annotations

import orjson
import pytest

from proto.commands import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    is_response_topic,
    parse_set_topic,
    response_filter,
    response_topic,
    set_topic,
)
from proto.errors import PayloadError


@pytest.mark.parametrize("value", [True, 0, -7, 2**64 - 1, 12.5, "ABS", None])
def test_request_round_trip(value: object) -> None:
    req = decode_request(encode_request(value, "r-1"))
    assert (req.value, req.request_id) == (value, "r-1")
    assert decode_request(encode_request(value)).request_id is None


def test_request_values_are_scalars() -> None:
    with pytest.raises(PayloadError, match="must be a bool, number or string, not list"):
        encode_request([1, 2])


def test_response_round_trip_and_doc() -> None:
    ok = decode_response(encode_response("r-1", value=123.5, ts=1700000000000))
    assert (ok.ok, ok.request_id, ok.value, ok.error, ok.ts) == (True, "r-1", 123.5, None, 1700000000000)
    assert ok.doc() == orjson.loads(encode_response("r-1", value=123.5, ts=1700000000000))
    bad = decode_response(encode_response(None, error="tag 'x' is read-only", ts=5))
    assert (bad.ok, bad.request_id, bad.error) == (False, None, "tag 'x' is read-only")
    assert bad.doc() == {"schema": 1, "request_id": None, "ok": False, "error": "tag 'x' is read-only", "ts": 5}


@pytest.mark.parametrize(("payload", "message"), [
    (b"{", "not JSON"),
    (b'{"ok": "yes", "ts": 1}', "boolean 'ok'"),
    (b'{"ok": true}', "integer 'ts'"),
    (b'{"ok": false, "ts": 1}', "string 'error'"),
    (b'{"ok": true, "ts": 1, "request_id": [1]}', "'request_id' must be"),
])
def test_bad_responses_are_payload_errors(payload: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_response(payload)


def test_topics() -> None:
    assert parse_set_topic("$nexus", set_topic("$nexus", "plc-1", "speed")) == ("plc-1", "speed")
    topic = response_topic("$nexus", "plc-1", "speed")
    assert is_response_topic("$nexus", topic) and not is_response_topic("$nexus", set_topic("$nexus", "p", "t"))
    assert response_filter("$nexus") == "$nexus/cmd/+/+/response"
