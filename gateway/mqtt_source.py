"""MQTT source driver: values that devices already publish on a (foreign) broker, mapped to tags.

Why a driver and not a bridge: collectors and edge boxes (ParX, Tasmota, vendor gateways) publish
topics and payload shapes of their own. Mapping them here, per tag, gives their values the same path
as PLC values: canonical types, transforms, OPC UA status, UNS, historian. Per tag: a topic filter,
a payload ``format``, and for JSON a ``value`` path plus optional ``timestamp`` / ``quality`` paths
(see docs/drivers/mqtt.md). Several tags may share a topic.

It is a subscription driver: messages are converted when they arrive and buffered (bounded) until
the poller's next :meth:`Driver.read`. A payload that does not convert is a BAD point with the
reason, counted; it never stops the driver. Reconnecting is the poller's call (:meth:`connect`),
so the client's own retry is parked.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from gateway import driver as base
from gateway.config import choice, get, int_in, parse_type
from gateway.errors import ConfigError, PermanentError, TemporaryError, WriteRefused
from gateway.values import check_write
from nexus.common import MqttSettings
from nexus.mqtt import Message, MqttClient, MqttError
from proto.points import MAX_TS_MS, Point, Status

if TYPE_CHECKING:
    from gateway.config import DeviceConfig, TagConfig

log = logging.getLogger("gateway.mqtt_source")

FORMATS = ("auto", "json", "number", "bool", "string")
DEVICE_KEYS = frozenset({"host", "port", "username", "password", "client_id", "qos", "keepalive", "buffer_size"})
TAG_KEYS = frozenset({"type", "topic", "format", "value", "timestamp", "quality", "quality_map", "write_topic"})

#: a payload that does not convert to the tag's type; the reason says precisely what did not convert
BAD_TYPE_MISMATCH = Status.BAD_TYPE_MISMATCH
_DEFAULT_TYPE = {"auto": "float64", "json": "float64", "number": "float64", "bool": "bool", "string": "string"}
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "on": True, "off": False}
_QUALITY_NAMES = {"good": Status.GOOD, "uncertain": Status.UNCERTAIN, "bad": Status.BAD}
_PARKED_S = 3600.0  # the MqttClient's own reconnect delay: the poller reconnects through connect()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PATH_STEP = re.compile(r"\.([^.\[\]'\"\s]+)|\[(-?\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


# --- config ------------------------------------------------------------------------------------

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
class MqttConnection:
    host: str  #: broker host name or address
    port: int = 1883  #: broker TCP port
    username: str | None = None  #: optional user name
    password: str | None = field(default=None, repr=False)  #: optional password (never logged)
    client_id: str = ""  #: MQTT client id; empty = "nexus-<device>-<random>"
    qos: int = 1  #: QoS of the subscriptions and of writes (0 or 1)
    keepalive: int = 30  #: MQTT keepalive, seconds
    buffer_size: int = 10_000  #: points held between two reads; on overflow the newest per tag are kept


@dataclass(frozen=True, kw_only=True)
class MqttAddress:
    topic: str  #: topic filter to subscribe (wildcards allowed)
    format: str  #: payload format, one of FORMATS
    value: JsonPath  #: where the value is in a JSON payload ($ = the whole payload)
    timestamp: JsonPath | None = None  #: source timestamp (epoch s/ms/us/ns or ISO 8601); None = arrival time
    quality: JsonPath | None = None  #: source quality; None = GOOD
    quality_map: tuple[tuple[str, int], ...] = ()  #: source quality value (as text) -> OPC UA status
    write_topic: str | None = None  #: where writes are published; None = read-only


def _topic(text: str, key: str, where: str, *, wildcards: bool) -> str:
    if not text or "\0" in text or len(text.encode()) > 65535:
        raise ConfigError(f"'{key}' must be a non-empty MQTT topic without NUL, at most 65535 bytes", where=where)
    if text.startswith("$share/"):
        raise ConfigError(f"'{key}': shared subscriptions ($share/...) are not supported", where=where)
    levels = text.split("/")
    for i, level in enumerate(levels):
        if not wildcards and ("+" in level or "#" in level):
            raise ConfigError(f"'{key}' {text!r} must not contain wildcards (+ or #)", where=where)
        if ("+" in level and level != "+") or ("#" in level and (level != "#" or i != len(levels) - 1)):
            raise ConfigError(f"'{key}' {text!r}: '+' must be a whole level and '#' the whole last level",
                              where=where)
    return text


def _quality_key(raw: Any) -> str:
    """Source quality values compared as text: TOML keys are strings, payload values may not be."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return raw if isinstance(raw, str) else orjson.dumps(raw).decode()


