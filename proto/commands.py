"""Write commands: ``<root>/cmd/<device>/<tag>/set`` and the answer on ``.../response``.

Request body (JSON object): ``{"value": <bool|number|string>, "request_id": "<optional, echoed>"}``.
Response body: ``{"schema": 1, "request_id": ..., "ok": true, "value": <written>, "ts": <ms>}`` or
``{"schema": 1, "request_id": ..., "ok": false, "error": "<why>", "ts": <ms>}``.
``root`` is the control root, ``$nexus`` by default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from proto.errors import PayloadError

SCHEMA = 1


def set_filter(root: str) -> str:
    """Subscription matching every write request under ``root``."""
    return f"{root}/cmd/+/+/set"


def set_topic(root: str, device: str, tag: str) -> str:
    return f"{root}/cmd/{device}/{tag}/set"


def response_topic(root: str, device: str, tag: str) -> str:
    return f"{root}/cmd/{device}/{tag}/response"


def response_filter(root: str) -> str:
    """Subscription matching every write response under ``root``."""
    return f"{root}/cmd/+/+/response"


def is_response_topic(root: str, topic: str) -> bool:
    return topic.startswith(f"{root}/cmd/") and topic.endswith("/response")


def parse_set_topic(root: str, topic: str) -> tuple[str, str] | None:
    """(device, tag) of a request topic, or None if ``topic`` is not one."""
    head = f"{root}/cmd/"
    if not topic.startswith(head) or not topic.endswith("/set"):
        return None
    parts = topic[len(head):-len("/set")].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


@dataclass(frozen=True, slots=True)
class WriteRequest:
    value: Any
    request_id: str | None = None


def encode_request(value: Any, request_id: str | None = None) -> bytes:
    """The body of a write request; :class:`PayloadError` if ``value`` is not a JSON scalar."""
    if value is not None and not isinstance(value, bool | int | float | str):
        raise PayloadError(f"a write value must be a bool, number or string, not {type(value).__name__}")
    body: dict[str, Any] = {"value": value}
    if request_id is not None:
        body["request_id"] = request_id
    return orjson.dumps(body)


def decode_request(payload: bytes) -> WriteRequest:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"write request is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError('write request must be a JSON object like {"value": 42}')
    if "value" not in doc:
        raise PayloadError("write request has no 'value'")
    rid = doc.get("request_id")
    if rid is not None and not isinstance(rid, str | int):
        raise PayloadError("'request_id' must be a string or an integer")
    extra = set(doc) - {"value", "request_id"}
    if extra:
        raise PayloadError(f"write request has unknown key(s) {sorted(extra)}")
    return WriteRequest(doc["value"], None if rid is None else str(rid))


def encode_response(request_id: str | None, *, error: str | None = None, value: Any = None,
                    ts: int | None = None) -> bytes:
    body: dict[str, Any] = {"schema": SCHEMA, "request_id": request_id, "ok": error is None,
                            "ts": ts or int(time.time() * 1000)}
    if error is None:
        body["value"] = value
    else:
        body["error"] = error
    return orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class WriteResponse:
    """The gateway's answer to one write request."""

    request_id: str | None
    ok: bool
    ts: int  #: when the gateway answered, ms since the epoch
    value: Any = None  #: what was written (ok)
    error: str | None = None  #: why not (not ok)

    def doc(self) -> dict[str, Any]:
        """The answer as the gateway sent it (for the REST API)."""
        body: dict[str, Any] = {"schema": SCHEMA, "request_id": self.request_id, "ok": self.ok, "ts": self.ts}
        if self.ok:
            body["value"] = self.value
        else:
            body["error"] = self.error
        return body


def decode_response(payload: bytes) -> WriteResponse:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"write response is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        raise PayloadError("write response must be an object with a boolean 'ok'")
    rid, ts, error = doc.get("request_id"), doc.get("ts"), doc.get("error")
    if rid is not None and not isinstance(rid, str | int):
        raise PayloadError("'request_id' must be a string or an integer")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise PayloadError("write response has no integer 'ts'")
    if not doc["ok"] and not isinstance(error, str):
        raise PayloadError("a failed write response needs a string 'error'")
    return WriteResponse(None if rid is None else str(rid), doc["ok"], ts, doc.get("value"),
                         error if not doc["ok"] else None)
