"""Per-device health, published by the gateway that polls the device (retained), read by gateway_core.

Topic, beside the gateways' own statuses under the control root (default ``$nexus``)::

    <root>/status/devices/<device_id>      gateway -> anyone, retained, QoS 1
        {"schema": 1, "device_id": "press-1", "gateway": "gw-a", "path": "acme/berlin/stamping/line-1/press-1",
         "state": "polling", "connected": true, "breaker": "closed", "consecutive_errors": 0,
         "last_error": null, "last_error_ts": null, "last_good_ts": 1732370000123,
         "latency_ms": {"p50": 1.8, "p99": 4.2, "samples": 120, "window_s": 60.0},
         "polls": 5120, "errors": 3, "ts": 1732370000456, "heartbeat_ms": 10000}
    same, zero-length                      the device left that gateway (removed, moved): nothing

``state``: ``polling`` (the gateway polls it), ``failed`` (its task ended; the gateway restarts it, the
reason in ``last_error``), ``offline`` (the gateway stopped cleanly). A report is sent on change and
at least every ``heartbeat_ms``: a reader treats one older than :data:`STALE_HEARTBEATS` heartbeats as
stale (the gateway died; its will is its own status topic, not this one). Unknown keys are ignored, so
a field can be added without a new schema; another ``schema`` is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from proto.errors import PayloadError, TopicError
from proto.uns import validate_level

HEALTH_SCHEMA = 1
STATES = ("polling", "failed", "offline")
BREAKER_STATES = ("closed", "open", "half_open")
MAX_ERROR_CHARS = 400  #: longest ``last_error``; the encoder cuts longer texts, the decoder refuses them
MAX_HEALTH_BYTES = 8192  #: a larger payload is refused before it is parsed
STALE_HEARTBEATS = 3  #: a report older than this many heartbeats is stale
MAX_COUNT = 2**63 - 1
_MAX_MS = 253402300799999  #: 9999-12-31T23:59:59.999Z, as in proto.types


class HealthMessageError(PayloadError):
    """A health message breaks the contract; ``field`` names the offending key."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


def health_topic(root: str, device_id: str) -> str:
    return f"{root}/status/devices/{validate_level(device_id, what='device id')}"


def health_filter(root: str) -> str:
    return f"{root}/status/devices/+"


def health_device(root: str, topic: str) -> str:
    """The device id of a health topic; :class:`TopicError` if ``topic`` is not one."""
    head = f"{root}/status/devices/"
    rest = topic[len(head):] if topic.startswith(head) else ""
    if not rest or "/" in rest:
        raise TopicError(f"topic {topic[:200]!r} is not {head}<device id>", topic=topic[:200])
    return rest


@dataclass(frozen=True, kw_only=True, slots=True)
class Latency:
    """Poll latency (one successful read, ms) over the gateway's recent window."""

    p50: float
    p99: float
    samples: int  #: successful polls in the window
    window_s: float  #: the window's length, seconds


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceHealth:
    device_id: str
    gateway: str  #: the gateway that polls it (sent this)
    state: str  #: one of :data:`STATES`
    connected: bool  #: the device answered the last attempt
    breaker: str  #: one of :data:`BREAKER_STATES`
    ts: int  #: when the report was made, gateway clock, Unix ms
    heartbeat_ms: int  #: the gateway reports at least this often
    path: str | None = None  #: the device's UNS path (enterprise/site/area/line/device)
    consecutive_errors: int = 0  #: failed attempts since the last success
    last_error: str | None = None  #: the newest failure's text (at most MAX_ERROR_CHARS)
    last_error_ts: int | None = None  #: its time, Unix ms
    last_good_ts: int | None = None  #: the newest successful read, Unix ms
    latency: Latency | None = None  #: None: no successful poll in the window
    polls: int = 0  #: successful polls since the device started on this gateway
    errors: int = 0  #: failed connects and reads since then


