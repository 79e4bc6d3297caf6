"""One value between its Python form and its Sparkplug B wire form.

Integers: the specification carries Int8/16/32 and UInt8/16/32 in the ``uint32`` field
``int_value``, Int64, UInt64 and DateTime in the ``uint64`` field ``long_value``; a negative
value is its two's complement. We write the two's complement of the datatype's own width (Int8 -1
is 255, Int64 -1 is 2^64 - 1), as the specification's examples and most implementations do, and
read that and the form sign-extended to the field's width (Int8 -1 as 0xFFFFFFFF, what a Java
encoder widening a byte writes). Anything else out of the datatype's range is refused, never
wrapped. Every 64-bit value is exact (Python ints; no float on the way).

Arrays are packed little-endian into ``bytes_value``: fixed-size items back to back; BooleanArray
as a 4-byte little-endian count followed by the bits, most significant bit first, the last byte
padded with zeros; StringArray as UTF-8 strings each ended by a NUL byte.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

from proto.sparkplug.errors import SparkplugError
from proto.sparkplug.model import (
    LONG_TYPES,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    SIGNED_BITS,
    STRING_TYPES,
    UNSIGNED_BITS,
    DataType,
    Scalar,
)

#: the largest finite float32; a finite value beyond it would silently become infinity on the wire
FLOAT32_MAX = 3.4028234663852886e38

#: struct item format of each fixed-size array datatype
ARRAY_FORMATS = {
    DataType.INT8_ARRAY: "b", DataType.INT16_ARRAY: "h", DataType.INT32_ARRAY: "i", DataType.INT64_ARRAY: "q",
    DataType.UINT8_ARRAY: "B", DataType.UINT16_ARRAY: "H", DataType.UINT32_ARRAY: "I",
    DataType.UINT64_ARRAY: "Q", DataType.FLOAT_ARRAY: "f", DataType.DOUBLE_ARRAY: "d",
    DataType.DATETIME_ARRAY: "Q",
}
_FLOAT_ARRAYS = frozenset({DataType.FLOAT_ARRAY, DataType.DOUBLE_ARRAY})


def describe(value: object) -> str:
    """A bounded description of a value for an error text (never the repr of a whole structure)."""
    if isinstance(value, (bool, float)) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value) if -10**30 < value < 10**30 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value)} bytes"
    return type(value).__name__


def int_to_wire(datatype: DataType, value: object) -> int:
    """The unsigned wire integer of ``value`` as a ``datatype`` (an integer datatype)."""
    if type(value) is not int:  # bool too: a bool is no Int32 (the mapping helpers convert on purpose)
        raise SparkplugError(f"a {datatype.name} needs an int, got {describe(value)}")
    bits = SIGNED_BITS.get(datatype)
    if bits is not None:
        if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise SparkplugError(f"{describe(value)} is out of range for {datatype.name}")
        return value & ((1 << bits) - 1)
    bits = UNSIGNED_BITS[datatype]
    if not 0 <= value < 1 << bits:
        raise SparkplugError(f"{describe(value)} is out of range for {datatype.name}")
    return value


def int_from_wire(datatype: DataType, raw: int, width: int) -> int:
    """The value of wire integer ``raw`` read from a field of ``width`` bits (32 or 64)."""
    bits = SIGNED_BITS.get(datatype)
    if bits is not None:
        if raw < 1 << bits:
            return raw - (1 << bits) if raw >> (bits - 1) else raw
        if raw >= (1 << width) - (1 << (bits - 1)):  # sign-extended to the field's width
            return raw - (1 << width)
    elif raw < 1 << UNSIGNED_BITS[datatype]:
        return raw
    raise SparkplugError(f"wire value {raw} is out of range for {datatype.name}")


def to_float32(value: object) -> float:
    if type(value) is not float and type(value) is not int:
        raise SparkplugError(f"a Float needs a number, got {describe(value)}")
    try:
        f = float(value)
    except OverflowError:
        raise SparkplugError(f"{describe(value)} is out of range for Float") from None
    if math.isfinite(f) and not -FLOAT32_MAX <= f <= FLOAT32_MAX:
        raise SparkplugError(f"{describe(value)} is out of range for Float (float32)")
    return f


def to_double(value: object) -> float:
    if type(value) is not float and type(value) is not int:
        raise SparkplugError(f"a Double needs a number, got {describe(value)}")
    try:
        return float(value)
    except OverflowError:
        raise SparkplugError(f"{describe(value)} is out of range for Double") from None


def check_text(value: object, what: str = "a String") -> str:
    """``value`` if it is a str the wire can carry (UTF-8: no lone surrogate) within our bound."""
    if type(value) is not str:
        # decoding: protobuf hands a proto2 string that is not valid UTF-8 over as bytes
        raise SparkplugError(f"{what} must be valid UTF-8 text, got {describe(value)}")
    if len(value) > MAX_TEXT_CHARS:
        raise SparkplugError(f"{what} of {len(value)} characters is longer than {MAX_TEXT_CHARS}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SparkplugError(f"{what} {describe(value)} is not valid UTF-8 (a lone surrogate)") from None
    return value


def check_name(value: object, what: str) -> str:
    """``value`` if it can be a metric name, property key, column or parameter name."""
    if type(value) is str and value and len(value) <= MAX_NAME_CHARS:
        return check_text(value, what)
    if isinstance(value, bytes):  # protobuf's form of a proto2 string that is not UTF-8
        raise SparkplugError(f"{what} is not valid UTF-8 ({len(value)} bytes)")
    raise SparkplugError(f"{what} must be a non-empty string of at most {MAX_NAME_CHARS} characters, "
                         f"got {describe(value)}")


def _int_putter(datatype: DataType) -> Callable[[Any, object], None]:
    signed = datatype in SIGNED_BITS
    bits = SIGNED_BITS[datatype] if signed else UNSIGNED_BITS[datatype]
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    mask = (1 << bits) - 1

    def put_long(target: Any, value: object) -> None:
        if type(value) is not int or not low <= value <= high:
            int_to_wire(datatype, value)  # raises, saying why
        target.long_value = value & mask  # type: ignore[operator]

    def put_int(target: Any, value: object) -> None:
        if type(value) is not int or not low <= value <= high:
            int_to_wire(datatype, value)
        target.int_value = value & mask  # type: ignore[operator]

    return put_long if datatype in LONG_TYPES else put_int


def _put_double(target: Any, value: object) -> None:
    target.double_value = value if type(value) is float else to_double(value)


def _put_float(target: Any, value: object) -> None:
    target.float_value = to_float32(value)


def _put_boolean(target: Any, value: object) -> None:
    if type(value) is not bool:
        raise SparkplugError(f"a Boolean needs a bool, got {describe(value)}")
    target.boolean_value = value


def _text_putter(datatype: DataType) -> Callable[[Any, object], None]:
    what = f"a {datatype.name}"

    def put(target: Any, value: object) -> None:
        target.string_value = check_text(value, what)

    return put


#: how each scalar datatype sets its value field
_PUTTERS: dict[DataType, Callable[[Any, object], None]] = {
    **{dt: _int_putter(dt) for dt in (*SIGNED_BITS, *UNSIGNED_BITS)},
    **{dt: _text_putter(dt) for dt in STRING_TYPES},
    DataType.DOUBLE: _put_double, DataType.FLOAT: _put_float, DataType.BOOLEAN: _put_boolean,
}


def put_scalar(target: Any, datatype: DataType, value: object) -> None:
    """Set the value field of ``target`` (a metric, property value, data set value or template
    parameter message: the same field names) to ``value`` as a scalar ``datatype``."""
    put = _PUTTERS.get(datatype)
    if put is None:
        raise SparkplugError(f"{datatype.name} is not a scalar datatype")
    put(target, value)


#: the value field of each scalar datatype but the integers (which may use either integer field)
_FIELDS = {DataType.DOUBLE: "double_value", DataType.FLOAT: "float_value", DataType.BOOLEAN: "boolean_value",
           **dict.fromkeys(STRING_TYPES, "string_value")}


def get_scalar(source: Any, kind: str | None, datatype: DataType) -> Scalar:
    """The value of ``source`` whose set value field is ``kind``, as a scalar ``datatype``."""
    if datatype in SIGNED_BITS or datatype in UNSIGNED_BITS:
        # either integer field is read: some encoders put a UInt32 into long_value
        if kind == "int_value":
            return int_from_wire(datatype, source.int_value, 32)
        if kind == "long_value":
            return int_from_wire(datatype, source.long_value, 64)
    else:
        field = _FIELDS.get(datatype)
        if field is None:
            raise SparkplugError(f"{datatype.name} is not a scalar datatype here")
        if kind == field:
            value = getattr(source, field)
            # protobuf gives float and bool; a string field that is not UTF-8 comes as bytes
            return check_text(value, f"a {datatype.name}") if field == "string_value" else value
    raise SparkplugError(f"a {datatype.name} cannot be carried in {kind or 'no value field'}")


def pack_array(datatype: DataType, values: Sequence[object]) -> bytes:
    """The ``bytes_value`` of an array metric."""
    if not isinstance(values, (tuple, list)):
        raise SparkplugError(f"a {datatype.name} needs a tuple or list, got {describe(values)}")
    if datatype is DataType.BOOLEAN_ARRAY:
        return _pack_booleans(values)
    if datatype is DataType.STRING_ARRAY:
        return _pack_strings(values)
    fmt = ARRAY_FORMATS[datatype]
    if datatype in _FLOAT_ARRAYS:
        ok = all(type(v) is float or type(v) is int for v in values)
    else:
        ok = all(type(v) is int for v in values)
    if not ok:
        bad = next(v for v in values if type(v) is not int and (datatype not in _FLOAT_ARRAYS or type(v) is not float))
        raise SparkplugError(f"a {datatype.name} cannot hold {describe(bad)}")
    try:
        return struct.pack(f"<{len(values)}{fmt}", *values)
    except (struct.error, OverflowError) as exc:
        raise SparkplugError(f"a {datatype.name} item is out of range: {exc}") from None


def unpack_array(datatype: DataType, data: bytes, limit: int) -> tuple[Any, ...]:
    """The items of an array metric's ``bytes_value``; more than ``limit`` items are refused unread."""
    if datatype is DataType.BOOLEAN_ARRAY:
        return _unpack_booleans(data, limit)
    if datatype is DataType.STRING_ARRAY:
        return _unpack_strings(data, limit)
    fmt = ARRAY_FORMATS[datatype]
    size = struct.calcsize(fmt)
    count, rest = divmod(len(data), size)
    if rest:
        raise SparkplugError(f"a {datatype.name} of {len(data)} bytes is not a whole number of {size}-byte items")
    _check_count(datatype, count, limit)
    return struct.unpack(f"<{count}{fmt}", data)


