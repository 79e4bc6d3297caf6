"""Edge aggregates and alarm events: their topics and payloads.

Windows (tumbling, wall-clock aligned) and alarm events travel like batches: one message per device,
numbered ``(gw, run, seq)`` and confirmed by ingestion after its COMMIT (:mod:`proto.delivery`)::

    <root>/windows/v1/<enterprise>/<site>/<area>/<line>/<device>
    {"schema": 1, "gw": "gw-a", "run": 1, "seq": 7, "windows": [
        {"tag": "temp", "start": 1732370040000, "width": 60000, "count": 60, "min": 20.5, "max": 21.5,
         "avg": 21.0, "twa": 21.02, "first": 20.5, "last": 21.5, "q": 0, "complete": true}]}

    <root>/events/v1/<enterprise>/<site>/<area>/<line>/<device>
    {"schema": 1, "gw": "gw-a", "run": 1, "seq": 8, "events": [
        {"tag": "temp", "alarm": "high", "ts": 1732370041000, "active": true, "value": 90.5,
         "limit": 90.0, "severity": 700}]}

and each alarm's current state, retained (so a subscriber sees what is active at once)::

    <root>/alarms/v1/<enterprise>/<site>/<area>/<line>/<device>/<tag>/<alarm>
    {"schema": 1, "active": true, "ts": ..., "value": 90.5, "limit": 90.0, "severity": 700}

``q`` of a window is the worst quality among its readings; ``complete`` is false for a window the
gateway did not see from its start (it started or reloaded the tag inside it).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import orjson

from proto.errors import PayloadError, TopicError
from proto.points import MAX_TS_MS, SCHEMA_VERSION, _loads, brief, delivery_id, message_head
from proto.uns import BATCH_ROOT, DevicePath, validate_level

ALARM_KINDS = ("high", "low", "rate", "stuck")
WINDOWS_MARK = ("windows", "v1")
EVENTS_MARK = ("events", "v1")
ALARMS_MARK = ("alarms", "v1")


class Window(NamedTuple):
    tag: str
    start: int  #: ms since the epoch, a multiple of ``width``
    width: int  #: ms
    count: int  # type: ignore[assignment]  # readings in [start, start + width); shadows tuple.count, on purpose
    min: float
    max: float
    avg: float
    twa: float  #: time-weighted average (each reading holds until the next one)
    first: float
    last: float
    status: int = 0  #: the worst quality among the readings (an OPC UA status code)
    complete: bool = True


class AlarmEvent(NamedTuple):
    tag: str
    alarm: str  #: one of ALARM_KINDS
    ts: int
    active: bool  #: raised (True) or cleared (False)
    value: float | None
    limit: float | None  #: the limit crossed (stuck: the seconds without change)
    severity: int = 500


def _topic(mark: tuple[str, str], device: DevicePath, root: str) -> str:
    return f"{root}/{mark[0]}/{mark[1]}/{device.path}"


def windows_topic(device: DevicePath, root: str = BATCH_ROOT) -> str:
    return _topic(WINDOWS_MARK, device, root)


def events_topic(device: DevicePath, root: str = BATCH_ROOT) -> str:
    return _topic(EVENTS_MARK, device, root)


def alarm_state_topic(device: DevicePath, tag: str, alarm: str, root: str = BATCH_ROOT) -> str:
    validate_level(tag, what="tag")
    if alarm not in ALARM_KINDS:
        raise TopicError(f"alarm {alarm!r} is not one of {', '.join(ALARM_KINDS)}", topic=alarm)
    return f"{root}/{ALARMS_MARK[0]}/{ALARMS_MARK[1]}/{device.path}/{tag}/{alarm}"


def windows_filter(root: str = BATCH_ROOT) -> str:
    return f"{root}/{WINDOWS_MARK[0]}/{WINDOWS_MARK[1]}/#"


def events_filter(root: str = BATCH_ROOT) -> str:
    return f"{root}/{EVENTS_MARK[0]}/{EVENTS_MARK[1]}/#"


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


def encode_windows(windows: list[Window], *, seq: int | None = None, gateway: str | None = None,
                   run: int | None = None) -> bytes:
    body = message_head(seq=seq, gateway=gateway, run=run)
    body["windows"] = [{"tag": w.tag, "start": w.start, "width": w.width, "count": w.count, "min": _num(w.min),
                        "max": _num(w.max), "avg": _num(w.avg), "twa": _num(w.twa), "first": _num(w.first),
                        "last": _num(w.last), "q": w.status, "complete": w.complete} for w in windows]
    return orjson.dumps(body)


def encode_events(events: list[AlarmEvent], *, seq: int | None = None, gateway: str | None = None,
                  run: int | None = None) -> bytes:
    body = message_head(seq=seq, gateway=gateway, run=run)
    body["events"] = [{"tag": e.tag, "alarm": e.alarm, "ts": e.ts, "active": e.active, "value": e.value,
                       "limit": e.limit, "severity": e.severity} for e in events]
    return orjson.dumps(body)


def encode_alarm_state(e: AlarmEvent) -> bytes:
    return orjson.dumps({"schema": SCHEMA_VERSION, "active": e.active, "ts": e.ts, "value": e.value,
                         "limit": e.limit, "severity": e.severity})


class WindowBatch(NamedTuple):
    windows: list[Window]
    seq: int | None = None
    gateway: str | None = None
    run: int | None = None


class EventBatch(NamedTuple):
    events: list[AlarmEvent]
    seq: int | None = None
    gateway: str | None = None
    run: int | None = None


def _int(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise PayloadError(f"'{key}' must be an integer in {lo}..{hi}, got {brief(v)}")
    return v


def _float(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PayloadError(f"'{key}' must be a number or null, got {brief(v)}")
    return float(v)


def _tag(d: Any) -> tuple[dict[str, Any], str]:
    if type(d) is not dict:
        raise PayloadError(f"an entry must be a JSON object, got {type(d).__name__}")
    tag = d.get("tag")
    if type(tag) is not str:
        raise PayloadError(f"'tag' must be a string, got {brief(tag)}")
    validate_level(tag, what="tag")
    return d, tag


def decode_windows(payload: bytes) -> WindowBatch:
    doc = _loads(payload)
    raw = doc.get("windows")
    if not isinstance(raw, list):
        raise PayloadError("'windows' must be a list")
    out = []
    for entry in raw:
        d, tag = _tag(entry)
        width = _int(d, "width", 1, 86_400_000)
        start = _int(d, "start", 0, MAX_TS_MS)
        if start % width:
            raise PayloadError(f"window of {tag!r}: 'start' {start} is not a multiple of its width {width}")
        complete = d.get("complete", True)
        if not isinstance(complete, bool):
            raise PayloadError(f"'complete' must be a bool, got {brief(complete)}")
        out.append(Window(tag, start, width, _int(d, "count", 0, 2**31 - 1), _float(d, "min"), _float(d, "max"),
                          _float(d, "avg"), _float(d, "twa"), _float(d, "first"), _float(d, "last"),
                          _int(d, "q", 0, 0xFFFFFFFF), complete))
    gateway, run, seq = delivery_id(doc)
    return WindowBatch(out, seq, gateway, run)


def decode_events(payload: bytes) -> EventBatch:
    doc = _loads(payload)
    raw = doc.get("events")
    if not isinstance(raw, list):
        raise PayloadError("'events' must be a list")
    out = []
    for entry in raw:
        d, tag = _tag(entry)
        alarm = d.get("alarm")
        if alarm not in ALARM_KINDS:
            raise PayloadError(f"'alarm' must be one of {', '.join(ALARM_KINDS)}, got {brief(alarm)}")
        active = d.get("active")
        if not isinstance(active, bool):
            raise PayloadError(f"'active' must be a bool, got {brief(active)}")
        value, limit = _float(d, "value"), _float(d, "limit")
        out.append(AlarmEvent(tag, alarm, _int(d, "ts", 0, MAX_TS_MS), active,
                              None if math.isnan(value) else value, None if math.isnan(limit) else limit,
                              _int(d, "severity", 1, 1000)))
    gateway, run, seq = delivery_id(doc)
    return EventBatch(out, seq, gateway, run)


def parse_stream_topic(topic: str, root: str = BATCH_ROOT) -> tuple[str, DevicePath]:
    """``("batch" | "windows" | "events", device)`` of a topic of one of the three device streams;
    :class:`TopicError` if it is none of them."""
    for mark in (("batch", "v1"), WINDOWS_MARK, EVENTS_MARK):
        head = f"{root}/{mark[0]}/{mark[1]}/"
        if topic.startswith(head):
            return mark[0], DevicePath.parse(topic[len(head):])
    raise TopicError(f"topic {brief(topic)} is not a batch, windows or events topic under {root!r}", topic=topic)
