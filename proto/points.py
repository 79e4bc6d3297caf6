"""Data-point payloads: one point per per-tag UNS message, many points per batch message.

Wire format is JSON (orjson). Single point, on a per-tag UNS topic (retained)::

    {"schema": 1, "value": 21.5, "ts": 1732370000123, "q": 0, "unit": "degC"}

Batch, on ``<root>/batch/v1/<enterprise>/<site>/<area>/<line>/<device>``::

    {"schema": 1, "seq": 42, "points": [
        {"tag": "temp", "value": 21.5, "ts": 1732370000123, "q": 0, "unit": "degC"},
        {"tag": "state", "value": null, "ts": 1732370000123, "q": 2148139008, "reason": "timeout"}]}

``q`` is an OPC UA StatusCode (uint32); its two top bits give the class: 0 good, 1 uncertain, 2 bad.
``ts`` is the source timestamp in Unix milliseconds. ``value`` is a number, a bool, a string, null
(no value, e.g. while the device is unreachable) or, for a ``datetime`` tag, the object
``{"datetime": <Unix ms>}`` (a :class:`proto.types.DateTime` in Python).
"""

from __future__ import annotations

import enum
import math
import re
from operator import itemgetter
from typing import Any, NamedTuple

import orjson

from proto.errors import ContractError, PayloadError
from proto.types import MAX_DATETIME_MS, MIN_DATETIME_MS, DateTime
from proto.uns import MAX_LEVEL_BYTES, validate_level

SCHEMA_VERSION = 1
#: Largest source timestamp accepted (ms): year 2255. Smaller garbage (negative) is refused too.
MAX_TS_MS = 9_000_000_000_000
#: A gateway splits its batch messages below this many bytes (one point larger than it goes alone);
#: ingestion must accept at least this much (its max_message_bytes), or it would dead-letter whole batches.
MAX_BATCH_BYTES = 512 * 1024
#: Longest ``unit`` accepted (characters), and longest ``reason`` kept (a longer one is cut, marked "...").
MAX_UNIT_CHARS = 64
MAX_REASON_CHARS = 400
#: Integers beyond this lose precision as float64; the historian also keeps their text form.
EXACT_FLOAT_INT = 2**53

Value = float | int | bool | str | DateTime | None
#: the one key of a datetime value's JSON object: ``{"datetime": 1796205600123}``
DATETIME_KEY = "datetime"


