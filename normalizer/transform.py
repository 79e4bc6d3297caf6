"""A per-tag value transform: ``value * scale + offset``, then clamp, then deadband."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Transform:
    scale: float = 1.0  #: multiplier applied to the raw number
    offset: float = 0.0  #: added after scaling
    min: float | None = None  #: clamp: lower bound (after scale/offset)
    max: float | None = None  #: clamp: upper bound
    deadband: float = 0.0  #: absolute change below which a new value is not reported (0 = report all)

    def __post_init__(self) -> None:
        for name in ("scale", "offset", "deadband", "min", "max"):
            v = getattr(self, name)
            if v is None and name in ("min", "max"):
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.deadband < 0:
            raise ValueError(f"deadband must be >= 0, got {self.deadband}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0 and self.min is None and self.max is None

    def apply(self, value: int | float) -> int | float:
        """Scaled and clamped value; integers stay integers when the transform is the identity."""
        if self.identity:
            return value
        out = value * self.scale + self.offset
        if self.min is not None and out < self.min:
            out = self.min
        if self.max is not None and out > self.max:
            out = self.max
        return out

    def changed(self, last: int | float | None, value: int | float) -> bool:
        """Whether ``value`` differs from the last reported one by at least the deadband."""
        return last is None or self.deadband == 0.0 or abs(value - last) >= self.deadband
