"""MQTT payload mapping: from a message's payload to one tag's point, and from a written value to a payload.

Per tag: a payload ``format`` and, for JSON, a ``value`` path plus optional ``timestamp`` and
``quality`` paths (small JSON paths, parsed at config time). A payload that does not give a value of
the tag raises :class:`Mismatch`, which :func:`map_message` turns into a BAD point with the reason.
See README.md in this folder.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from gateway.errors import ConfigError, WriteRefused
from gateway.values import check_write
from proto.points import MAX_TS_MS, Point, Status

if TYPE_CHECKING:
    from gateway.config import TagConfig

FORMATS = ("auto", "json", "number", "bool", "string")
#: a payload that does not convert to the tag's type; the reason says precisely what did not convert
BAD_TYPE_MISMATCH = Status.BAD_TYPE_MISMATCH
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "on": True, "off": False}
_QUALITY_NAMES = {"good": Status.GOOD, "uncertain": Status.UNCERTAIN, "bad": Status.BAD}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PATH_STEP = re.compile(r"\.([^.\[\]'\"\s]+)|\[(-?\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


# --- paths and addresses -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class JsonPath:
    """A small JSON path: ``$`` (the whole document), ``$.data.temp``, ``$.values[2]``, ``temp``."""

    text: str
    steps: tuple[str | int, ...] = ()

    def get(self, doc: Any) -> Any:
        cur, at = doc, "$"
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(cur, list):
                    raise Mismatch(f"{self.text}: expected an array at {at}, got {_json_type(cur)}")
                if not -len(cur) <= step < len(cur):
                    raise Mismatch(f"{self.text}: index {step} out of range at {at} (array of {len(cur)})")
                cur, at = cur[step], f"{at}[{step}]"
            else:
                if not isinstance(cur, dict):
                    raise Mismatch(f"{self.text}: expected an object at {at}, got {_json_type(cur)}")
                if step not in cur:
                    raise Mismatch(f"{self.text}: no key {step!r} at {at}")
                cur, at = cur[step], f"{at}.{step}"
        return cur


def parse_path(text: str, key: str, where: str) -> JsonPath:
    """Parse a path at config time, so a typo is a startup error, not a stream of BAD points."""
    if not text:
        raise ConfigError(f"'{key}' path is empty", where=where)
    rest, offset = (text[1:], 1) if text.startswith("$") else ("." + text, -1)  # "temp" is "$.temp"
    steps: list[str | int] = []
    i = 0
    while i < len(rest):
        m = _PATH_STEP.match(rest, i)
        if not m:
            raise ConfigError(f"'{key}' path {text!r} is invalid at position {max(i + offset, 0)}: expected "
                              ".name, [index] or ['name']", where=where)
        steps.append(int(m[2]) if m[2] is not None else next(g for g in (m[1], m[3], m[4]) if g is not None))
        i = m.end()
    return JsonPath(text, tuple(steps))


@dataclass(frozen=True, kw_only=True)
class MqttAddress:
    topic: str  #: topic filter to subscribe (wildcards allowed)
    format: str  #: payload format, one of FORMATS
    value: JsonPath  #: where the value is in a JSON payload ($ = the whole payload)
    timestamp: JsonPath | None = None  #: source timestamp (epoch s/ms/us/ns or ISO 8601); None = arrival time
    quality: JsonPath | None = None  #: source quality; None = GOOD
    quality_map: tuple[tuple[str, int], ...] = ()  #: source quality value (as text) -> OPC UA status
    write_topic: str | None = None  #: where writes are published; None = read-only


def _quality_key(raw: Any) -> str:
    """Source quality values compared as text: TOML keys are strings, payload values may not be."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return raw if isinstance(raw, str) else orjson.dumps(raw).decode()


def parse_quality_map(d: dict[Any, Any], where: str) -> tuple[tuple[str, int], ...]:
    """A tag's ``quality_map`` (source quality value -> good/uncertain/bad or a status code), checked."""
    out = []
    for k, v in d.items():
        if isinstance(v, str) and v.lower() in _QUALITY_NAMES:
            out.append((_quality_key(k), int(_QUALITY_NAMES[v.lower()])))
        elif type(v) is int and 0 <= v <= 0xFFFFFFFF:
            out.append((_quality_key(k), v))
        else:
            raise ConfigError(f"'quality_map' value for {k!r} must be good/uncertain/bad or an OPC UA status "
                              f"code 0..0xFFFFFFFF, got {v!r}", where=where)
    return tuple(out)


# --- payload mapping ---------------------------------------------------------------------------

class Mismatch(Exception):
    """A payload that does not give a value of the tag: becomes a BAD point with this reason."""


def _json_type(v: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}
    return names.get(type(v), "null" if v is None else type(v).__name__)


