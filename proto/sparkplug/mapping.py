"""Our points as Sparkplug metrics and back: tag types, quality and units.

* tag type (:mod:`proto.types`) <-> datatype: :data:`TAG_DATATYPES`, :func:`datatype_for`, :func:`tag_type_for`;
* quality: Sparkplug has no quality of its own; the convention hosts and edge nodes share is an
  Int32 property ``Quality`` holding an OPC DA style code (192 good, 64 uncertain, 0 bad, with DA
  sub-statuses such as 24 comm failure, and 500 for Ignition's "stale"). Our quality is a 32-bit
  OPC UA StatusCode: it goes out as the nearest ``Quality`` (:func:`quality_for`) and, when that
  code does not name it exactly, also as the UInt32 property ``StatusCode``, so a NEXUS host gets
  the very StatusCode back (:func:`status_for`). The point's ``reason`` travels as ``Reason``;
* unit: the String property ``engUnit``;
* a ``datetime`` tag is a DateTime metric (Unix ms, UInt64 on the wire): its value a
  :class:`proto.types.DateTime` here, the metric's an int; a DateTime metric outside 1970..9999 is refused.
"""

from __future__ import annotations

from proto.points import MAX_REASON_CHARS, MAX_TS_MS, MAX_UNIT_CHARS, Point, Quality, Status, Value
from proto.sparkplug.errors import SparkplugError
from proto.sparkplug.model import (
    INTEGER_TYPES,
    SIGNED_BITS,
    STRING_TYPES,
    UNSIGNED_BITS,
    DataType,
    FrozenPropertySet,
    Metric,
    MetricValue,
    PropertySet,
    PropertyValue,
)
from proto.sparkplug.values import describe
from proto.types import MAX_DATETIME_MS, DateTime, canonical_type
from proto.uns import validate_level

QUALITY = "Quality"
STATUS_CODE = "StatusCode"
REASON = "Reason"
ENG_UNIT = "engUnit"

#: the ``Quality`` codes of the convention (OPC DA quality; 500 is Ignition's "stale")
GOOD, UNCERTAIN, BAD, STALE = 192, 64, 0, 500

TAG_DATATYPES = {
    "bool": DataType.BOOLEAN, "int8": DataType.INT8, "uint8": DataType.UINT8, "int16": DataType.INT16,
    "uint16": DataType.UINT16, "int32": DataType.INT32, "uint32": DataType.UINT32, "int64": DataType.INT64,
    "uint64": DataType.UINT64, "float32": DataType.FLOAT, "float64": DataType.DOUBLE, "string": DataType.STRING,
    "datetime": DataType.DATETIME,
}
#: the tag type of a metric's datatype
DATATYPE_TAGS = {**{dt: name for name, dt in TAG_DATATYPES.items()},
                 DataType.TEXT: "string", DataType.UUID: "string"}

#: our StatusCodes with a ``Quality`` of their own (DA sub-statuses); the rest by class
STATUS_QUALITY: dict[int, int] = {
    Status.UNCERTAIN_LAST_USABLE_VALUE: 68,           # DA uncertain, last usable value
    Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED: 84,  # DA uncertain, EU units exceeded
    Status.BAD_CONFIGURATION_ERROR: 4,                # DA bad, configuration error
    Status.BAD_TYPE_MISMATCH: 4,
    Status.BAD_NOT_CONNECTED: 8,                      # DA bad, not connected
    Status.BAD_DEVICE_FAILURE: 12,                    # DA bad, device failure
    Status.BAD_COMMUNICATION_ERROR: 24,               # DA bad, comm failure
    Status.BAD_TIMEOUT: 24,
    Status.BAD_WAITING_FOR_INITIAL_DATA: 32,          # DA bad, waiting for initial data
}
#: a ``Quality`` code -> the StatusCode it names
QUALITY_STATUS: dict[int, int] = {
    GOOD: Status.GOOD, UNCERTAIN: Status.UNCERTAIN, BAD: Status.BAD, 68: Status.UNCERTAIN_LAST_USABLE_VALUE,
    84: Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED, 4: Status.BAD_CONFIGURATION_ERROR, 8: Status.BAD_NOT_CONNECTED,
    12: Status.BAD_DEVICE_FAILURE, 24: Status.BAD_COMMUNICATION_ERROR, 32: Status.BAD_WAITING_FOR_INITIAL_DATA,
}
_FLOAT_TYPES = frozenset({DataType.FLOAT, DataType.DOUBLE})
_BOOLEAN = frozenset({DataType.BOOLEAN})
#: the datatypes a point's value comes from as it is (a DateTime metric's int becomes a DateTime)
_POINT_TYPES = frozenset(DATATYPE_TAGS) - {DataType.DATETIME}
#: the integer datatypes but DateTime, whose point value is a DateTime, not an int
_INTEGER_TYPES = INTEGER_TYPES - {DataType.DATETIME}
_new = tuple.__new__
_CLASS_QUALITY = {Quality.GOOD: GOOD, Quality.UNCERTAIN: UNCERTAIN, Quality.BAD: BAD}


