"""Unit tests of Modbus register conversion and read coalescing (no device needed)."""

from __future__ import annotations

import itertools
import math
import struct

import pytest

from gateway.config import TagConfig
from gateway.drivers.modbus.driver import MAX_BITS, ModbusAddress, Span, plan
from gateway.drivers.modbus.registers import (
    BYTE_ORDERS,
    REGISTER_COUNT,
    TYPES,
    decode,
    encode,
    register_count,
)

ORDERS = list(itertools.product(BYTE_ORDERS, BYTE_ORDERS))

EDGES: dict[str, list[int | float]] = {
    "int16": [-(2**15), -1, 0, 1, 2**15 - 1],
    "uint16": [0, 1, 0x00FF, 0xFF00, 2**16 - 1],
    "int32": [-(2**31), -1, 0, 1, 2**31 - 1, 0x12345678],
    "uint32": [0, 1, 2**32 - 1, 0x12345678],
    "int64": [-(2**63), -1, 0, 1, 2**63 - 1, 0x0102030405060708],
    "uint64": [0, 1, 2**64 - 1, 0x0102030405060708],
    "float32": [0.0, 1.5, -1.5, 56.398, 0.1, 3.4028235e38, -3.4028235e38, 1.4013e-45, 1.1754944e-38, 123456.7,
                math.inf, -math.inf],
    "float64": [0.0, 0.1, -2.5, 1.7976931348623157e308, 5e-324, math.pi, math.inf, -math.inf],
}


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize(("dtype", "value"), [(t, v) for t, vs in EDGES.items() for v in vs])
def test_round_trip(dtype: str, value: int | float, byte_order: str, word_order: str) -> None:
    regs = encode(value, dtype, byte_order=byte_order, word_order=word_order)
    assert len(regs) == REGISTER_COUNT[dtype] == register_count(dtype)
    assert all(0 <= r <= 0xFFFF for r in regs)
    back = decode(regs, dtype, byte_order=byte_order, word_order=word_order)
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_negative_zero_and_nan(dtype: str, byte_order: str, word_order: str) -> None:
    kw = {"byte_order": byte_order, "word_order": word_order}
    neg = decode(encode(-0.0, dtype, **kw), dtype, **kw)
    assert neg == 0.0 and math.copysign(1.0, neg) == -1.0
    assert math.isnan(decode(encode(math.nan, dtype, **kw), dtype, **kw))


@pytest.mark.parametrize(
    ("exact", "shortest"),
    [(3.4028234663852886e38, 3.4028235e38), (-3.4028234663852886e38, -3.4028235e38),
     (1.401298464324817e-45, 1.4013e-45), (1.1754943508222875e-38, 1.1754944e-38)],
)
def test_float32_extremes_read_back_as_shortest_decimal(exact: float, shortest: float) -> None:
    """float32 max/min/denormal come back as the shortest decimal of the same float32 bits."""
    for bo, wo in ORDERS:
        back = decode(encode(exact, "float32", byte_order=bo, word_order=wo), "float32", byte_order=bo, word_order=wo)
        assert back == shortest
        assert struct.pack(">f", back) == struct.pack(">f", exact)


