"""The canonical value types of a tag, shared by every protocol, the normalizer and the wire.

Protocols name their types differently (S7 ``DINT``, Logix ``REAL``, OPC UA ``Int32``); the plant
config accepts the IEC 61131-3 names as aliases and every driver works with the canonical names.
"""

from __future__ import annotations

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


def canonical_type(name: str) -> str | None:
    """The canonical type for ``name`` (case-insensitive, aliases allowed), or None if unknown."""
    low = name.lower()
    if low in TYPES:
        return low
    return ALIASES.get(low)