def datatype_for(tag_type: str) -> DataType:
    """The datatype of a tag of ``tag_type`` (canonical or alias, e.g. ``float32``, ``REAL``)."""
    canonical = canonical_type(tag_type) if isinstance(tag_type, str) else None
    if canonical is None:
        raise SparkplugError(f"{describe(tag_type)} is not a tag type")
    return TAG_DATATYPES[canonical]


def tag_type_for(datatype: DataType) -> str | None:
    """Our tag type for a metric of ``datatype``; None when no tag type holds it (arrays, bytes,
    data sets, templates)."""
    return DATATYPE_TAGS.get(datatype)


def quality_for(status: int) -> int:
    """The ``Quality`` code nearest to an OPC UA StatusCode."""
    code = STATUS_QUALITY.get(status)
    return code if code is not None else _CLASS_QUALITY[Quality.of(status)]


def status_for(quality: int) -> tuple[int, str | None]:
    """The StatusCode a ``Quality`` code names, and a reason when the code is outside our table."""
    status = QUALITY_STATUS.get(quality)
    if status is not None:
        return status, None
    if quality == STALE:
        return Status.BAD, "stale (Sparkplug quality 500)"
    if 0 <= quality <= 255 and quality & 0xC0 == 0xC0:
        return Status.GOOD, None  # a DA good sub-status, e.g. 216 local override
    if 0 <= quality <= 255 and quality & 0xC0 == 0x40:
        return Status.UNCERTAIN, f"Sparkplug quality {quality}"
    return Status.BAD, f"Sparkplug quality {quality}"


_QUALITY_PROPS = {q: PropertyValue(DataType.INT32, q) for q in (*QUALITY_STATUS, *STATUS_QUALITY.values())}
#: (status, reason, unit) -> its properties, built once: a gateway's points share a few combinations
_PROPERTY_SETS: dict[tuple[int, str | None, str | None], FrozenPropertySet] = {}
_PROPERTY_SETS_MAX = 4096


def quality_properties(status: int, reason: str | None = None, unit: str | None = None) -> PropertySet:
    """``Quality`` (always), ``StatusCode`` (when ``Quality`` does not name it), ``Reason``, ``engUnit``."""
    key = (status, reason or None, unit or None)
    found = _PROPERTY_SETS.get(key)
    if found is not None:
        return found
    if not isinstance(status, int) or isinstance(status, bool) or not 0 <= status <= 0xFFFFFFFF:
        raise SparkplugError(f"a status must be a uint32 OPC UA StatusCode, got {describe(status)}")
    code = quality_for(status)
    props = {QUALITY: _QUALITY_PROPS.get(code) or PropertyValue(DataType.INT32, code)}
    if QUALITY_STATUS.get(code) != status:
        props[STATUS_CODE] = PropertyValue(DataType.UINT32, int(status))
    if reason:
        props[REASON] = PropertyValue(DataType.STRING, reason)
    if unit:
        props[ENG_UNIT] = PropertyValue(DataType.STRING, unit)
    if len(_PROPERTY_SETS) >= _PROPERTY_SETS_MAX:
        _PROPERTY_SETS.clear()
    found = _PROPERTY_SETS[key] = FrozenPropertySet(props)
    return found


def point_to_metric(point: Point, datatype: DataType, *, name: str | None = None, alias: int | None = None,
                    with_unit: bool = True, historical: bool = False) -> Metric:
    """The metric of ``point`` as a ``datatype`` (:func:`datatype_for` its tag type).

    ``name``: the metric's name; None: the point's tag, unless an ``alias`` is given (DATA and CMD
    send the alias alone). ``with_unit``: add ``engUnit`` (births; DATA need not repeat it).
    ``historical``: a value sent late (kept while the primary host was away).
    """
    if name is None and alias is None:
        name = point.tag
    value = _metric_value(point.value, datatype)
    properties = quality_properties(point.status, point.reason, point.unit if with_unit else None)
    return _new(Metric, (name, datatype, value, alias, point.ts, historical, False, value is None, properties, None))


