"""The canonical tag data types shared by every protocol, and checking of values to write.

Protocols name their types differently (S7 ``DINT``, Logix ``REAL``, OPC UA ``Int32``); the plant
config accepts the IEC 61131-3 names as aliases and every driver works with the canonical names.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from gateway.errors import WriteRefused

TYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
         "float32", "float64", "string")

#: IEC 61131-3 elementary type names (used by S7 and Logix) -> canonical type
ALIASES = {"byte": "uint8", "sint": "int8", "usint": "uint8", "int": "int16", "uint": "uint16", "word": "uint16",
           "dint": "int32", "udint": "uint32", "dword": "uint32", "lint": "int64", "ulint": "uint64",
           "lword": "uint64", "real": "float32", "lreal": "float64", "float": "float32", "double": "float64"}

#: inclusive range of each integer type
INT_RANGES = {"int8": (-2**7, 2**7 - 1), "uint8": (0, 2**8 - 1), "int16": (-2**15, 2**15 - 1),
              "uint16": (0, 2**16 - 1), "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
              "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1)}
_FLOAT32_MAX = 3.4028234663852886e38


def canonical_type(name: str) -> str | None:
    """The canonical type for ``name`` (case-insensitive, aliases allowed), or None if unknown."""
    low = name.lower()
    if low in TYPES:
        return low
    return ALIASES.get(low)


def check_write(dtype: str, value: Any, *, length: int = 0) -> Any:
    """``value`` (from a JSON command) as a raw value of ``dtype``; :class:`WriteRefused` says why not."""
    if dtype == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise WriteRefused(f"expected a bool (true/false), got {value!r}")
    if dtype == "string":
        if not isinstance(value, str):
            raise WriteRefused(f"expected a string, got {value!r}")
        if length and len(value.encode()) > length:
            raise WriteRefused(f"string of {len(value.encode())} bytes is longer than the tag's {length}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WriteRefused(f"expected a number for a {dtype} tag, got {value!r}")
    if dtype in INT_RANGES:
        if isinstance(value, float):
            if not value.is_integer():
                raise WriteRefused(f"a {dtype} tag takes whole numbers, got {value!r}")
            value = int(value)
        lo, hi = INT_RANGES[dtype]
        if not lo <= value <= hi:
            raise WriteRefused(f"{value} is outside the {dtype} range {lo}..{hi}")
        return value
    v = float(value)
    if not math.isfinite(v):
        raise WriteRefused(f"expected a finite number, got {value!r}")
    if dtype == "float32" and abs(v) > _FLOAT32_MAX:
        raise WriteRefused(f"{value} is outside the float32 range")
    return v


def shortest_float32(value: float, raw: bytes) -> float:
    """The shortest decimal that is the same float32 as ``raw`` (its 4 big-endian bytes, ``value``
    unpacked from them): 0.1, not 0.10000000149011612. NaN and infinities are returned as they are."""
    if not math.isfinite(value):
        return value
    for digits in (6, 7, 8):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == raw:
            return candidate
    return value


def round_float32(value: float) -> float:
    """A float32 read as a Python float, shown as its shortest decimal (drivers that get floats, not bytes)."""
    try:
        return shortest_float32(value, struct.pack(">f", value))
    except (OverflowError, struct.error):
        return value