def test_float32_shortest_repr() -> None:
    regs = encode(56.398, "float32")
    assert decode(regs, "float32") == 56.398
    assert repr(decode(regs, "float32")) == "56.398"
    # the float32 nearest to 0.1 reads back as 0.1, not 0.10000000149011612
    assert decode(encode(0.1, "float32"), "float32") == 0.1
    # a value float32 cannot hold reads back as the nearest float32, shortest form
    assert decode(encode(16777217, "float32"), "float32") == 16777216.0
    raw = struct.pack(">f", 1 / 3)
    assert decode([int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")], "float32") == 0.33333334


@pytest.mark.parametrize(
    ("value", "dtype", "byte_order", "word_order", "regs"),
    [
        (1.5, "float32", "big", "big", [0x3FC0, 0x0000]),
        (1.5, "float32", "big", "little", [0x0000, 0x3FC0]),
        (1.5, "float32", "little", "big", [0xC03F, 0x0000]),
        (1.5, "float32", "little", "little", [0x0000, 0xC03F]),
        (0x12345678, "uint32", "big", "big", [0x1234, 0x5678]),
        (0x12345678, "uint32", "big", "little", [0x5678, 0x1234]),
        (0x12345678, "uint32", "little", "big", [0x3412, 0x7856]),
        (0x12345678, "uint32", "little", "little", [0x7856, 0x3412]),
        (-2, "int16", "big", "big", [0xFFFE]),
        (-2, "int16", "little", "big", [0xFEFF]),
        (0x1234, "uint16", "big", "little", [0x1234]),  # word order is moot for one register
        (0x0102030405060708, "uint64", "big", "big", [0x0102, 0x0304, 0x0506, 0x0708]),
        (0x0102030405060708, "uint64", "big", "little", [0x0708, 0x0506, 0x0304, 0x0102]),
        (1.0, "float64", "big", "big", [0x3FF0, 0, 0, 0]),
        (1.0, "float64", "big", "little", [0, 0, 0, 0x3FF0]),
    ],
)
def test_known_layouts(value: float, dtype: str, byte_order: str, word_order: str, regs: list[int]) -> None:
    assert encode(value, dtype, byte_order=byte_order, word_order=word_order) == regs
    assert decode(regs, dtype, byte_order=byte_order, word_order=word_order) == value


def test_types_list() -> None:
    assert set(TYPES) == {"bool", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64",
                          "float64", "string"}
    assert register_count("string", 0) == 0
    assert register_count("string", 1) == 1
    assert register_count("string", 4) == 2
    assert register_count("string", 5) == 3
    assert register_count("string", 250) == 125


# ---------------------------------------------------------------- strings


def test_string_layout_big_and_little() -> None:
    assert encode("ABC", "string", length=4) == [0x4142, 0x4300]
    assert encode("ABC", "string", length=4, byte_order="little") == [0x4241, 0x0043]
    # strings ignore the word order
    assert encode("ABCD", "string", length=4, word_order="little") == [0x4142, 0x4344]
    assert decode([0x4142, 0x4344], "string", word_order="little") == "ABCD"


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize(("text", "length"), [("", 1), ("A", 1), ("AB", 2), ("ABC", 3), ("ABC", 10), ("Müller", 6)])
def test_string_round_trip(text: str, length: int, byte_order: str, word_order: str) -> None:
    regs = encode(text, "string", byte_order=byte_order, word_order=word_order, length=length)
    assert len(regs) == register_count("string", length)
    assert decode(regs, "string", byte_order=byte_order, word_order=word_order) == text


def test_string_decode_nul_terminated_and_space_padded() -> None:
    assert decode([0x4142, 0x0043, 0x4445], "string") == "AB"  # stops at the first NUL
    assert decode([0x4F4B, 0x2020], "string") == "OK"  # PLC space padding stripped
    assert decode([0x2041, 0x2020], "string") == " A"  # leading spaces kept
    assert decode([0, 0], "string") == ""


def test_string_encode_errors() -> None:
    with pytest.raises(ValueError, match="string of 5 characters does not fit 4"):
        encode("ABCDE", "string", length=4)
    with pytest.raises(ValueError):  # not latin-1
        encode("温度", "string", length=10)


# ---------------------------------------------------------------- bool


def test_bool() -> None:
    assert encode(True, "bool") == [1]
    assert encode(False, "bool") == [0]
    assert encode(7, "bool") == [1]
    assert decode([0], "bool") is False
    assert decode([0x8000], "bool") is True  # whole register: any bit set
    reg = 0b1000_0000_0010_0101
    assert [decode([reg], "bool", bit=b) for b in range(16)] == [bool(reg >> b & 1) for b in range(16)]
    assert decode([reg], "bool", bit=0) is True
    assert decode([reg], "bool", bit=1) is False
    assert decode([reg], "bool", bit=15) is True
    assert decode([0xFFFE], "bool", bit=0) is False


# ---------------------------------------------------------------- encode errors


@pytest.mark.parametrize("dtype", ["int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_int_rejects_non_integer(dtype: str) -> None:
    with pytest.raises(ValueError, match=r"1\.5 is not an integer"):
        encode(1.5, dtype)
    with pytest.raises(ValueError):
        encode(math.nan, dtype)
    with pytest.raises(ValueError):
        encode(math.inf, dtype)
    with pytest.raises(ValueError):
        encode("abc", dtype)
    assert encode(3.0, dtype) == encode(3, dtype)  # an integral float is fine


@pytest.mark.parametrize(
    ("dtype", "value"),
    [("int16", 2**15), ("int16", -(2**15) - 1), ("uint16", -1), ("uint16", 2**16), ("int32", 2**31),
     ("uint32", 2**32), ("uint32", -1), ("int64", 2**63), ("uint64", 2**64), ("uint64", -1)],
)
def test_int_out_of_range(dtype: str, value: int) -> None:
    with pytest.raises(struct.error):
        encode(value, dtype)


def test_float32_out_of_range_raises_value_error() -> None:
    with pytest.raises((ValueError, struct.error)):
        encode(1e39, "float32")


# ---------------------------------------------------------------- plan (coalescing)


def _tag(name: str, address: int, table: str = "holding", dtype: str | None = None, **kw: object) -> TagConfig:
    dtype = dtype or ("bool" if table in ("coil", "discrete") else "uint16")
    count = 1 if table in ("coil", "discrete") else register_count(dtype, int(kw.get("length", 0)))  # type: ignore[arg-type]
    bit = kw.pop("bit", None)
    addr = ModbusAddress(table=table, address=address, count=count, bit=bit, byte_order="big",  # type: ignore[arg-type]
                         word_order="big")
    return TagConfig(name=name, address=addr, type=dtype, **kw)  # type: ignore[arg-type]


def _shape(spans: list[Span]) -> list[tuple[str, int, int, list[str]]]:
    return [(s.table, s.start, s.count, [t.name for t in s.tags]) for s in spans]


def test_plan_merges_neighbours() -> None:
    tags = [_tag("a", 0, dtype="float32"), _tag("b", 2), _tag("c", 3, dtype="int32")]
    assert _shape(plan(tags, max_registers=125, max_gap=0)) == [("holding", 0, 5, ["a", "b", "c"])]


def test_plan_sorts_by_address() -> None:
    tags = [_tag("c", 20), _tag("a", 10), _tag("b", 15)]
    assert _shape(plan(tags, max_registers=125, max_gap=8)) == [("holding", 10, 11, ["a", "b", "c"])]


def test_plan_gap() -> None:
    tags = [_tag("a", 0), _tag("b", 9), _tag("c", 19)]  # holes of 8 and 9 registers
    assert _shape(plan(tags, max_registers=125, max_gap=8)) == [
        ("holding", 0, 10, ["a", "b"]), ("holding", 19, 1, ["c"])]
    assert _shape(plan(tags, max_registers=125, max_gap=9)) == [("holding", 0, 20, ["a", "b", "c"])]
    assert len(plan(tags, max_registers=125, max_gap=0)) == 3


def test_plan_max_registers() -> None:
    tags = [_tag(f"t{i}", i * 2, dtype="float32") for i in range(10)]  # 20 contiguous registers
    assert _shape(plan(tags, max_registers=8, max_gap=8)) == [
        ("holding", 0, 8, ["t0", "t1", "t2", "t3"]),
        ("holding", 8, 8, ["t4", "t5", "t6", "t7"]),
        ("holding", 16, 4, ["t8", "t9"]),
    ]
    # a tag that would straddle the limit starts a new span
    tags = [_tag("a", 0), _tag("b", 4, dtype="float32")]
    assert _shape(plan(tags, max_registers=5, max_gap=8)) == [("holding", 0, 1, ["a"]), ("holding", 4, 2, ["b"])]
    assert _shape(plan(tags, max_registers=6, max_gap=8)) == [("holding", 0, 6, ["a", "b"])]
    # with the Modbus maximum every span stays within 125 registers
    many = [_tag(f"r{i}", i) for i in range(300)]
    spans = plan(many, max_registers=125, max_gap=8)
    assert [s.count for s in spans] == [125, 125, 50]
    assert sum(len(s.tags) for s in spans) == 300


def test_plan_coils_limited_by_max_bits_not_max_registers() -> None:
    coils = [_tag(f"c{i}", i, table="coil") for i in range(MAX_BITS + 1)]
    spans = plan(coils, max_registers=10, max_gap=8)
    assert _shape(spans)[0][:3] == ("coil", 0, MAX_BITS)
    assert _shape(spans)[1] == ("coil", MAX_BITS, 1, [f"c{MAX_BITS}"])
    assert MAX_BITS == 2000
    discrete = [_tag("d0", 0, table="discrete"), _tag("d1", 1999, table="discrete"),
                _tag("d2", 2000, table="discrete")]
    assert _shape(plan(discrete, max_registers=125, max_gap=5000)) == [
        ("discrete", 0, 2000, ["d0", "d1"]), ("discrete", 2000, 1, ["d2"])]


def test_plan_never_mixes_tables() -> None:
    tags = [_tag("h", 0), _tag("i", 1, table="input"), _tag("c", 2, table="coil"),
            _tag("d", 3, table="discrete"), _tag("h2", 1), _tag("i2", 0, table="input")]
    assert _shape(plan(tags, max_registers=125, max_gap=8)) == [
        ("holding", 0, 2, ["h", "h2"]),
        ("input", 0, 2, ["i2", "i"]),
        ("coil", 2, 1, ["c"]),
        ("discrete", 3, 1, ["d"]),
    ]


def test_plan_overlapping_tags() -> None:
    # bits of one register, plus the whole register as uint16, plus a float32 starting on it
    tags = [_tag("b0", 5, dtype="bool", bit=0), _tag("b7", 5, dtype="bool", bit=7), _tag("word", 5),
            _tag("f", 5, dtype="float32"), _tag("b15", 6, dtype="bool", bit=15)]
    spans = plan(tags, max_registers=125, max_gap=0)
    assert len(spans) == 1
    assert (spans[0].start, spans[0].count) == (5, 2)
    assert sorted(t.name for t in spans[0].tags) == ["b0", "b15", "b7", "f", "word"]
    # a short tag inside a long one does not shrink the span
    tags = [_tag("s", 0, dtype="string", length=20), _tag("x", 3)]
    assert _shape(plan(tags, max_registers=125, max_gap=0)) == [("holding", 0, 10, ["s", "x"])]


def test_plan_empty() -> None:
    assert plan([], max_registers=125, max_gap=8) == []


def test_plan_every_tag_inside_its_span() -> None:
    tags = [_tag(f"t{i}", (i * 7919) % 1000, dtype=["uint16", "float32", "float64"][i % 3]) for i in range(200)]
    spans = plan(tags, max_registers=40, max_gap=3)
    assert sorted(t.name for s in spans for t in s.tags) == sorted(t.name for t in tags)
    for s in spans:
        assert s.count <= 40
        for t in s.tags:
            a = t.address
            assert s.start <= a.address and a.address + a.count <= s.start + s.count


def test_fast_span_decode_equals_tag_by_tag() -> None:
    import random

    rng = random.Random(7)
    kinds = ["uint16", "int16", "int32", "uint32", "float32", "float64", "int64", "uint64"]
    tags, addr = [], 0
    for i in range(60):
        dtype = kinds[i % len(kinds)]
        tags.append(_tag(f"t{i}", addr, dtype=dtype))
        addr += register_count(dtype) + rng.choice((0, 0, 1, 3))
    spans = plan(tags, max_registers=125, max_gap=8)
    assert spans and all(s.fast is not None for s in spans)
    for _ in range(300):
        for s in spans:
            regs = [rng.randrange(65536) for _ in range(s.count)]
            slow = [decode(regs[t.address.address - s.start:][:t.address.count], t.type) for t in s.tags]
            fast = s.fast.decode(regs)  # type: ignore[union-attr]
            assert [repr(v) for v in fast] == [repr(v) for v in slow]  # repr: NaN == NaN, -0.0 != 0.0


def test_fast_span_decode_not_used_for_bits_strings_or_other_orders() -> None:
    assert plan([_tag("b", 0, dtype="bool", bit=1), _tag("w", 1)], max_registers=125, max_gap=8)[0].fast is None
    assert plan([_tag("s", 0, dtype="string", length=4)], max_registers=125, max_gap=8)[0].fast is None
    little = TagConfig(name="l", type="int32", address=ModbusAddress(table="holding", address=0, count=2,
                                                                      byte_order="big", word_order="little"))
    assert plan([little], max_registers=125, max_gap=8)[0].fast is None