class Quality(enum.IntEnum):
    """Quality class, from the two top bits of an OPC UA StatusCode."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @classmethod
    def of(cls, status: int) -> Quality:
        top = (status >> 30) & 0b11
        return cls.BAD if top >= 2 else cls(top)


class Status(enum.IntEnum):
    """OPC UA StatusCodes used by NEXUS drivers (values from OPC UA Part 4 / Part 6)."""

    GOOD = 0x00000000
    UNCERTAIN = 0x40000000
    UNCERTAIN_LAST_USABLE_VALUE = 0x40900000
    UNCERTAIN_ENGINEERING_UNITS_EXCEEDED = 0x40940000  #: clamped to the tag's range by the normalizer
    BAD = 0x80000000
    BAD_INTERNAL_ERROR = 0x80020000
    BAD_COMMUNICATION_ERROR = 0x80050000
    BAD_TIMEOUT = 0x800A0000
    BAD_WAITING_FOR_INITIAL_DATA = 0x80320000
    BAD_OUT_OF_RANGE = 0x803C0000
    BAD_DECODING_ERROR = 0x80070000
    BAD_TYPE_MISMATCH = 0x80740000
    BAD_CONFIGURATION_ERROR = 0x80890000
    BAD_NOT_CONNECTED = 0x808A0000
    BAD_DEVICE_FAILURE = 0x808B0000


#: Tag names already validated: the same few thousand names arrive in every batch.
_valid_tags: set[str] = set()
_VALID_TAGS_MAX = 200_000

_QUALITY_NAMES = {"good": Status.GOOD, "uncertain": Status.UNCERTAIN, "bad": Status.BAD}


class Point(NamedTuple):
    """One tag reading. A NamedTuple: cheap to build by the hundred thousand."""

    tag: str
    value: Value
    ts: int
    status: int = Status.GOOD
    unit: str | None = None
    reason: str | None = None

    @property
    def quality(self) -> Quality:
        return Quality.of(self.status)


#: (gateway, run, seq): a gateway's batch message, as its confirmation names it (:mod:`proto.delivery`)
DeliveryId = tuple[str, int, int]


class Batch(NamedTuple):
    """Many points of one device.

    ``(gateway, run, seq)`` name the message for end-to-end delivery: the gateway that published it,
    its run (one id per process start) and the message's number in that run. Ingestion confirms the
    commit of each on the gateway's ack topic (:mod:`proto.delivery`). Messages from other publishers
    may carry none of them. ``duplicates``: points dropped by :func:`decode_batch` because a later
    point of the same message had the same (tag, ts) (the last one is kept).
    """

    points: list[Point]
    seq: int | None = None
    gateway: str | None = None
    run: int | None = None
    duplicates: int = 0

    @property
    def delivery(self) -> DeliveryId | None:
        """``(gateway, run, seq)`` to confirm, or None for a message that asks for no confirmation."""
        if self.gateway is None or self.run is None or self.seq is None:
            return None
        return self.gateway, self.run, self.seq


def _point_dict(p: Point, *, with_tag: bool) -> dict[str, Any]:
    value = p.value
    if isinstance(value, float) and not math.isfinite(value):
        value = None  # JSON has no NaN/Inf; a non-finite reading is "no value"
    d: dict[str, Any] = {"tag": p.tag} if with_tag else {"schema": SCHEMA_VERSION}
    d["value"] = value
    d["ts"] = p.ts
    d["q"] = int(p.status)
    if p.unit:
        d["unit"] = p.unit
    if p.reason:
        d["reason"] = p.reason
    return d


#: a Python datetime, dataclass or subclass of int/str is a driver's bug, not a value: to _wire, which says so
#: (orjson would write a datetime as text: a string value on the way back)
_PASS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _wire(value: Any) -> Any:
    """orjson calls this only for what it cannot write itself (so numbers pay nothing): a datetime
    value as its object; anything else is a bug of the caller."""
    if value.__class__ is DateTime:
        return {DATETIME_KEY: value.ms}
    raise TypeError(type(value).__name__)  # orjson reports it as "Type is not JSON serializable: <type>"


def encode_point(p: Point) -> bytes:
    """Payload of a per-tag UNS message."""
    return orjson.dumps(_point_dict(p, with_tag=False), default=_wire, option=_PASS)


def message_head(*, seq: int | None, gateway: str | None, run: int | None) -> dict[str, Any]:
    """The fields every numbered message of a device stream starts with, in the order
    :func:`peek_delivery_id` reads them: schema, gw, run, seq."""
    body: dict[str, Any] = {"schema": SCHEMA_VERSION}
    if gateway is not None:
        body["gw"] = gateway
    if run is not None:
        body["run"] = run
    if seq is not None:
        body["seq"] = seq
    return body


def encode_batch(points: list[Point], *, seq: int | None = None, gateway: str | None = None,
                 run: int | None = None) -> bytes:
    """Payload of a batch message; ``gateway`` and ``run`` (with ``seq``) ask for a delivery ack."""
    body = message_head(seq=seq, gateway=gateway, run=run)
    body["points"] = [_point_dict(p, with_tag=True) for p in points]
    return orjson.dumps(body, default=_wire, option=_PASS)


def _loads(payload: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(doc).__name__}")
    schema = doc.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:  # not 1.0, not true
        raise PayloadError(f"unsupported schema {brief(schema)}; this build reads schema {SCHEMA_VERSION}")
    return doc


def brief(value: Any, limit: int = 40) -> str:
    """A bounded description of an untrusted JSON value for error texts: never ``repr()`` of a whole
    structure (a list nested 1,000 deep overflows the stack; a 10 MB string makes a 10 MB error)."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        text = str(value) if -10**30 < value < 10**30 else f"an integer of {value.bit_length()} bits"
        return text
    if isinstance(value, list):
        return f"list ({len(value)} items)"
    if isinstance(value, dict):
        return f"dict ({len(value)} keys)"
    return type(value).__name__