def _metric_value(value: Value, datatype: DataType) -> MetricValue:
    if value is None:
        return None
    if datatype in _FLOAT_TYPES:
        if isinstance(value, (int, float)):
            return float(value) if isinstance(value, bool) else value
    elif datatype in _INTEGER_TYPES:
        if isinstance(value, int):  # bool too: a bool reading of an integer tag is 0 or 1
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif datatype in _BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
    elif datatype in STRING_TYPES:
        if isinstance(value, str):
            return value
    elif datatype is DataType.DATETIME:
        if value.__class__ is DateTime:  # only a datetime: an int is no date (its unit unknown)
            return value.ms
    else:
        raise SparkplugError(f"a point cannot be a {datatype.name} metric")
    raise SparkplugError(f"value {describe(value)} cannot be a {datatype.name}")


def metric_to_point(metric: Metric, *, tag: str | None = None, timestamp: int | None = None,
                    unit: str | None = None) -> Point:
    """The point of ``metric``.

    ``tag``: the point's tag (a UNS level); None: the metric's name. ``timestamp``: the payload's,
    for a metric without its own. ``unit``: the one its birth declared, for a metric without ``engUnit``.
    """
    tag = validate_level(tag if tag is not None else metric.name or "", what="tag")
    ts = metric.timestamp if metric.timestamp is not None else timestamp
    if ts is None or not 0 <= ts <= MAX_TS_MS:
        raise SparkplugError(f"metric {describe(metric.name)}: timestamp must be Unix ms, got {describe(ts)}")
    datatype = metric.datatype
    value = metric.value
    if datatype not in _POINT_TYPES:
        if datatype is not DataType.DATETIME:
            raise SparkplugError(f"metric {describe(metric.name)}: a {datatype.name} has no point form")
        when = None
        if value is not None:
            if type(value) is not int or not 0 <= value <= MAX_DATETIME_MS:  # the codec's: 0 .. 2^64 - 1
                raise SparkplugError(f"metric {describe(metric.name)}: DateTime {describe(value)} is not Unix ms "
                                     f"in 1970-01-01 .. 9999-12-31")
            when = DateTime(value)
        status, reason, found_unit = _from_properties(metric.properties)
        return Point(tag, when, ts, status, found_unit if found_unit is not None else unit, reason)
    if not (value is None or isinstance(value, (int, float, str))):
        raise SparkplugError(f"metric {describe(metric.name)}: {describe(value)} is not a {datatype.name}")
    if isinstance(value, float) and datatype in INTEGER_TYPES:
        raise SparkplugError(f"metric {describe(metric.name)}: {describe(value)} is not a {datatype.name}")
    status, reason, found_unit = _from_properties(metric.properties)
    unit = found_unit if found_unit is not None else unit
    return Point(tag, value, ts, status, unit, reason)


def _from_properties(props: PropertySet) -> tuple[int, str | None, str | None]:
    """(status, reason, unit) from a metric's properties; good, none, none when they say nothing."""
    if not props:
        return Status.GOOD, None, None
    status: int = Status.GOOD
    reason = None
    exact = props.get(STATUS_CODE)
    quality = props.get(QUALITY)
    if exact is not None and _is_int(exact) and -2**31 <= exact.value < 2**32:  # type: ignore[operator]
        status = exact.value & 0xFFFFFFFF  # type: ignore[operator]  # Int32 senders: the same 32 bits
    elif quality is not None and _is_int(quality):
        status, reason = status_for(quality.value)  # type: ignore[arg-type]
    text = props.get(REASON)
    if text is not None and text.type in STRING_TYPES and isinstance(text.value, str) and text.value:
        reason = text.value if len(text.value) <= MAX_REASON_CHARS else text.value[:MAX_REASON_CHARS - 3] + "..."
    unit = props.get(ENG_UNIT)
    found_unit = None
    if unit is not None and unit.type in STRING_TYPES and isinstance(unit.value, str) and unit.value:
        if len(unit.value) > MAX_UNIT_CHARS:
            raise SparkplugError(f"engUnit {describe(unit.value)} is longer than {MAX_UNIT_CHARS} characters")
        found_unit = unit.value
    return status, reason, found_unit


def _is_int(prop: PropertyValue) -> bool:
    return (prop.type in SIGNED_BITS or prop.type in UNSIGNED_BITS) and type(prop.value) is int

