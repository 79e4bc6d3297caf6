"""Modbus register ↔ value conversion: the data types, byte order and word order of real PLCs.

A register is 16 bits. ``byte_order`` is the order of the two bytes inside each register ("big":
AB, the Modbus standard; "little": BA). ``word_order`` is the order of registers in a multi-register
value ("big": most significant register first; "little": least significant first, as many PLCs
store 32-bit floats). Strings are packed two characters per register and ignore the word order.
"""

from __future__ import annotations

import struct
from typing import Literal

from gateway.values import shortest_float32

#: registers per fixed-size type
REGISTER_COUNT = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
                  "int64": 4, "uint64": 4, "float64": 4}
_STRUCT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f",
           "int64": ">q", "uint64": ">Q", "float64": ">d"}
TYPES = (*REGISTER_COUNT, "string")
BYTE_ORDERS = ("big", "little")


def register_count(dtype: str, length: int = 0) -> int:
    """Registers a value of ``dtype`` occupies (``length`` = characters, for strings)."""
    if dtype == "string":
        return (length + 1) // 2
    return REGISTER_COUNT[dtype]


def _to_bytes(regs: list[int], byte_order: str, word_order: str) -> bytes:
    words = regs[::-1] if word_order == "little" else regs
    bo: Literal["big", "little"] = "big" if byte_order == "big" else "little"
    return b"".join(w.to_bytes(2, bo) for w in words)


def decode(regs: list[int], dtype: str, *, byte_order: str = "big", word_order: str = "big",
           bit: int | None = None) -> int | float | bool | str:
    """Decode the registers of one value. ``bit`` picks one bit (0 = LSB) of a register as a bool."""
    if dtype == "bool":
        return bool((regs[0] >> (bit or 0)) & 1) if bit is not None else regs[0] != 0
    if dtype == "string":
        raw = _to_bytes(regs, byte_order, "big")
        return raw.split(b"\x00", 1)[0].decode("latin-1").rstrip(" ")
    raw = _to_bytes(regs, byte_order, word_order)
    value: int | float = struct.unpack(_STRUCT[dtype], raw)[0]
    if dtype == "float32":  # 56.398, not 56.39799880981445
        return shortest_float32(value, raw)
    return value


def encode(value: int | float | bool | str, dtype: str, *, byte_order: str = "big", word_order: str = "big",
           length: int = 0) -> list[int]:
    """Registers holding ``value`` (inverse of :func:`decode`); raises ValueError/struct.error if it does not fit."""
    if dtype == "bool":
        return [1 if value else 0]
    if dtype == "string":
        raw = str(value).encode("latin-1")
        if len(raw) > length:
            raise ValueError(f"string of {len(raw)} characters does not fit {length}")
        raw = raw.ljust(register_count(dtype, length) * 2, b"\x00")
    else:
        if dtype.startswith(("int", "uint")) and (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{value!r} is not an integer")
        try:
            raw = struct.pack(_STRUCT[dtype], int(value) if dtype[0] in "iu" else float(value))
        except OverflowError as exc:
            raise ValueError(f"{value!r} does not fit {dtype}") from exc
    bo: Literal["big", "little"] = "big" if byte_order == "big" else "little"
    words = [int.from_bytes(raw[i:i + 2], bo) for i in range(0, len(raw), 2)]
    if dtype != "string" and word_order == "little":
        words.reverse()
    return words
