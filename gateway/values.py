"""Checking of values to write, and float helpers of the drivers. The canonical types themselves are
part of the contract (:mod:`proto.types`) and re-exported here for the gateway's modules."""

from __future__ import annotations

import math
import struct
from typing import Any

from gateway.errors import WriteRefused
from proto.types import ALIASES, INT_RANGES, TYPES, DateTime, canonical_type

__all__ = ["ALIASES", "INT_RANGES", "TYPES", "canonical_type", "check_write", "round_float32", "shortest_float32"]

_FLOAT32_MAX = 3.4028234663852886e38


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
    if dtype == "datetime":
        return _datetime(value)
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


def _datetime(value: Any) -> DateTime:
    """A datetime to write: ISO 8601 text with a time zone, or whole Unix milliseconds (a DateTime too)."""
    if isinstance(value, DateTime):
        return value
    try:
        if isinstance(value, str):
            return DateTime.parse(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return DateTime(value)
    except ValueError as exc:
        raise WriteRefused(str(exc)) from exc
    raise WriteRefused(f"expected ISO 8601 text (e.g. 2026-12-02T10:00:00.123Z) or Unix milliseconds for a "
                       f"datetime tag, got {str(value)[:40]!r}")


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
