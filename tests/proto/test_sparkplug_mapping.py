"""Our points as Sparkplug metrics and back: tag type <-> datatype, the OPC UA StatusCode carried
exactly (Quality + StatusCode), the reason and the unit, through real encoded bytes."""

from __future__ import annotations

import pytest

from proto.errors import ContractError
from proto.points import Point, Status
from proto.sparkplug.codec import decode_payload, encode_payload
from proto.sparkplug.errors import SparkplugError
from proto.sparkplug.mapping import (
    ENG_UNIT,
    QUALITY,
    REASON,
    STATUS_CODE,
    TAG_DATATYPES,
    datatype_for,
    metric_to_point,
    point_to_metric,
    quality_for,
    quality_properties,
    status_for,
    tag_type_for,
)
from proto.sparkplug.model import DataType, Metric, Payload, PropertyValue
from proto.types import ALL_TYPES, MAX_DATETIME_MS, DateTime

DT = DataType
TS = 1732370000123


def through_the_wire(metric: Metric) -> Metric:
    return decode_payload(encode_payload(Payload(TS, 0, [metric]))).metrics[0]


def test_every_tag_type_has_a_datatype_and_back() -> None:
    assert set(TAG_DATATYPES) == set(ALL_TYPES)
    for tag_type in ALL_TYPES:
        assert tag_type_for(datatype_for(tag_type)) == tag_type
    assert datatype_for("REAL") is DT.FLOAT
    assert datatype_for("lreal") is DT.DOUBLE
    assert datatype_for("DINT") is DT.INT32
    assert datatype_for("ulint") is DT.UINT64
    assert tag_type_for(DT.TEXT) == tag_type_for(DT.UUID) == "string"
    assert datatype_for("datetime") is datatype_for("DTL") is datatype_for("date_and_time") is DT.DATETIME
    assert tag_type_for(DT.DATETIME) == "datetime"
    for no_tag in (DT.BYTES, DT.FILE, DT.DATASET, DT.TEMPLATE, DT.INT8_ARRAY, DT.STRING_ARRAY):
        assert tag_type_for(no_tag) is None
    with pytest.raises(SparkplugError, match="'complex128' is not a tag type"):
        datatype_for("complex128")


@pytest.mark.parametrize(("tag_type", "value"), [
    ("bool", True), ("bool", False), ("int8", -128), ("uint8", 255), ("int16", -2**15), ("uint16", 65535),
    ("int32", -2**31), ("uint32", 2**32 - 1), ("int64", -2**63), ("int64", 2**53 + 1), ("uint64", 2**64 - 1),
    ("float32", 1.5), ("float64", 0.1), ("string", "läuft"), ("float64", None),
    ("datetime", DateTime(0)), ("datetime", DateTime(1796205600123)), ("datetime", DateTime(MAX_DATETIME_MS)),
    ("datetime", None),
])
def test_points_round_trip_through_the_wire(tag_type: str, value: object) -> None:
    point = Point("speed", value, TS, Status.GOOD, "rpm")  # type: ignore[arg-type]
    metric = through_the_wire(point_to_metric(point, datatype_for(tag_type), alias=4, name="speed"))
    assert (metric.name, metric.alias, metric.datatype) == ("speed", 4, datatype_for(tag_type))
    assert metric_to_point(metric) == point
    assert type(metric_to_point(metric).value) is type(value)


@pytest.mark.parametrize("status", [int(s) for s in Status] + [0x40000000 | 0x123, 0x80AB0000, 0xFFFFFFFF,
                                                                  0x00A50000])
def test_every_status_code_comes_back_exactly(status: int) -> None:
    point = Point("t", 1.0, TS, status, None, "timeout" if status >= 0x80000000 else None)
    back = metric_to_point(through_the_wire(point_to_metric(point, DT.DOUBLE)))
    assert (back.status, back.reason) == (status, point.reason)