def _status(raw: Any) -> int:
    if raw is None:
        return Status.GOOD
    if type(raw) is int and 0 <= raw <= 0xFFFFFFFF:
        return raw
    if isinstance(raw, str) and raw.lower() in _QUALITY_NAMES:
        return _QUALITY_NAMES[raw.lower()]
    raise PayloadError(f"'q' must be a uint32 OPC UA status code or good/uncertain/bad, got {brief(raw)}")


def _point(d: Any, tag: str | None) -> Point:
    # every form of a point, and the errors; a batch's usual points are checked by _points without a call.
    # Exact type checks first, one dict lookup per field, the status of the usual integer inline, the Point
    # built without namedtuple's __new__ wrapper
    if type(d) is not dict:
        raise PayloadError(f"a point must be a JSON object, got {type(d).__name__}")
    get = d.get
    if tag is None:
        tag = get("tag")
        if type(tag) is not str:
            raise PayloadError(f"point 'tag' must be a string, got {brief(tag)}")
        if tag not in _valid_tags:
            if len(tag) > MAX_LEVEL_BYTES:  # bounded before validate_level quotes it
                raise PayloadError(f"point 'tag' {brief(tag)} is longer than {MAX_LEVEL_BYTES} bytes")
            validate_level(tag, what="tag")
            if len(_valid_tags) >= _VALID_TAGS_MAX:
                _valid_tags.clear()
            _valid_tags.add(tag)
    value = get("value")
    if value is not None and not isinstance(value, (int, float, str)):  # bool is an int
        value = _datetime(value, tag)  # the only other form, checked only when the value is not a scalar
    ts = get("ts")
    if type(ts) is not int or not 0 <= ts <= MAX_TS_MS:
        raise PayloadError(f"tag {tag!r}: 'ts' must be Unix milliseconds (integer), got {brief(ts)}")
    unit = get("unit")
    if unit is not None and (type(unit) is not str or len(unit) > MAX_UNIT_CHARS):
        raise PayloadError(f"tag {tag!r}: 'unit' must be a string of at most {MAX_UNIT_CHARS} characters, "
                           f"got {brief(unit)}")
    q = get("q")
    status = q if type(q) is int and 0 <= q <= 0xFFFFFFFF else _status(q)
    reason = get("reason")
    if reason is not None:
        if type(reason) is not str:
            reason = None
        elif len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS - 3] + "..."
    return _new_point(Point, (tag, value, ts, status, unit, reason))


_new_point = tuple.__new__
_tag_of = itemgetter(0)


def _points(raw: list[Any]) -> list[Point]:
    """The points of a batch. The usual point, ``{"tag", "value", "ts", "q"}`` and maybe ``"unit"``, each of
    its usual type, its tag seen before, is checked and built here without a call; any other goes through
    :func:`_point`, which takes every form and says what is wrong. Both give the same Point
    (tests/proto/test_fuzz.py compares them)."""
    # bench/ingest.py's hot loop: ~0.1 us per point less than _point on each (timeit, 100 float points:
    # 0.60 against 0.71 us with orjson's part). Subscripts rather than get() (a missing key is rare: KeyError,
    # then _point); the reason, quality names, a datetime value and a tag not seen yet are _point's.
    out: list[Point] = []
    append = out.append
    valid, new, point = _valid_tags, _new_point, Point
    for d in raw:
        if type(d) is not dict:
            append(_point(d, None))
            continue
        n = len(d)
        if n == 4:
            unit = None
        elif n == 5 and "unit" in d:  # a BAD point's fifth key, its reason, goes to _point before the subscripts
            unit = d["unit"]
        else:
            append(_point(d, None))
            continue
        try:
            tag, value, ts, q = d["tag"], d["value"], d["ts"], d["q"]
        except KeyError:
            tag = None
        if (type(tag) is str and tag in valid
                and (type(value) is float or value is None or isinstance(value, (int, str)))  # bool is an int
                and type(ts) is int and 0 <= ts <= MAX_TS_MS and type(q) is int and 0 <= q <= 0xFFFFFFFF
                and (unit is None or (type(unit) is str and len(unit) <= MAX_UNIT_CHARS))):
            append(new(point, (tag, value, ts, q, unit, None)))
        else:
            append(_point(d, None))
    return out


