"""A tag's ``transform`` table: raw reading → engineering value, and when a new value is worth reporting.

The forward path, in order: linear (``scale``/``offset``, or ``raw_min..raw_max`` → ``eng_min..eng_max``),
unit conversion (``from_unit`` → the tag's ``unit``, with pint; folded into the linear factor and
offset at load), clamp (``min``/``max``: a clamped value is UNCERTAIN_ENGINEERING_UNITS_EXCEEDED, its
raw value in the reason), then report by exception (``deadband`` absolute, ``deadband_percent`` of
the engineering span, ``max_silence_ms`` heartbeat) and edges (``debounce_ms`` for booleans). Every
check happens here, at load: a reading never meets a bad transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from normalizer.errors import RuleError

#: keys of a tag's ``transform`` table
KEYS = frozenset({"scale", "offset", "raw_min", "raw_max", "eng_min", "eng_max", "from_unit", "min", "max",
                  "deadband", "deadband_percent", "max_silence_ms", "debounce_ms"})
_FLOATS = ("scale", "offset", "raw_min", "raw_max", "eng_min", "eng_max", "min", "max", "deadband",
           "deadband_percent")
_RANGE = ("raw_min", "raw_max", "eng_min", "eng_max")


def _finite(name: str, v: Any, *, optional: bool = False) -> None:
    if v is None and optional:
        return
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        raise RuleError(f"{name} must be a finite number, got {v!r}", key=name)


@dataclass(frozen=True, kw_only=True, slots=True)
class Transform:
    scale: float = 1.0  #: multiplier applied to the raw number (not 0)
    offset: float = 0.0  #: added after scaling
    raw_min: float | None = None  #: with raw_max, eng_min, eng_max: the linear map of a raw range
    raw_max: float | None = None
    eng_min: float | None = None
    eng_max: float | None = None
    from_unit: str | None = None  #: the unit the linear step yields; converted to the tag's ``unit``
    min: float | None = None  #: clamp: lower bound (engineering units)
    max: float | None = None  #: clamp: upper bound
    deadband: float = 0.0  #: absolute change (engineering units) below which a value is not reported
    deadband_percent: float = 0.0  #: the same, in % of the engineering span (eng_min..eng_max, else min..max)
    max_silence_ms: int = 0  #: with a deadband: a value is still reported at least this often (0: never)
    debounce_ms: int = 0  #: booleans: a change must hold this long before it is reported (0: at once)
    #: the unit conversion as ``value * factor + shift``, worked out once (by :func:`parse_transform`)
    unit_factor: float = field(default=1.0, repr=False, compare=False)
    unit_shift: float = field(default=0.0, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _FLOATS:
            _finite(name, getattr(self, name), optional=name not in ("scale", "offset", "deadband",
                                                                     "deadband_percent"))
        for name in ("max_silence_ms", "debounce_ms"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 86_400_000:
                raise RuleError(f"{name} must be an integer in 0..86400000 (ms), got {v!r}", key=name)
        if self.scale == 0:
            raise RuleError("scale must not be 0 (every reading would be the offset, and a write could "
                            "not be turned back into a raw value)", key="scale")
        ranged = [k for k in _RANGE if getattr(self, k) is not None]
        if ranged and len(ranged) != 4:
            missing = [k for k in _RANGE if k not in ranged]
            raise RuleError(f"raw_min, raw_max, eng_min and eng_max go together; missing {', '.join(missing)}",
                            key=missing[0])
        if ranged:
            if self.scale != 1.0 or self.offset != 0.0:
                raise RuleError("give either scale/offset or raw_min/raw_max/eng_min/eng_max, not both", key="scale")
            if self.raw_min == self.raw_max:
                raise RuleError(f"raw_min and raw_max are both {self.raw_min}: the range is empty", key="raw_max")
            if self.eng_min == self.eng_max:
                raise RuleError(f"eng_min and eng_max are both {self.eng_min}: the range is empty", key="eng_max")
        if self.deadband < 0:
            raise RuleError(f"deadband must be >= 0, got {self.deadband}", key="deadband")
        if not 0 <= self.deadband_percent <= 100:
            raise RuleError(f"deadband_percent must be in 0..100, got {self.deadband_percent}", key="deadband_percent")
        if self.deadband and self.deadband_percent:
            raise RuleError("give either deadband or deadband_percent, not both", key="deadband_percent")
        if self.deadband_percent and self.span is None:
            raise RuleError("deadband_percent needs a span: eng_min/eng_max, or min and max", key="deadband_percent")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise RuleError(f"min {self.min} is greater than max {self.max}", key="min")

    # --- derived figures (cheap; the compiled chain keeps its own copies) -------------------------

    @property
    def factor(self) -> float:
        """raw → engineering, multiplicative part (linear and unit conversion together)."""
        if self.raw_min is not None:
            assert self.raw_max is not None and self.eng_min is not None and self.eng_max is not None
            scale = (self.eng_max - self.eng_min) / (self.raw_max - self.raw_min)
        else:
            scale = self.scale
        return scale * self.unit_factor

    @property
    def shift(self) -> float:
        """raw → engineering, additive part."""
        if self.raw_min is not None:
            assert self.raw_max is not None and self.eng_min is not None and self.eng_max is not None
            scale = (self.eng_max - self.eng_min) / (self.raw_max - self.raw_min)
            offset = self.eng_min - self.raw_min * scale
        else:
            offset = self.offset
        return offset * self.unit_factor + self.unit_shift

    @property
    def linear(self) -> bool:
        """Whether values change at all on the way (an identity keeps integers integers)."""
        return self.factor != 1.0 or self.shift != 0.0

    @property
    def clamps(self) -> bool:
        return self.min is not None or self.max is not None

    @property
    def identity(self) -> bool:
        """No value rule at all: the reading is the engineering value."""
        return not self.linear and not self.clamps

    @property
    def span(self) -> float | None:
        """The engineering span a percent deadband is relative to."""
        if self.eng_min is not None and self.eng_max is not None:
            return abs(self.eng_max - self.eng_min)
        if self.min is not None and self.max is not None and self.max > self.min:
            return self.max - self.min
        return None

    @property
    def band(self) -> float:
        """The absolute deadband (engineering units), from either form."""
        if self.deadband_percent:
            assert self.span is not None
            return self.span * self.deadband_percent / 100
        return self.deadband

    @property
    def by_exception(self) -> bool:
        """Report by exception (a deadband or a heartbeat) rather than every reading."""
        return bool(self.band) or bool(self.max_silence_ms)

    # --- kept for callers of the earlier single-step transform --------------------------------

    def apply(self, value: int | float) -> int | float:
        """The engineering value of ``value``, clamped."""
        if self.identity:
            return value
        out = value * self.factor + self.shift if self.linear else value
        if self.min is not None and out < self.min:
            out = self.min
        if self.max is not None and out > self.max:
            out = self.max
        return out

    def changed(self, last: int | float | None, value: int | float) -> bool:
        """Whether ``value`` differs from the last reported one by at least the deadband (exactly the
        band counts as a change)."""
        band = self.band
        return last is None or band == 0.0 or abs(value - last) >= band


def parse_transform(d: dict[str, Any], *, dtype: str, unit: str | None) -> Transform:
    """The ``transform`` table of a tag of type ``dtype`` whose engineering unit is ``unit``;
    :class:`RuleError` names the key."""
    if not isinstance(d, dict):
        raise RuleError(f"'transform' must be a table/mapping, got {type(d).__name__}", key="transform")
    extra = sorted(set(d) - KEYS)
    if extra:
        raise RuleError(f"unknown key(s) {extra}; expected some of {', '.join(sorted(KEYS))}", key=extra[0])
    tr = Transform(**d)
    if dtype in ("bool", "string", "datetime"):
        # a datetime is no quantity: scaling, clamping or a deadband in ms of a date would be a number
        # pretending to be a date; it is reported as it is (on_change: when it changes, max_silence_ms)
        numeric = [k for k in d if k not in ("debounce_ms", "max_silence_ms")]
        if numeric:
            raise RuleError(f"{numeric[0]} needs a numeric tag, not {dtype}", key=numeric[0])
        if tr.debounce_ms and dtype != "bool":
            raise RuleError("debounce_ms is for bool tags", key="debounce_ms")
    elif tr.debounce_ms:
        raise RuleError(f"debounce_ms is for bool tags, not {dtype}", key="debounce_ms")
    if tr.from_unit is not None:
        if not isinstance(tr.from_unit, str) or not tr.from_unit:
            raise RuleError(f"from_unit must be a unit name, got {tr.from_unit!r}", key="from_unit")
        if unit is None:
            raise RuleError(f"from_unit {tr.from_unit!r} needs the tag's 'unit' (the unit to convert to)",
                            key="from_unit")
        from normalizer.units import conversion  # pint is loaded only when a tag converts units

        factor, shift = conversion(tr.from_unit, unit)
        tr = Transform(**d, unit_factor=factor, unit_shift=shift)
    return tr