def _quality_map(d: dict[Any, Any], where: str) -> tuple[tuple[str, int], ...]:
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


def parse_connection(d: dict[str, Any], where: str, protocol: str) -> MqttConnection:
    username, password = get(d, "username", str, where, None), get(d, "password", str, where, None)
    if password is not None and username is None:
        raise ConfigError("'password' needs a 'username'", where=where)
    return MqttConnection(
        host=get(d, "host", str, where), port=int_in(d, "port", 1, 65535, where, 1883), username=username,
        password=password, client_id=get(d, "client_id", str, where, ""), qos=int_in(d, "qos", 0, 1, where, 1),
        keepalive=int_in(d, "keepalive", 5, 3600, where, 30),
        buffer_size=int_in(d, "buffer_size", 100, 10_000_000, where, 10_000))


def parse_tag(d: dict[str, Any], where: str, conn: MqttConnection) -> tuple[MqttAddress, str, int]:
    fmt = choice(get(d, "format", str, where, "auto"), FORMATS, "format", where)
    structured = fmt in ("auto", "json")
    for key in ("value", "timestamp", "quality", "quality_map"):
        if key in d and not structured:
            raise ConfigError(f"'{key}' needs format json or auto, not {fmt!r}", where=where)
    value = parse_path(get(d, "value", str, where, "$"), "value", where)
    ts, quality = (parse_path(get(d, k, str, where), k, where) if k in d else None for k in ("timestamp", "quality"))
    qmap = _quality_map(get(d, "quality_map", dict, where, {}), where)
    if qmap and quality is None:
        raise ConfigError("'quality_map' needs a 'quality' path", where=where)
    write_topic = get(d, "write_topic", str, where, None)
    if write_topic is not None:
        _topic(write_topic, "write_topic", where, wildcards=False)
    if get(d, "writable", bool, where, False):
        if write_topic is None:
            raise ConfigError("a writable tag needs a 'write_topic'", where=where)
        if structured and any(isinstance(s, int) for s in value.steps):
            raise ConfigError(f"'value' path {value.text!r} has an array index; a writable {fmt} tag needs a path "
                              "of key names (the write payload is built from it)", where=where)
    address = MqttAddress(topic=_topic(get(d, "topic", str, where), "topic", where, wildcards=True), format=fmt,
                          value=value, timestamp=ts, quality=quality, quality_map=qmap, write_topic=write_topic)
    return address, parse_type(d, where, _DEFAULT_TYPE[fmt]), 0


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


# --- topic filters -----------------------------------------------------------------------------

def _matches(levels: list[str], topic: list[str]) -> bool:
    if topic[0].startswith("$") and levels[0] in ("+", "#"):
        return False  # MQTT: wildcards never match $SYS-style topics at the first level
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(topic) or (level != "+" and level != topic[i]):
            return False
    return len(topic) == len(levels)


def _covers(a: str, b: str) -> bool:
    """Whether filter ``a`` (not ``b`` itself) matches every topic that filter ``b`` matches."""
    al, bl = a.split("/"), b.split("/")
    if a == b or (al[0] in ("+", "#") and bl[0].startswith("$")):
        return False
    for i, level in enumerate(al):
        if level == "#":
            return True
        if i >= len(bl) or bl[i] == "#" or (level != "+" and level != bl[i]):
            return False
    return len(al) == len(bl)


def subscriptions(filters: set[str]) -> dict[str, str]:
    """filter -> the filter subscribed for it. Overlapping subscriptions would deliver a message twice,
    so a filter covered by another one is not subscribed itself."""
    roots = sorted(f for f in filters if not any(_covers(g, f) for g in filters))
    return {f: next(g for g in roots if g == f or _covers(g, f)) for f in filters}