def _check_count(datatype: DataType, count: int, limit: int) -> None:
    if count > limit:
        raise SparkplugError(f"a {datatype.name} of {count} items is more than this payload may hold ({limit})")


def _pack_booleans(values: Sequence[object]) -> bytes:
    if not all(type(v) is bool for v in values):
        raise SparkplugError(f"a BOOLEAN_ARRAY cannot hold {describe(next(v for v in values if type(v) is not bool))}")
    if len(values) >= 1 << 32:
        raise SparkplugError("a BOOLEAN_ARRAY holds fewer than 2^32 items")
    out = bytearray(len(values).to_bytes(4, "little"))
    for start in range(0, len(values), 8):
        byte = 0
        for i, v in enumerate(values[start:start + 8]):
            if v:
                byte |= 0x80 >> i
        out.append(byte)
    return bytes(out)


def _unpack_booleans(data: bytes, limit: int) -> tuple[bool, ...]:
    if len(data) < 4:
        raise SparkplugError(f"a BOOLEAN_ARRAY needs its 4-byte count, got {len(data)} bytes")
    count = int.from_bytes(data[:4], "little")
    if len(data) != 4 + (count + 7) // 8:
        raise SparkplugError(f"a BOOLEAN_ARRAY of {count} items needs {(count + 7) // 8} bytes of bits, "
                             f"got {len(data) - 4}")
    _check_count(DataType.BOOLEAN_ARRAY, count, limit)
    bits = int.from_bytes(data[4:], "big")
    top = 8 * (len(data) - 4) - 1
    return tuple(bool(bits >> (top - i) & 1) for i in range(count))


def _pack_strings(values: Sequence[object]) -> bytes:
    parts = []
    for v in values:
        text = check_text(v, "a STRING_ARRAY item")
        if "\x00" in text:
            raise SparkplugError(f"a STRING_ARRAY item cannot contain NUL (it ends each item): {describe(text)}")
        parts.append(text.encode("utf-8"))
        parts.append(b"\x00")
    return b"".join(parts)


def _unpack_strings(data: bytes, limit: int) -> tuple[str, ...]:
    if not data:
        return ()
    if not data.endswith(b"\x00"):
        raise SparkplugError("a STRING_ARRAY must end with the NUL byte of its last item")
    _check_count(DataType.STRING_ARRAY, data.count(b"\x00"), limit)
    try:
        items = tuple(part.decode("utf-8") for part in data[:-1].split(b"\x00"))
    except UnicodeDecodeError:
        raise SparkplugError("a STRING_ARRAY item is not valid UTF-8") from None
    for item in items:
        if len(item) > MAX_TEXT_CHARS:
            raise SparkplugError(f"a STRING_ARRAY item of {len(item)} characters is longer than {MAX_TEXT_CHARS}")
    return items
