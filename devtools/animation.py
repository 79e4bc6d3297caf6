"""Moving values for the simulators: what a tag shows at a time, deterministic per tag name, so the
Modbus and S7 simulators (and the demo) animate alike."""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import TagConfig

_STATES = ("RUNNING", "IDLE", "SETUP", "FAULT", "CLEANING")


def _seed(name: str) -> int:
    return zlib.crc32(name.encode())


def animated_value(tag: TagConfig, t: float) -> Any:
    """The value a tag shows at time ``t`` (seconds): deterministic per tag name."""
    h = _seed(tag.name)
    period = 10 + h % 50
    if tag.type == "bool":
        return int(t / (2 + h % 5)) % 2 == 0
    if tag.type.startswith("float"):
        return round(50 + 25 * math.sin(2 * math.pi * t / period + h % 7), 3)
    if tag.type == "string":
        return _STATES[int(t / period) % len(_STATES)][: tag.length]
    step = int(t)
    if tag.type.startswith("int"):
        return (step + h) % 2000 - 1000  # a ramp that goes negative
    limit = {"uint8": 2**8, "uint16": 2**16, "uint32": 2**32, "uint64": 2**64}[tag.type]
    return (step * (1 + h % 3) + h) % limit  # counter