#: our StatusCode -> the Quality property written, and whether StatusCode is written beside it
QUALITY_TABLE = [
    (Status.GOOD, 192, False),
    (Status.UNCERTAIN, 64, False),
    (Status.UNCERTAIN_LAST_USABLE_VALUE, 68, False),
    (Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED, 84, False),
    (Status.BAD, 0, False),
    (Status.BAD_CONFIGURATION_ERROR, 4, False),
    (Status.BAD_TYPE_MISMATCH, 4, True),
    (Status.BAD_NOT_CONNECTED, 8, False),
    (Status.BAD_DEVICE_FAILURE, 12, False),
    (Status.BAD_COMMUNICATION_ERROR, 24, False),
    (Status.BAD_TIMEOUT, 24, True),
    (Status.BAD_WAITING_FOR_INITIAL_DATA, 32, False),
    (Status.BAD_INTERNAL_ERROR, 0, True),
    (Status.BAD_OUT_OF_RANGE, 0, True),
    (Status.BAD_DECODING_ERROR, 0, True),
    (0x00A50000, 192, True),  # a good StatusCode with sub-code bits
]


@pytest.mark.parametrize(("status", "quality", "exact_too"), QUALITY_TABLE)
def test_quality_property_table(status: int, quality: int, exact_too: bool) -> None:
    assert quality_for(status) == quality
    props = quality_properties(status)
    assert props[QUALITY] == PropertyValue(DT.INT32, quality)
    assert (STATUS_CODE in props) is exact_too
    if exact_too:
        assert props[STATUS_CODE] == PropertyValue(DT.UINT32, status)


@pytest.mark.parametrize(("quality", "status", "reason"), [
    (192, Status.GOOD, None), (216, Status.GOOD, None), (64, Status.UNCERTAIN, None),
    (68, Status.UNCERTAIN_LAST_USABLE_VALUE, None), (84, Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED, None),
    (80, Status.UNCERTAIN, "Sparkplug quality 80"), (0, Status.BAD, None), (4, Status.BAD_CONFIGURATION_ERROR, None),
    (8, Status.BAD_NOT_CONNECTED, None), (12, Status.BAD_DEVICE_FAILURE, None),
    (24, Status.BAD_COMMUNICATION_ERROR, None), (32, Status.BAD_WAITING_FOR_INITIAL_DATA, None),
    (28, Status.BAD, "Sparkplug quality 28"), (500, Status.BAD, "stale (Sparkplug quality 500)"),
    (600, Status.BAD, "Sparkplug quality 600"), (-1, Status.BAD, "Sparkplug quality -1"),
    (128, Status.BAD, "Sparkplug quality 128"),
])
def test_a_quality_from_another_edge_node(quality: int, status: int, reason: str | None) -> None:
    """Without our StatusCode property, the Quality code alone is mapped."""
    assert status_for(quality) == (status, reason)
    metric = Metric("t", DT.INT32, 5, timestamp=TS, properties={QUALITY: PropertyValue(DT.INT32, quality)})
    point = metric_to_point(through_the_wire(metric))
    assert (point.status, point.reason) == (status, reason)


def test_a_good_point_carries_only_quality_and_the_unit_when_asked() -> None:
    point = Point("t", 21.5, TS, Status.GOOD, "degC")
    assert dict(point_to_metric(point, DT.DOUBLE).properties) == {
        QUALITY: PropertyValue(DT.INT32, 192), ENG_UNIT: PropertyValue(DT.STRING, "degC")}
    data = point_to_metric(point, DT.DOUBLE, alias=3, with_unit=False, historical=True)
    assert (data.name, data.alias, data.is_historical) == (None, 3, True)
    assert dict(data.properties) == {QUALITY: PropertyValue(DT.INT32, 192)}
    # the unit of a DATA metric comes from its birth
    assert metric_to_point(through_the_wire(data), tag="t", unit="degC") == point


def test_bad_point_with_reason_and_no_value() -> None:
    point = Point("t", None, TS, Status.BAD_TIMEOUT, "m", "timeout after 2000 ms")
    metric = point_to_metric(point, DT.FLOAT)
    assert (metric.value, metric.is_null) == (None, True)
    assert dict(metric.properties) == {
        QUALITY: PropertyValue(DT.INT32, 24), STATUS_CODE: PropertyValue(DT.UINT32, 0x800A0000),
        REASON: PropertyValue(DT.STRING, "timeout after 2000 ms"), ENG_UNIT: PropertyValue(DT.STRING, "m")}
    assert metric_to_point(through_the_wire(metric)) == point


