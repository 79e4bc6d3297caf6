"""The Sparkplug B payload codec: every datatype there and back, the wire forms the specification
mandates (checked on the generated protobuf message and on raw bytes), births and deaths, and bad
bytes turned into SparkplugError (a ContractError) with a bounded message."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest

from proto.errors import ContractError
from proto.sparkplug import sparkplug_b_pb2 as pb
from proto.sparkplug.codec import (
    BDSEQ,
    bdseq_metric,
    bdseq_of,
    decode_payload,
    encode_payload,
    ndeath_payload,
)
from proto.sparkplug.errors import SparkplugError, UnknownMetricError
from proto.sparkplug.model import (
    MAX_METRICS,
    MAX_PAYLOAD_BYTES,
    MAX_VALUES,
    NO_PROPERTIES,
    DataSet,
    DataType,
    FrozenPropertySet,
    MetaData,
    Metric,
    Parameter,
    Payload,
    PropertyValue,
    Template,
)
from proto.sparkplug.values import FLOAT32_MAX

TS = 1732370000123
DT = DataType


def round_trip(metric: Metric, **kw: Any) -> Metric:
    back = decode_payload(encode_payload(Payload(TS, 0, [metric]), **kw)).metrics
    assert len(back) == 1
    return back[0]


def wire(metric: Metric) -> Any:
    """The generated protobuf message of the metric as encoded: what another implementation reads."""
    msg = pb.Payload()
    msg.ParseFromString(encode_payload(Payload(TS, 0, [metric])))
    return msg.metrics[0]


SCALARS = [
    (DT.INT8, -128), (DT.INT8, 127), (DT.INT8, -1), (DT.INT8, 0),
    (DT.INT16, -2**15), (DT.INT16, 2**15 - 1), (DT.INT32, -2**31), (DT.INT32, 2**31 - 1),
    (DT.INT64, -2**63), (DT.INT64, 2**63 - 1), (DT.INT64, -1), (DT.INT64, 2**53 + 1), (DT.INT64, -(2**53) - 1),
    (DT.UINT8, 0), (DT.UINT8, 255), (DT.UINT16, 65535), (DT.UINT32, 2**32 - 1),
    (DT.UINT64, 0), (DT.UINT64, 2**64 - 1), (DT.UINT64, 2**53 + 1), (DT.UINT64, 2**63),
    (DT.FLOAT, 1.5), (DT.FLOAT, -FLOAT32_MAX), (DT.FLOAT, math.inf), (DT.FLOAT, 1.401298464324817e-45),
    (DT.DOUBLE, 21.5), (DT.DOUBLE, -1e308), (DT.DOUBLE, 5e-324), (DT.DOUBLE, -math.inf),
    (DT.BOOLEAN, True), (DT.BOOLEAN, False),
    (DT.STRING, "ABS läuft ✓"), (DT.STRING, ""), (DT.TEXT, "line 1\nline 2"),
    (DT.UUID, "2c1e8f3e-6d3b-4c0a-9a58-1f2b7f1d7c11"),
    (DT.DATETIME, TS), (DT.DATETIME, 0), (DT.DATETIME, 2**64 - 1),
    (DT.BYTES, b"\x00\xffraw"), (DT.BYTES, b""), (DT.FILE, b"%PDF-1.7"),
]


@pytest.mark.parametrize(("datatype", "value"), SCALARS)
def test_every_scalar_datatype_round_trips_exactly(datatype: DataType, value: object) -> None:
    back = round_trip(Metric("m", datatype, value, alias=7, timestamp=TS))
    assert back == Metric("m", datatype, value, alias=7, timestamp=TS)
    assert type(back.value) is type(value)


def test_float_nan_round_trips() -> None:
    assert math.isnan(round_trip(Metric("m", DT.FLOAT, math.nan)).value)  # type: ignore[arg-type]
    assert math.isnan(round_trip(Metric("m", DT.DOUBLE, math.nan)).value)  # type: ignore[arg-type]


def test_a_float_is_a_float32_on_the_wire() -> None:
    assert round_trip(Metric("m", DT.FLOAT, 0.1)).value == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    assert round_trip(Metric("m", DT.DOUBLE, 0.1)).value == 0.1


@pytest.mark.parametrize(("datatype", "value", "field", "raw"), [
    (DT.INT8, -1, "int_value", 0xFF), (DT.INT8, -128, "int_value", 0x80), (DT.INT16, -2, "int_value", 0xFFFE),
    (DT.INT32, -1, "int_value", 0xFFFFFFFF), (DT.INT32, 7, "int_value", 7),
    (DT.INT64, -1, "long_value", 2**64 - 1), (DT.INT64, -2**63, "long_value", 2**63),
    (DT.UINT32, 2**32 - 1, "int_value", 2**32 - 1), (DT.UINT64, 2**64 - 1, "long_value", 2**64 - 1),
    (DT.DATETIME, TS, "long_value", TS), (DT.UINT8, 200, "int_value", 200),
])
def test_integers_use_the_unsigned_fields_the_specification_names(datatype: DataType, value: int, field: str,
                                                                    raw: int) -> None:
    """Int8..Int32 and UInt8..UInt32 in uint32 int_value, Int64/UInt64/DateTime in uint64 long_value,
    negatives as the two's complement of the datatype's width."""
    msg = wire(Metric("m", datatype, value))
    assert msg.WhichOneof("value") == field
    assert getattr(msg, field) == raw
    assert msg.datatype == int(datatype)


@pytest.mark.parametrize(("datatype", "field", "raw", "value"), [
    (DT.INT8, "int_value", 0xFFFFFFFF, -1),            # a byte sign-extended to 32 bits (Java encoders)
    (DT.INT8, "int_value", 0xFFFFFF80, -128),
    (DT.INT16, "int_value", 0xFFFF8000, -2**15),
    (DT.INT8, "long_value", 2**64 - 1, -1),            # sign-extended to 64 bits
    (DT.UINT32, "long_value", 2**32 - 1, 2**32 - 1),   # a UInt32 written into long_value
    (DT.INT32, "long_value", 5, 5),
])
def test_decoding_accepts_the_other_integer_forms_in_use(datatype: DataType, field: str, raw: int,
                                                         value: int) -> None:
    msg = pb.Payload()
    m = msg.metrics.add(name="m", datatype=datatype)
    setattr(m, field, raw)
    assert decode_payload(msg.SerializeToString()).metrics[0].value == value


@pytest.mark.parametrize(("datatype", "field", "raw"), [
    (DT.INT8, "int_value", 256), (DT.INT8, "int_value", 0xFFFFFF7F), (DT.UINT8, "int_value", 256),
    (DT.UINT16, "int_value", 0xFFFFFFFF), (DT.UINT32, "long_value", 2**32), (DT.INT32, "long_value", 2**32),
])
def test_decoding_refuses_integers_out_of_the_datatypes_range(datatype: DataType, field: str, raw: int) -> None:
    msg = pb.Payload()
    m = msg.metrics.add(name="m", datatype=datatype)
    setattr(m, field, raw)
    with pytest.raises(SparkplugError, match=f"metric 'm': wire value {raw} is out of range for {datatype.name}"):
        decode_payload(msg.SerializeToString())


@pytest.mark.parametrize(("datatype", "value"), [
    (DT.INT8, 128), (DT.INT8, -129), (DT.UINT8, -1), (DT.UINT8, 256), (DT.INT16, 2**15), (DT.UINT16, 2**16),
    (DT.INT32, 2**31), (DT.UINT32, 2**32), (DT.INT64, 2**63), (DT.INT64, -2**63 - 1), (DT.UINT64, 2**64),
    (DT.UINT64, -1), (DT.DATETIME, -1), (DT.INT32, 1.0), (DT.INT32, True), (DT.INT32, "1"),
    (DT.FLOAT, 1e39), (DT.FLOAT, 2**200), (DT.FLOAT, "1.5"), (DT.DOUBLE, 2**2000), (DT.DOUBLE, True),
    (DT.BOOLEAN, 1), (DT.STRING, 5), (DT.STRING, "\ud800"), (DT.BYTES, "text"),
    (DT.INT8_ARRAY, (1, 200)), (DT.UINT8_ARRAY, (-1,)), (DT.INT32_ARRAY, (1.5,)), (DT.INT32_ARRAY, 5),
    (DT.FLOAT_ARRAY, (1e39,)), (DT.BOOLEAN_ARRAY, (1, 0)), (DT.STRING_ARRAY, ("a\x00b",)),
    (DT.STRING_ARRAY, (1,)), (DT.DATASET, (1, 2)), (DT.TEMPLATE, "t"),
])
def test_encoding_refuses_a_value_its_datatype_cannot_carry(datatype: DataType, value: object) -> None:
    with pytest.raises(SparkplugError, match=r"^metric 'tag-1': "):
        encode_payload(Payload(TS, 0, [Metric("tag-1", datatype, value)]))


ARRAYS = [
    (DT.INT8_ARRAY, (-128, 0, 127)), (DT.INT16_ARRAY, (-2**15, 2**15 - 1)), (DT.INT32_ARRAY, (-2**31, 2**31 - 1)),
    (DT.INT64_ARRAY, (-2**63, 2**53 + 1, 2**63 - 1)), (DT.UINT8_ARRAY, (0, 255)), (DT.UINT16_ARRAY, (65535,)),
    (DT.UINT32_ARRAY, (2**32 - 1, 0)), (DT.UINT64_ARRAY, (2**64 - 1, 2**53 + 1)), (DT.FLOAT_ARRAY, (1.5, -2.25)),
    (DT.DOUBLE_ARRAY, (0.1, -1e308, math.inf)), (DT.BOOLEAN_ARRAY, (True, False, True)),
    (DT.BOOLEAN_ARRAY, (True,) * 8), (DT.BOOLEAN_ARRAY, (False,) * 9 + (True,)),
    (DT.STRING_ARRAY, ("ABC", "", "hällo")), (DT.DATETIME_ARRAY, (TS, 0, 2**64 - 1)),
    (DT.INT32_ARRAY, ()), (DT.BOOLEAN_ARRAY, ()), (DT.STRING_ARRAY, ()), (DT.STRING_ARRAY, ("",)),
]


@pytest.mark.parametrize(("datatype", "value"), ARRAYS)
def test_arrays_round_trip(datatype: DataType, value: tuple[Any, ...]) -> None:
    assert round_trip(Metric("a", datatype, value)).value == value
    assert round_trip(Metric("a", datatype, list(value))).value == value  # a list goes out as well


@pytest.mark.parametrize(("datatype", "value", "packed"), [
    # worked by hand from the packing rules: little-endian items, booleans as a count and MSB-first bits
    (DT.INT8_ARRAY, (-23, 123), bytes([0xE9, 0x7B])),
    (DT.INT16_ARRAY, (-30000, 30000), bytes([0xD0, 0x8A, 0x30, 0x75])),
    (DT.INT32_ARRAY, (-1, 315338746), bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFA, 0xAF, 0xCB, 0x12])),
    (DT.UINT8_ARRAY, (23, 250), bytes([0x17, 0xFA])),
    (DT.UINT16_ARRAY, (30, 52360), bytes([0x1E, 0x00, 0x88, 0xCC])),
    (DT.FLOAT_ARRAY, (1.23, 89.341), bytes([0xA4, 0x70, 0x9D, 0x3F, 0x98, 0xAE, 0xB2, 0x42])),
    (DT.BOOLEAN_ARRAY, (False, False, True, True, False, True, False, False, True, True, False, True),
     bytes([0x0C, 0x00, 0x00, 0x00, 0x34, 0xD0])),
    (DT.STRING_ARRAY, ("ABC", "hello"), b"ABC\x00hello\x00"),
    (DT.DATETIME_ARRAY, (1256102875335, 1656107875000),
     bytes([0xC7, 0xD0, 0x90, 0x75, 0x24, 0x01, 0x00, 0x00, 0xB8, 0xBA, 0xB8, 0x97, 0x81, 0x01, 0x00, 0x00])),
])
def test_arrays_are_packed_as_the_specification_says(datatype: DataType, value: tuple[Any, ...],
                                                                    packed: bytes) -> None:
    msg = wire(Metric("a", datatype, value))
    assert msg.bytes_value == packed
    back = round_trip(Metric("a", datatype, value)).value
    if datatype is DT.FLOAT_ARRAY:
        assert back == pytest.approx(value, rel=1e-6)
    else:
        assert back == value


@pytest.mark.parametrize(("datatype", "packed", "match"), [
    (DT.INT32_ARRAY, b"\x00\x01\x02", "not a whole number of 4-byte items"),
    (DT.BOOLEAN_ARRAY, b"\x03\x00", "needs its 4-byte count"),
    (DT.BOOLEAN_ARRAY, b"\x09\x00\x00\x00\xff", "of 9 items needs 2 bytes of bits, got 1"),
    (DT.BOOLEAN_ARRAY, b"\xff\xff\xff\xff\xff", "needs 536870912 bytes of bits"),
    (DT.STRING_ARRAY, b"ABC", "must end with the NUL byte"),
    (DT.STRING_ARRAY, b"\xff\x00", "not valid UTF-8"),
])
def test_broken_array_bytes_are_refused(datatype: DataType, packed: bytes, match: str) -> None:
    msg = pb.Payload()
    msg.metrics.add(name="a", datatype=datatype, bytes_value=packed)
    with pytest.raises(SparkplugError, match=match):
        decode_payload(msg.SerializeToString())


def test_properties_quality_and_units_and_nested_sets() -> None:
    props = {
        "Quality": PropertyValue(DT.INT32, 192),
        "engUnit": PropertyValue(DT.STRING, "degC"),
        "engHigh": PropertyValue(DT.DOUBLE, 150.0),
        "StatusCode": PropertyValue(DT.UINT32, 0x800A0000),
        "big": PropertyValue(DT.UINT64, 2**64 - 1),
        "neg": PropertyValue(DT.INT64, -2**63),
        "since": PropertyValue(DT.DATETIME, TS),
        "none": PropertyValue(DT.STRING, None),
        "limits": PropertyValue(DT.PROPERTYSET, {"hi": PropertyValue(DT.FLOAT, 90.5),
                                                 "on": PropertyValue(DT.BOOLEAN, True)}),
        "history": PropertyValue(DT.PROPERTYSETLIST, ({"a": PropertyValue(DT.INT8, -5)}, {})),
    }
    back = round_trip(Metric("t", DT.DOUBLE, 21.5, properties=props))
    assert back.properties == props
    assert list(back.properties) == list(props)  # the order is kept
    msg = wire(Metric("t", DT.DOUBLE, 21.5, properties=props))
    assert list(msg.properties.keys)[:2] == ["Quality", "engUnit"]
    assert (msg.properties.values[0].type, msg.properties.values[0].int_value) == (DT.INT32, 192)
    assert msg.properties.values[7].is_null


def test_a_metric_without_properties_shares_the_empty_set() -> None:
    assert round_trip(Metric("t", DT.INT32, 1)).properties is NO_PROPERTIES


def test_a_frozen_property_set_is_written_once_and_small_sets_decode_shared() -> None:
    props = FrozenPropertySet({"Quality": PropertyValue(DT.INT32, 192), "engUnit": PropertyValue(DT.STRING, "m")})
    frozen = encode_payload(Payload(metrics=[Metric("a", DT.INT32, i, properties=props) for i in range(3)]))
    assert props.wire is not None
    assert frozen == encode_payload(Payload(metrics=[Metric("a", DT.INT32, i, properties=dict(props))
                                                     for i in range(3)]))
    assert encode_payload(Payload(metrics=[Metric("a", DT.INT32, 0, properties=props)])) == \
        encode_payload(Payload(metrics=[Metric("a", DT.INT32, 0, properties=dict(props))]))
    got = decode_payload(frozen).metrics
    assert got[0].properties is got[2].properties  # one decode of the set, shared
    assert isinstance(got[0].properties, FrozenPropertySet) and got[0].properties == props
    nested = {"s": PropertyValue(DT.PROPERTYSET, {"x": PropertyValue(DT.INT32, 1)})}
    twice = decode_payload(encode_payload(Payload(metrics=[Metric("a", DT.INT32, 0, properties=nested)] * 2)))
    assert twice.metrics[0].properties is not twice.metrics[1].properties  # holds a dict: never shared


def test_dataset_round_trip() -> None:
    ds = DataSet(("id", "name", "big", "temp", "ok", "at"),
                 (DT.INT8, DT.STRING, DT.UINT64, DT.FLOAT, DT.BOOLEAN, DT.DATETIME),
                 ((-1, "a", 2**64 - 1, 1.5, True, TS), (None, None, 0, None, False, 0)))
    assert round_trip(Metric("d", DT.DATASET, ds)).value == ds
    msg = wire(Metric("d", DT.DATASET, ds)).dataset_value
    assert (msg.num_of_columns, list(msg.types)) == (6, [1, 12, 8, 9, 11, 13])
    assert msg.rows[0].elements[0].int_value == 0xFF
    empty = DataSet((), ())
    assert round_trip(Metric("d", DT.DATASET, empty)).value == empty


@pytest.mark.parametrize(("ds", "match"), [
    (DataSet(("a",), (DT.INT32, DT.INT32)), "of 1 columns has 2 types"),
    (DataSet(("a",), (DT.INT32,), ((1, 2),)), "row of 2 cells in 1 columns"),
    (DataSet(("a",), (DT.BYTES,)), "is not a scalar datatype"),
    (DataSet(("a",), (DT.INT8,), ((300,),)), "300 is out of range for INT8"),
])
def test_broken_datasets_are_refused(ds: DataSet, match: str) -> None:
    with pytest.raises(SparkplugError, match=match):
        encode_payload(Payload(TS, 0, [Metric("d", DT.DATASET, ds)]))


def test_template_definition_and_instance_round_trip() -> None:
    definition = Template(
        metrics=(Metric("speed", DT.FLOAT, 0.0), Metric("count", DT.UINT64, 2**64 - 1),
                 Metric("inner", DT.TEMPLATE, Template((Metric("x", DT.BOOLEAN, True),), template_ref="Sub"))),
        parameters=(Parameter("max", DT.INT32, -5), Parameter("label", DT.STRING, "m"), Parameter("none", DT.INT8)),
        version="1.0", is_definition=True)
    instance = Template((Metric("speed", DT.FLOAT, 12.5),), template_ref="Motor")
    assert round_trip(Metric("Motor", DT.TEMPLATE, definition)).value == definition
    assert round_trip(Metric("m1", DT.TEMPLATE, instance)).value == instance
    # template members keep their datatype even when the DATA message leaves the metrics' off
    msg = pb.Payload()
    msg.ParseFromString(encode_payload(Payload(TS, 0, [Metric("m1", DT.TEMPLATE, instance, alias=3)]),
                                       with_datatypes=False))
    assert not msg.metrics[0].HasField("datatype")


def test_flags_timestamps_metadata_and_payload_fields() -> None:
    meta = MetaData(is_multi_part=False, content_type="application/pdf", size=8, seq=0, file_name="a.pdf",
                    file_type="pdf", md5="d41d8cd98f00b204e9800998ecf8427e", description="manual")
    m = Metric("f", DT.FILE, b"%PDF-1.7", alias=2**64 - 1, timestamp=2**64 - 1, is_historical=True,
               is_transient=True, metadata=meta)
    p = decode_payload(encode_payload(Payload(TS, 255, [m], uuid="u-1", body=b"\x00body")))
    assert p == Payload(TS, 255, [m], "u-1", b"\x00body")
    assert decode_payload(encode_payload(Payload())) == Payload(None, None, [], None, None)


def test_null_metrics() -> None:
    for datatype in (DT.INT32, DT.STRING, DT.DATASET, DT.TEMPLATE, DT.INT8_ARRAY):
        back = round_trip(Metric("n", datatype, None))
        assert (back.value, back.is_null) == (None, True)
        assert wire(Metric("n", datatype, None)).is_null
    msg = pb.Payload()
    msg.metrics.add(name="n", datatype=DT.INT32, is_null=True, int_value=0)  # is_null wins over a value
    assert decode_payload(msg.SerializeToString()).metrics[0].value is None
    with pytest.raises(SparkplugError, match="is_null with a value"):
        encode_payload(Payload(metrics=[Metric("n", DT.INT32, 5, is_null=True)]))


def test_data_messages_without_datatypes_use_what_the_births_declared() -> None:
    data = encode_payload(Payload(TS, 1, [Metric(None, DT.INT8, -1, alias=1), Metric("by-name", DT.UINT64, 2**64 - 1),
                                          Metric(None, DT.BOOLEAN_ARRAY, (True,), alias=3)]), with_datatypes=False)
    msg = pb.Payload()
    msg.ParseFromString(data)
    assert not any(m.HasField("datatype") for m in msg.metrics)
    assert not msg.metrics[0].HasField("name")
    declared = {1: DT.INT8, "by-name": DT.UINT64, 3: DT.BOOLEAN_ARRAY}
    got = decode_payload(data, declared=declared).metrics
    assert [(m.name, m.alias, m.datatype, m.value) for m in got] == [
        (None, 1, DT.INT8, -1), ("by-name", None, DT.UINT64, 2**64 - 1), (None, 3, DT.BOOLEAN_ARRAY, (True,))]
    with pytest.raises(UnknownMetricError, match="metric alias 1 has no datatype and no birth declared it") as err:
        decode_payload(data, declared={})
    assert (err.value.alias, err.value.name) == (1, None)
    assert isinstance(err.value, ContractError)


def test_births_and_deaths() -> None:
    death = decode_payload(ndeath_payload(7, timestamp=TS))
    assert death == Payload(TS, None, [Metric(BDSEQ, DT.INT64, 7)], None, None)
    assert bdseq_of(death) == 7
    msg = pb.Payload()
    msg.ParseFromString(ndeath_payload(0))
    assert not msg.HasField("seq")  # NDEATH carries no seq
    assert (msg.metrics[0].name, msg.metrics[0].datatype, msg.metrics[0].long_value) == ("bdSeq", 4, 0)
    assert not msg.metrics[0].HasField("alias")  # never an alias in a death
    assert bdseq_of(Payload(metrics=[Metric("x", DT.INT64, 1)])) is None
    with pytest.raises(SparkplugError, match=r"bdSeq must be 0\.\.255"):
        bdseq_metric(256)


@pytest.mark.parametrize(("payload", "match"), [
    (Payload(seq=256), "seq must be 0..255"),
    (Payload(seq=-1), "seq must be 0..255"),
    (Payload(timestamp=-1), "payload header"),
    (Payload(metrics=[Metric(None, DT.INT32, 1)]), "needs a name or an alias"),
    (Payload(metrics=[Metric("", DT.INT32, 1)]), "non-empty string"),
    (Payload(metrics=[Metric("x" * 2000, DT.INT32, 1)]), "at most 1024 characters"),
    (Payload(metrics=[Metric("m", DT.INT32, 1, alias=-1)]), "metric 'm': Value out of range"),
    (Payload(metrics=[Metric("m", DT.UNKNOWN, 1)]), "is not a metric datatype"),
    (Payload(metrics=[Metric("m", DT.PROPERTYSET, 1)]), "is not a metric datatype"),
    (Payload(metrics=[Metric("m", DT.INT32, 1, properties={"q": 192})]), "must be a PropertyValue"),  # type: ignore[dict-item]
    (Payload(metrics=[Metric("m", DT.INT32, 1, properties={"q": PropertyValue(DT.BYTES, b"")})]),
     "of a property datatype"),
    (Payload(metrics=[Metric("m", DT.INT32, 1, properties={"q": PropertyValue(DT.INT8, 999)})]),
     "property 'q': 999 is out of range for INT8"),
])
def test_encoding_refuses_what_breaks_the_specification(payload: Payload, match: str) -> None:
    with pytest.raises(SparkplugError, match=match):
        encode_payload(payload)


def _raw_metric(**fields: Any) -> bytes:
    msg = pb.Payload()
    msg.metrics.add(**fields)
    return msg.SerializeToString()


@pytest.mark.parametrize(("data", "match"), [
    (b"\xff\xff\xff", "not a Sparkplug B payload"),
    (b"\x12\x80", "not a Sparkplug B payload"),                    # truncated metric
    (b"\x08", "not a Sparkplug B payload"),                       # a timestamp varint cut short
    (b"\x12\x04\x0a\x02\xff\xfe", "not valid UTF-8"),              # a metric name of invalid UTF-8
    (_raw_metric(datatype=3, int_value=1), "neither a name nor an alias"),
    (_raw_metric(name="m", datatype=99, int_value=1), "datatype 99 is not a metric datatype"),
    (_raw_metric(name="m", datatype=0, int_value=1), "datatype 0 is not a metric datatype"),
    (_raw_metric(name="m", datatype=20, int_value=1), "datatype 20 is not a metric datatype"),
    (_raw_metric(name="m", datatype=3, string_value="1"), "a INT32 cannot be carried in string_value"),
    (_raw_metric(name="m", datatype=9, double_value=1.0), "a FLOAT cannot be carried in double_value"),
    (_raw_metric(name="m", datatype=17, int_value=1), "a BYTES cannot be carried in int_value"),
    (_raw_metric(name="m", datatype=3, extension_value={}), "cannot be carried in extension_value"),
    (_raw_metric(name="m", datatype=3, int_value=1, properties={"keys": ["a", "b"], "values": [{"type": 3}]}),
     "of 2 keys has 1 values"),
    (_raw_metric(name="m", datatype=3, int_value=1,
                 properties={"keys": ["a", "a"], "values": [{"type": 3}, {"type": 3}]}), "'a' twice"),
    (_raw_metric(name="m", datatype=3, int_value=1, properties={"keys": ["a"], "values": [{"type": 17}]}),
     "type 17 is not a property datatype"),
    (_raw_metric(name="m", datatype=16, dataset_value={"columns": ["a"], "types": [3, 3]}), "1 columns has 2 types"),
    (_raw_metric(name="m", datatype=16, dataset_value={"num_of_columns": 2, "columns": ["a"], "types": [3]}),
     "num_of_columns 2"),
    (_raw_metric(name="m", datatype=16, dataset_value={"columns": ["a"], "types": [3], "rows": [{}]}),
     "row of 0 cells in 1 columns"),
    (_raw_metric(name="m", datatype=19, template_value={"parameters": [{"name": "p", "type": 16}]}),
     "parameter type 16 is not a scalar datatype"),
    (_raw_metric(name="m", datatype=19, template_value={"metrics": [{"name": "x", "int_value": 1}]}),
     "metric name 'x' has no datatype"),
    (pb.Payload(seq=300).SerializeToString(), "seq must be 0..255"),
    (pb.Payload(uuid="x").SerializeToString().replace(b"x", b"\xff"), "uuid must be valid UTF-8"),
])
def test_bad_bytes_raise_a_contract_error_saying_what(data: bytes, match: str) -> None:
    with pytest.raises(SparkplugError, match=match) as err:
        decode_payload(data)
    assert len(str(err.value)) < 500


def test_sizes_are_bounded() -> None:
    with pytest.raises(SparkplugError, match="larger than"):
        decode_payload(b"\x00" * (MAX_PAYLOAD_BYTES + 1))
    metric = b"\x12\x04\x10\x01\x70\x01"  # alias 1, boolean_value true
    assert decode_payload(metric, declared={1: DT.BOOLEAN}).metrics == [Metric(None, DT.BOOLEAN, True, 1)]
    with pytest.raises(SparkplugError, match=f"of {MAX_METRICS + 1} metrics holds more than {MAX_METRICS}"):
        decode_payload(metric * (MAX_METRICS + 1), declared={1: DT.BOOLEAN})
    cells = _raw_metric(name="d", datatype=DT.DATASET,
                        dataset_value={"columns": [f"c{i}" for i in range(1000)], "types": [3] * 1000,
                                       "rows": [{}] * (MAX_VALUES // 1000)})
    with pytest.raises(SparkplugError, match=f"more than {MAX_VALUES} values"):
        decode_payload(cells)
    bits = _raw_metric(name="b", datatype=DT.BOOLEAN_ARRAY,
                       bytes_value=(8 * 200_000).to_bytes(4, "little") + b"\xff" * 200_000)
    with pytest.raises(SparkplugError, match="BOOLEAN_ARRAY of 1600000 items is more than this payload may hold"):
        decode_payload(bits)
    with pytest.raises(SparkplugError, match="longer than 1048576"):
        decode_payload(_raw_metric(name="s", datatype=DT.STRING, string_value="x" * (1024 * 1024 + 1)))


def test_nesting_is_bounded() -> None:
    inner = Template((Metric("leaf", DT.INT32, 1),))
    for _ in range(9):
        inner = Template((Metric("t", DT.TEMPLATE, inner),))
    with pytest.raises(SparkplugError, match="templates nested deeper than 8"):
        encode_payload(Payload(metrics=[Metric("top", DT.TEMPLATE, inner)]))
    props: dict[str, PropertyValue] = {}
    for _ in range(10):
        props = {"p": PropertyValue(DT.PROPERTYSET, props)}
    with pytest.raises(SparkplugError, match="property sets nested deeper than 8"):
        encode_payload(Payload(metrics=[Metric("m", DT.INT32, 1, properties=props)]))
    # and from bytes: 30 property sets deep, within protobuf's own recursion limit
    raw = pb.Payload.PropertySet()
    for _ in range(30):
        outer = pb.Payload.PropertySet(keys=["p"])
        outer.values.add(type=DT.PROPERTYSET, propertyset_value=raw)
        raw = outer
    msg = pb.Payload()
    msg.metrics.add(name="m", datatype=DT.INT32, int_value=1, properties=raw)
    with pytest.raises(SparkplugError, match="nested deeper than 8"):
        decode_payload(msg.SerializeToString())
    # and past protobuf's limit: its DecodeError comes out as ours
    with pytest.raises(SparkplugError, match=r"not a Sparkplug B payload|nested deeper"):
        decode_payload(_nest_templates(120))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _nest_templates(depth: int) -> bytes:
    """A metric holding a template holding a metric ... ``depth`` times, as raw bytes."""
    body = b"\x0a\x01x"  # metric name "x"
    for _ in range(depth):
        template = b"\x12" + _varint(len(body)) + body  # Template.metrics
        # name "x", datatype 19 (Template), template_value
        body = b"\x0a\x01x\x20\x13" + b"\x92\x01" + _varint(len(template)) + template
    return b"\x12" + _varint(len(body)) + body