def bounded_error(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def encode_health(h: DeviceHealth) -> bytes:
    doc: dict[str, Any] = {
        "schema": HEALTH_SCHEMA, "device_id": h.device_id, "gateway": h.gateway, "state": h.state,
        "connected": h.connected, "breaker": h.breaker, "consecutive_errors": h.consecutive_errors,
        "last_error": None if h.last_error is None else bounded_error(h.last_error),
        "last_error_ts": h.last_error_ts, "last_good_ts": h.last_good_ts,
        "latency_ms": None if h.latency is None else {
            "p50": round(h.latency.p50, 3), "p99": round(h.latency.p99, 3), "samples": h.latency.samples,
            "window_s": h.latency.window_s},
        "polls": h.polls, "errors": h.errors, "ts": h.ts, "heartbeat_ms": h.heartbeat_ms,
    }
    if h.path is not None:
        doc["path"] = h.path
    return orjson.dumps(doc)


def _get(doc: dict[str, Any], key: str, typ: type, *, optional: bool = False, within: str = "") -> Any:
    name = f"{within}.{key}" if within else key
    if key not in doc or doc[key] is None:
        if optional:
            return None
        raise HealthMessageError("is required", field=name)
    value = doc[key]
    if typ is not bool and isinstance(value, bool):
        raise HealthMessageError(f"expected {typ.__name__}, got a bool", field=name)
    if typ is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, typ):
        raise HealthMessageError(f"expected {typ.__name__}, got {type(value).__name__}", field=name)
    return value


def _count(doc: dict[str, Any], key: str, *, low: int = 0, high: int = MAX_COUNT, optional: bool = False) -> Any:
    value = _get(doc, key, int, optional=optional)
    if value is not None and not low <= value <= high:
        raise HealthMessageError(f"must be {low}..{high}, got {value}", field=key)
    return value


def _one_of(doc: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value: str = _get(doc, key, str)
    if value not in allowed:
        raise HealthMessageError(f"must be one of {', '.join(allowed)}, got {value[:32]!r}", field=key)
    return value


def _id(doc: dict[str, Any], key: str) -> str:
    value: str = _get(doc, key, str)
    try:
        validate_level(value, what=key)
    except ValueError as exc:
        raise HealthMessageError(str(exc), field=key) from exc
    return value


def _latency(doc: dict[str, Any]) -> Latency | None:
    raw = _get(doc, "latency_ms", dict, optional=True)
    if raw is None:
        return None
    values = {}
    for key in ("p50", "p99", "window_s"):
        v = _get(raw, key, float, within="latency_ms")
        if not math.isfinite(v) or v < 0:
            raise HealthMessageError(f"must be a finite number >= 0, got {v}", field=f"latency_ms.{key}")
        values[key] = v
    if values["p50"] > values["p99"]:
        raise HealthMessageError(f"p50 {values['p50']} is above p99 {values['p99']}", field="latency_ms.p50")
    samples = _get(raw, "samples", int, within="latency_ms")
    if not 1 <= samples <= MAX_COUNT:
        raise HealthMessageError(f"must be >= 1, got {samples}", field="latency_ms.samples")
    return Latency(p50=values["p50"], p99=values["p99"], samples=samples, window_s=values["window_s"])


def decode_health(payload: bytes | str) -> DeviceHealth:
    """A health report; :class:`HealthMessageError` naming the field for anything off the contract."""
    if len(payload) > MAX_HEALTH_BYTES:
        raise HealthMessageError(f"{len(payload)} bytes, at most {MAX_HEALTH_BYTES}")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise HealthMessageError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise HealthMessageError(f"expected a JSON object, got {type(doc).__name__}")
    schema = doc.get("schema")
    if type(schema) is not int or schema != HEALTH_SCHEMA:
        raise HealthMessageError(f"unsupported schema {str(schema)[:16]!r}; expected {HEALTH_SCHEMA}",
                                 field="schema")
    path = _get(doc, "path", str, optional=True)
    if path is not None:
        levels = path.split("/")
        try:
            if len(levels) != 5:
                raise ValueError(f"expected 5 UNS levels, got {len(levels)}")
            for level in levels:
                validate_level(level, what="path level")
        except ValueError as exc:
            raise HealthMessageError(str(exc), field="path") from exc
    last_error = _get(doc, "last_error", str, optional=True)
    if last_error is not None and len(last_error) > MAX_ERROR_CHARS:
        raise HealthMessageError(f"{len(last_error)} characters, at most {MAX_ERROR_CHARS}", field="last_error")
    return DeviceHealth(
        device_id=_id(doc, "device_id"), gateway=_id(doc, "gateway"), path=path,
        state=_one_of(doc, "state", STATES), connected=_get(doc, "connected", bool),
        breaker=_one_of(doc, "breaker", BREAKER_STATES),
        consecutive_errors=_count(doc, "consecutive_errors", optional=True) or 0,
        last_error=last_error, last_error_ts=_count(doc, "last_error_ts", high=_MAX_MS, optional=True),
        last_good_ts=_count(doc, "last_good_ts", high=_MAX_MS, optional=True), latency=_latency(doc),
        polls=_count(doc, "polls"), errors=_count(doc, "errors"), ts=_count(doc, "ts", high=_MAX_MS),
        heartbeat_ms=_count(doc, "heartbeat_ms", low=1, high=86_400_000),
    )