def _datetime(raw: Any, tag: str) -> DateTime:
    """A datetime value, ``{"datetime": <Unix ms>}``; anything else that is not a scalar is refused."""
    if type(raw) is not dict or len(raw) != 1 or DATETIME_KEY not in raw:
        raise PayloadError(f"tag {tag!r}: 'value' must be a number, bool, string, null or "
                           f'{{"datetime": <Unix ms>}}, got {brief(raw)}')
    ms = raw[DATETIME_KEY]
    if type(ms) is not int or not MIN_DATETIME_MS <= ms <= MAX_DATETIME_MS:
        raise PayloadError(f"tag {tag!r}: a datetime value is whole Unix milliseconds in {MIN_DATETIME_MS}.."
                           f"{MAX_DATETIME_MS} (1970-01-01 .. 9999-12-31, UTC), got {brief(ms)}")
    return DateTime(ms)


def decode_point(payload: bytes, tag: str) -> Point:
    """Decode a per-tag UNS payload (the tag comes from the topic)."""
    return _point(_loads(payload), tag)


def decode_batch(payload: bytes) -> Batch:
    """Decode a batch payload, validating every point; :class:`PayloadError` says what is wrong.

    The same (tag, ts) twice in one message is one reading reported twice: the last one is kept and
    the others are counted in ``Batch.duplicates``.
    """
    doc = _loads(payload)
    raw = doc.get("points")
    if not isinstance(raw, list):
        raise PayloadError("'points' must be a list")
    gateway, run, seq = delivery_id(doc)
    points = _points(raw)
    duplicates = 0
    # distinct tags (the usual batch: one poll) cannot repeat a (tag, ts): a set of str, whose hashes are
    # cached, costs ~2 % of the decode; only then (tag, ts) pairs, the last one of each kept
    if len(set(map(_tag_of, points))) < len(points):
        last = {(p.tag, p.ts): i for i, p in enumerate(points)}
        duplicates = len(points) - len(last)
        if duplicates:
            points = [points[i] for i in sorted(last.values())]
    return Batch(points, seq, gateway, run, duplicates)


_HEAD_ID = re.compile(rb'^\{"schema":1,"gw":("(?:[^"\\]|\\.){1,200}"),"run":(\d{1,19}),"seq":(\d{1,19}),')


def peek_delivery_id(payload: bytes) -> DeliveryId | None:
    """``(gateway, run, seq)`` read from the first bytes of a batch payload written by
    :func:`encode_batch` (its fields come first), without decoding the rest: a message too large to
    decode is still confirmed once it is kept as a dead letter. None when the head is not ours."""
    m = _HEAD_ID.match(payload[:512])
    if m is None:
        return None
    try:
        gateway = orjson.loads(m.group(1))
        validate_level(gateway, what="gw")
    except (orjson.JSONDecodeError, ContractError):
        return None
    run, seq = int(m.group(2)), int(m.group(3))
    return (gateway, run, seq) if run < 2**63 and seq < 2**63 else None


def delivery_id(doc: dict[str, Any]) -> tuple[str | None, int | None, int | None]:
    """``(gateway, run, seq)`` of a decoded batch document; all three or the gateway as None.

    ``gw`` without an integer ``run`` and ``seq`` is a contract error (the sender wants an ack we
    could not address); ``seq`` alone is the older diagnostic counter.
    """
    seq = doc.get("seq")
    seq = seq if type(seq) is int and 0 <= seq < 2**63 else None
    gateway = doc.get("gw")
    if gateway is None:
        return None, None, seq
    if not isinstance(gateway, str) or len(gateway) > MAX_LEVEL_BYTES:
        raise PayloadError(f"'gw' must be a gateway id (a UNS level), got {brief(gateway)}")
    validate_level(gateway, what="gw")
    run = doc.get("run")
    if type(run) is not int or not 0 <= run < 2**63 or seq is None:
        raise PayloadError(f"'gw' needs integer 'run' and 'seq' (0 .. 2^63), got run {brief(run)}, "
                           f"seq {brief(doc.get('seq'))}")
    return gateway, run, seq
