"""Property tests of the Sparkplug B codec: every scalar and array value of its datatype's range
comes back exactly, and whatever the bytes, decode_payload returns a payload or raises a
SparkplugError with a bounded text (never a protobuf or other exception)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.sparkplug.codec import decode_payload, encode_payload
from proto.sparkplug.errors import SparkplugError
from proto.sparkplug.model import (
    SIGNED_BITS,
    UNSIGNED_BITS,
    DataSet,
    DataType,
    Metric,
    Payload,
    PropertyValue,
)

DT = DataType
PROPS = settings(max_examples=300, deadline=None, database=None)
FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def int_range(datatype: DataType) -> tuple[int, int]:
    if datatype in SIGNED_BITS:
        bits = SIGNED_BITS[datatype]
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << UNSIGNED_BITS[datatype]) - 1


INTEGER_TYPES = [*SIGNED_BITS, *UNSIGNED_BITS]
integer_metrics = st.sampled_from(INTEGER_TYPES).flatmap(
    lambda dt: st.tuples(st.just(dt), st.integers(*int_range(dt))))
ARRAY_OF = {DT.INT8_ARRAY: DT.INT8, DT.INT16_ARRAY: DT.INT16, DT.INT32_ARRAY: DT.INT32, DT.INT64_ARRAY: DT.INT64,
            DT.UINT8_ARRAY: DT.UINT8, DT.UINT16_ARRAY: DT.UINT16, DT.UINT32_ARRAY: DT.UINT32,
            DT.UINT64_ARRAY: DT.UINT64, DT.DATETIME_ARRAY: DT.DATETIME}
int_arrays = st.sampled_from(list(ARRAY_OF)).flatmap(
    lambda dt: st.tuples(st.just(dt), st.lists(st.integers(*int_range(ARRAY_OF[dt])), max_size=20).map(tuple)))


def back(metric: Metric, *, with_datatypes: bool = True) -> Any:
    data = encode_payload(Payload(1, 0, [metric]), with_datatypes=with_datatypes)
    declared = {metric.alias: metric.datatype} if metric.alias is not None else None
    return decode_payload(data, declared=declared).metrics[0].value


@PROPS
@given(integer_metrics, st.booleans())
def test_integers_round_trip_exactly(case: tuple[DataType, int], with_datatypes: bool) -> None:
    datatype, value = case
    assert back(Metric(None, datatype, value, alias=9), with_datatypes=with_datatypes) == value


@PROPS
@given(st.floats(width=32, allow_nan=False))
def test_float32_values_round_trip_exactly(value: float) -> None:
    assert back(Metric("f", DT.FLOAT, value)) == value


@PROPS
@given(st.floats(allow_nan=False))
def test_doubles_round_trip_exactly(value: float) -> None:
    assert back(Metric("d", DT.DOUBLE, value)) == value


@PROPS
@given(st.sampled_from([DT.STRING, DT.TEXT, DT.UUID]), st.text(max_size=50))
def test_strings_round_trip(datatype: DataType, value: str) -> None:
    assert back(Metric("s", datatype, value)) == value


@PROPS
@given(st.binary(max_size=100), st.booleans())
def test_bytes_and_booleans_round_trip(value: bytes, flag: bool) -> None:
    assert back(Metric("b", DT.BYTES, value)) == value
    assert back(Metric("b", DT.BOOLEAN, flag)) is flag


@PROPS
@given(int_arrays)
def test_integer_arrays_round_trip_exactly(case: tuple[DataType, tuple[int, ...]]) -> None:
    datatype, value = case
    assert back(Metric("a", datatype, value)) == value


@PROPS
@given(st.lists(st.booleans(), max_size=70), st.lists(st.text(alphabet=st.characters(blacklist_characters="\x00",
                                                                                         blacklist_categories=("Cs",)),
                                                             max_size=8), max_size=10),
       st.lists(st.floats(width=32, allow_nan=False), max_size=10))
def test_boolean_string_and_float_arrays_round_trip(bools: list[bool], texts: list[str], floats: list[float]) -> None:
    assert back(Metric("a", DT.BOOLEAN_ARRAY, bools)) == tuple(bools)
    assert back(Metric("a", DT.STRING_ARRAY, texts)) == tuple(texts)
    assert back(Metric("a", DT.FLOAT_ARRAY, floats)) == tuple(floats)
    assert back(Metric("a", DT.DOUBLE_ARRAY, floats)) == tuple(floats)


@PROPS
@given(integer_metrics, st.text(max_size=10))
def test_property_values_and_dataset_cells_round_trip(case: tuple[DataType, int], text: str) -> None:
    datatype, value = case
    props = {"v": PropertyValue(datatype, value), "t": PropertyValue(DT.STRING, text)}
    got = decode_payload(encode_payload(Payload(metrics=[Metric("m", DT.BOOLEAN, True, properties=props)])))
    assert dict(got.metrics[0].properties) == props
    ds = DataSet(("v", "t"), (datatype, DT.STRING), ((value, text),))
    assert back(Metric("d", DT.DATASET, ds)) == ds


def _check(data: bytes) -> None:
    try:
        decode_payload(data, declared={1: DT.INT8, 2: DT.STRING, "m": DT.BOOLEAN_ARRAY})
    except SparkplugError as exc:
        assert len(str(exc)) < 2000


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_contract_error(data: bytes) -> None:
    _check(data)


SAMPLE = encode_payload(Payload(1732370000123, 4, [
    Metric("temp", DT.FLOAT, 21.5, alias=1, properties={"Quality": PropertyValue(DT.INT32, 192),
                                                        "engUnit": PropertyValue(DT.STRING, "degC")}),
    Metric("flags", DT.BOOLEAN_ARRAY, (True, False, True), alias=2),
    Metric("names", DT.STRING_ARRAY, ("a", "b"), alias=3),
    Metric("table", DT.DATASET, DataSet(("a", "b"), (DT.INT8, DT.STRING), ((-1, "x"),)), alias=4),
    Metric("n", DT.UINT64, 2**64 - 1, alias=5),
]))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, len(SAMPLE)))
def test_mutated_payloads_decode_or_raise_a_contract_error(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SAMPLE)
    for at, byte in flips:
        data[at] = byte
    _check(bytes(data))
    _check(bytes(data[:cut]))