def _short(v: Any, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else f"{text[:n]}...({len(text)} chars)"


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise Mismatch(f"{_short(text)} is not a number") from None


def decode(fmt: str, payload: bytes) -> Any:
    """The payload as a JSON document (json, auto) or a raw scalar (number, bool, string, non-JSON auto)."""
    if fmt in ("json", "auto"):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            if fmt == "json":
                raise Mismatch(f"payload is not JSON ({exc}): {_short(payload)}") from None
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        raise Mismatch(f"payload is not UTF-8 text: {_short(payload)}") from None
    if fmt == "number":
        try:
            return _number(text.strip())
        except Mismatch as exc:
            raise Mismatch(f"payload {exc}") from None
    if fmt == "bool":
        if text.strip().lower() not in _BOOLS:
            raise Mismatch(f"payload {_short(text)} is not a bool (true/false, 1/0, on/off)")
        return _BOOLS[text.strip().lower()]
    return text


def coerce(dtype: str, v: Any) -> Any:
    """``v`` as a raw value of canonical type ``dtype`` (the checks of a write); :class:`Mismatch` says why not."""
    if v is None:
        raise Mismatch("value is null")
    if dtype == "string":
        return v if isinstance(v, str) else orjson.dumps(v).decode()
    if isinstance(v, str):  # numbers and bools as text, as many devices send them
        v = _BOOLS.get(v.strip().lower(), v) if dtype == "bool" else _number(v.strip())
    try:
        return check_write(dtype, v)
    except WriteRefused as exc:
        raise Mismatch(str(exc)) from None


def _epoch_ms(raw: Any, path: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise Mismatch(f"{path}: expected epoch time or ISO 8601, got {_json_type(raw)} {_short(raw)}")
    size = abs(raw)
    return round(raw * (1000 if size < 1e11 else 1 if size < 1e14 else 1e-3 if size < 1e17 else 1e-6))


def timestamp_ms(raw: Any, path: str) -> int:
    """Epoch seconds, ms, us or ns (told apart by size: s < 1e11 <= ms < 1e14 <= us < 1e17 <= ns), as a
    number or text, or ISO 8601 (no offset = UTC)."""
    if isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            try:
                dt = datetime.fromisoformat(raw)
            except ValueError:
                raise Mismatch(f"{path}: {_short(raw)} is neither epoch time nor ISO 8601") from None
            ms = ((dt if dt.tzinfo else dt.replace(tzinfo=UTC)) - _EPOCH) // timedelta(milliseconds=1)
        else:
            ms = _epoch_ms(number, path)
    else:
        ms = _epoch_ms(raw, path)
    if not 0 <= ms <= MAX_TS_MS:
        raise Mismatch(f"{path}: timestamp {_short(raw)} is outside 1970..2255")
    return ms


def source_status(addr: MqttAddress, raw: Any) -> int:
    """The OPC UA status a source quality value means (``quality_map``, else a code or good/uncertain/bad)."""
    path = addr.quality.text if addr.quality else "quality"
    if addr.quality_map:
        key = _quality_key(raw)
        for k, status in addr.quality_map:
            if k == key:
                return status
        raise Mismatch(f"{path}: quality {_short(raw)} is not in quality_map")
    if type(raw) is int and 0 <= raw <= 0xFFFFFFFF:
        return raw
    if isinstance(raw, str) and raw.lower() in _QUALITY_NAMES:
        return _QUALITY_NAMES[raw.lower()]
    if isinstance(raw, bool):
        return Status.GOOD if raw else Status.BAD
    raise Mismatch(f"{path}: quality {_short(raw)} is not a status code or good/uncertain/bad (add a quality_map)")


def map_message(tag: TagConfig, doc: Any, now_ms: int) -> Point:
    """One tag's point from a decoded payload (``doc`` may be the Mismatch the decoding raised)."""
    a: MqttAddress = tag.address
    if isinstance(doc, Mismatch):
        return Point(tag.name, None, now_ms, BAD_TYPE_MISMATCH, tag.unit, str(doc))
    try:
        raw = a.value.get(doc)
        try:
            value = coerce(tag.type, raw)
        except Mismatch as exc:  # name the path: one payload often feeds several tags
            raise Mismatch(f"{a.value.text}: {exc}" if a.value.steps else str(exc)) from None
        ts = timestamp_ms(a.timestamp.get(doc), a.timestamp.text) if a.timestamp else now_ms
        raw_quality = a.quality.get(doc) if a.quality else None
        status = source_status(a, raw_quality) if a.quality else Status.GOOD
    except Mismatch as exc:
        return Point(tag.name, None, now_ms, BAD_TYPE_MISMATCH, tag.unit, str(exc))
    reason = None if status == Status.GOOD else f"source quality {_short(raw_quality)}"
    return Point(tag.name, value, ts, status, tag.unit, reason)


def encode_write(addr: MqttAddress, value: Any) -> bytes:
    """JSON formats: the value nested under the value path's keys; raw formats: its text."""
    if addr.format in ("json", "auto"):
        body = value
        for step in reversed(addr.value.steps):
            body = {step: body}
        return orjson.dumps(body)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    return str(value).encode()