# --- the driver --------------------------------------------------------------------------------

class Driver(base.Driver):
    """Subscribes once per connection; converts messages as they arrive, hands them over in read()."""

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.conn: MqttConnection = device.conn
        self._client_id = self.conn.client_id or f"nexus-{device.id}-{uuid.uuid4().hex[:8]}"
        self._sub_of = subscriptions({t.address.topic for t in device.tags})
        self._subs = sorted(set(self._sub_of.values()))
        self._filters = {f: f.split("/") for f in self._sub_of}
        self._capacity = max(self.conn.buffer_size, 2 * len(device.tags))  # compaction always frees half
        self._buffer: list[Point] = []
        self._client: MqttClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()  # set on SUBACK (or CONNACK without tags)
        self._refused: dict[str, str] = {}  # tag -> why the broker refused its subscription
        self._fresh = False  # first read after a connect: report tags without a value yet
        self._bad_tags: set[str] = set()  # tags whose last payload did not convert (log on change only)
        self.received = self.bad_payloads = self.overflows = self.connects = 0
        self.last_error: str | None = None

    def _link_up(self) -> bool:
        return self._client is not None and self._client.connected and self._ready.is_set()

    @property
    def connected(self) -> bool:
        """Subscribed; after a drop, stays true until read() has handed over what arrived before it."""
        return self._link_up() or bool(self._buffer)

    async def connect(self) -> None:
        await self._stop_client()
        c, d = self.conn, self.device
        settings = MqttSettings(host=c.host, port=c.port, username=c.username, password=c.password,
                                keepalive=c.keepalive, connect_timeout=d.timeout_ms / 1000,
                                reconnect_min=_PARKED_S, reconnect_max=_PARKED_S)
        self._ready, self._stop, self._refused = asyncio.Event(), asyncio.Event(), {}
        client = MqttClient(settings, client_id=self._client_id, subscriptions=[(s, c.qos) for s in self._subs],
                            on_message=self._on_message, on_connect=self._on_connect)
        client._client.on_subscribe = self._on_subscribe  # MqttClient has no SUBACK hook (yet)
        self._client = client
        self._task = asyncio.create_task(client.run_loop(self._stop), name=f"gateway[{d.id}].mqtt_source.run_loop")
        try:
            async with asyncio.timeout(d.timeout_ms / 1000):
                await self._ready.wait()
        except TimeoutError:
            await self._stop_client()
            raise TemporaryError(f"no connection to broker {c.host}:{c.port} within {d.timeout_ms} ms "
                                 "(the nexus.mqtt log has the cause)", device_id=d.id) from None
        self.connects += 1
        self._fresh = True

    def _on_connect(self) -> None:
        if not self._subs:
            self._ready.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
        refused = {s: str(rc) for s, rc in zip(self._subs, codes, strict=False) if rc.is_failure}
        for t in self.device.tags:
            if (why := refused.get(self._sub_of[t.address.topic])) is not None:
                self._refused[t.name] = f"broker refused subscription {self._sub_of[t.address.topic]!r}: {why}"
        if refused:
            log.warning("broker refused subscriptions %s", refused, extra={"device": self.device.id})
        self._ready.set()

    def _on_message(self, msg: Message) -> None:
        try:
            self._ingest(msg)
        except Exception:  # a bug here must never reach paho's read callback and stall the connection
            log.exception("cannot map message", extra={"device": self.device.id, "topic": msg.topic})

    def _ingest(self, msg: Message) -> None:
        self.received += 1
        now = int(time.time() * 1000)
        topic = msg.topic.split("/")
        matches = {f: _matches(levels, topic) for f, levels in self._filters.items()}
        decoded: dict[str, Any] = {}  # format -> document: decoded once for all tags of the topic
        for tag in self.device.tags:  # in config order, so one message's points keep a stable order
            if not matches[tag.address.topic]:
                continue
            fmt = tag.address.format
            if fmt not in decoded:
                try:
                    decoded[fmt] = decode(fmt, msg.payload)
                except Mismatch as exc:
                    decoded[fmt] = exc
            self._push(map_message(tag, decoded[fmt], now), msg.topic)

    def _push(self, p: Point, topic: str) -> None:
        if p.value is None:
            self.bad_payloads += 1
            self.last_error = f"{p.tag}: {p.reason}"
            if p.tag not in self._bad_tags:
                self._bad_tags.add(p.tag)
                log.warning("tag %s: bad payload on %s: %s", p.tag, topic, p.reason,
                            extra={"device": self.device.id, "tag": p.tag, "topic": topic})
        else:
            self._bad_tags.discard(p.tag)
        if len(self._buffer) >= self._capacity:
            self._compact()
        self._buffer.append(p)

    def _compact(self) -> None:
        """Keep the newest point per tag (in arrival order): the poller fell behind the topic's rate."""
        latest: dict[str, Point] = {}
        for p in self._buffer:
            latest.pop(p.tag, None)
            latest[p.tag] = p
        dropped = len(self._buffer) - len(latest)
        self.overflows += dropped
        self._buffer = list(latest.values())
        log.warning("buffer full (%d points): dropped %d older values, kept the newest per tag",
                    self._capacity, dropped, extra={"device": self.device.id})

    async def read(self) -> list[Point]:
        if not self._buffer and not self._link_up():
            c = self.conn
            raise TemporaryError(f"lost connection to broker {c.host}:{c.port}" if self._client else "not connected",
                                 device_id=self.device.id)
        points, self._buffer = self._buffer, []
        if self._fresh and self._link_up():
            self._fresh = False
            points.extend(self._initial_points({p.tag for p in points}))
        return points

    def _initial_points(self, seen: set[str]) -> list[Point]:
        """After a connect: refused tags BAD; tags without a message yet waiting (not their pre-outage state)."""
        now = int(time.time() * 1000)
        out = []
        for t in self.device.tags:
            if t.name in self._refused:
                out.append(Point(t.name, None, now, Status.BAD_CONFIGURATION_ERROR, t.unit, self._refused[t.name]))
            elif t.name not in seen:
                out.append(Point(t.name, None, now, Status.BAD_WAITING_FOR_INITIAL_DATA, t.unit,
                                 f"no message on {t.address.topic!r} since connecting"))
        return out

    async def write(self, tag: TagConfig, value: Any) -> None:
        addr: MqttAddress = tag.address
        if addr.write_topic is None:
            raise PermanentError(f"tag {tag.name!r} has no write_topic", device_id=self.device.id)
        payload = encode_write(addr, check_write(tag.type, value, length=tag.length))
        client = self._client
        if client is None or not self._link_up():
            raise TemporaryError("not connected to the broker", device_id=self.device.id)
        try:
            async with asyncio.timeout(self.device.timeout_ms / 1000):
                acked = await client.publish(addr.write_topic, payload, qos=self.conn.qos)
                await acked
        except TimeoutError:
            raise TemporaryError(f"no PUBACK for {addr.write_topic!r} within {self.device.timeout_ms} ms",
                                 device_id=self.device.id) from None
        except MqttError as exc:
            error = TemporaryError if exc.reason == "stopped" else PermanentError
            raise error(f"publish to {addr.write_topic!r} failed: {exc}", device_id=self.device.id) from exc

    async def close(self) -> None:
        try:
            await self._stop_client()
        except Exception:  # close never raises
            log.exception("closing the MQTT client failed", extra={"device": self.device.id})
        self._buffer = []

    async def _stop_client(self) -> None:
        """Stop the client task (it disconnects cleanly in its finally) and wait for it, bounded."""
        task, self._task, self._client = self._task, None, None
        if task is None:
            return
        self._stop.set()
        task.cancel()  # do not wait for its 1 s housekeeping tick
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            log.warning("MQTT client task did not stop within 5 s", extra={"device": self.device.id})
        elif not task.cancelled() and task.exception() is not None:
            log.warning("MQTT client task failed: %r", task.exception(), extra={"device": self.device.id})

    def health(self) -> dict[str, Any]:
        c = self.conn
        return {"connected": self.connected, "broker": f"{c.host}:{c.port}", "subscriptions": len(self._subs),
                "received": self.received, "buffered": len(self._buffer), "overflows": self.overflows,
                "bad_payloads": self.bad_payloads, "refused_tags": len(self._refused), "connects": self.connects,
                "last_error": self.last_error}