@pytest.mark.parametrize(("value", "datatype", "sent"), [
    (3.0, DT.INT16, 3), (True, DT.INT32, 1), (1, DT.BOOLEAN, True), (0.0, DT.BOOLEAN, False),
    (7, DT.DOUBLE, 7), (True, DT.FLOAT, 1.0), ("x", DT.TEXT, "x"), (DateTime(TS), DT.DATETIME, TS),
])
def test_values_are_converted_to_the_metrics_datatype(value: object, datatype: DataType, sent: object) -> None:
    metric = point_to_metric(Point("t", value, TS), datatype)  # type: ignore[arg-type]
    assert metric.value == sent
    assert type(metric.value) is type(sent)


@pytest.mark.parametrize(("value", "datatype", "match"), [
    (3.5, DT.INT16, "3.5 cannot be a INT16"), ("3", DT.INT32, "'3' cannot be a INT32"),
    (2, DT.BOOLEAN, "2 cannot be a BOOLEAN"), (1.5, DT.STRING, "1.5 cannot be a STRING"),
    (float("nan"), DT.INT32, "nan cannot be a INT32"), (1, DT.INT8_ARRAY, "cannot be a INT8_ARRAY metric"),
    (b"x", DT.BYTES, "cannot be a BYTES metric"),
    (TS, DT.DATETIME, f"{TS} cannot be a DATETIME"), ("2026-12-02T10:00:00Z", DT.DATETIME, "cannot be a DATETIME"),
    (DateTime(TS), DT.INT64, "DateTime cannot be a INT64"), (DateTime(TS), DT.STRING, "DateTime cannot be a STRING"),
])
def test_values_that_do_not_fit_are_refused(value: object, datatype: DataType, match: str) -> None:
    with pytest.raises(SparkplugError, match=match):
        point_to_metric(Point("t", value, TS), datatype)  # type: ignore[arg-type]


def test_metric_to_point_rules() -> None:
    metric = Metric("Line/Speed", DT.INT32, 5)
    with pytest.raises(ContractError, match="contains '/'"):
        metric_to_point(metric, timestamp=TS)
    assert metric_to_point(metric, tag="speed", timestamp=TS) == Point("speed", 5, TS)
    with pytest.raises(SparkplugError, match="timestamp must be Unix ms, got None"):
        metric_to_point(metric, tag="speed")
    with pytest.raises(SparkplugError, match="a INT8_ARRAY has no point form"):
        metric_to_point(Metric("a", DT.INT8_ARRAY, (1,), timestamp=TS))
    assert metric_to_point(Metric("d", DT.DATETIME, TS, timestamp=TS)).value == DateTime(TS)
    assert metric_to_point(Metric("d", DT.DATETIME, None, timestamp=TS, is_null=True)).value is None
    for beyond in (MAX_DATETIME_MS + 1, 2**64 - 1):  # 10000-01-01 and later: no ISO 8601 text for it
        with pytest.raises(SparkplugError, match=rf"metric 'd': DateTime {beyond} is not Unix ms in 1970-01-01 "
                                                 r"\.\. 9999-12-31"):
            metric_to_point(through_the_wire(Metric("d", DT.DATETIME, beyond, timestamp=TS)))
    long_unit = {ENG_UNIT: PropertyValue(DT.STRING, "u" * 65)}
    with pytest.raises(SparkplugError, match=r"engUnit 'uuuu.* is longer than 64"):
        metric_to_point(Metric("t", DT.INT32, 1, timestamp=TS, properties=long_unit))
    signed = {STATUS_CODE: PropertyValue(DT.INT32, -2146828288), QUALITY: PropertyValue(DT.INT32, 0)}
    assert metric_to_point(Metric("t", DT.INT32, 1, timestamp=TS, properties=signed)).status == 0x800A0000
    odd = {QUALITY: PropertyValue(DT.STRING, "GOOD"), ENG_UNIT: PropertyValue(DT.INT32, 5)}
    assert metric_to_point(Metric("t", DT.INT32, 1, timestamp=TS, properties=odd)) == Point("t", 1, TS)
    long_reason = {QUALITY: PropertyValue(DT.INT32, 0), REASON: PropertyValue(DT.STRING, "r" * 500)}
    reason = metric_to_point(Metric("t", DT.INT32, 1, timestamp=TS, properties=long_reason)).reason
    assert reason is not None and len(reason) == 400 and reason.endswith("...")
