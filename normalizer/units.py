"""Unit conversion with pint: from a tag's ``from_unit`` to its ``unit``, worked out once at load as
``value * factor + shift`` (every conversion between linear or offset units, °F → °C included, is
affine), so no reading ever goes through pint.

pint is imported on the first conversion: a plant without ``from_unit`` never loads it.
"""

from __future__ import annotations

import functools
from typing import Any

from normalizer.errors import RuleError

_WIDE = 1e6


@functools.cache
def _registry() -> Any:
    import pint

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def _unit(ureg: Any, name: str, which: str) -> Any:
    import pint

    try:
        return ureg.Unit(name)
    except (pint.errors.UndefinedUnitError, AttributeError, ValueError, TypeError, AssertionError) as exc:
        raise RuleError(f"unknown unit {name!r} ({which})", key="from_unit" if which == "from_unit" else "unit") \
            from exc


@functools.cache
def conversion(source: str, target: str) -> tuple[float, float]:
    """``(factor, shift)`` with ``target = source_value * factor + shift``; :class:`RuleError` names
    both units when either is unknown or they measure different things."""
    import pint

    ureg = _registry()
    src, dst = _unit(ureg, source, "from_unit"), _unit(ureg, target, "unit")
    try:
        at0 = ureg.Quantity(0.0, src).to(dst).magnitude
        # the slope over a wide interval: over 0..1 the offset's rounding would cost digits (5/9 for °F)
        at1 = ureg.Quantity(_WIDE, src).to(dst).magnitude
    except pint.errors.DimensionalityError as exc:
        raise RuleError(f"cannot convert from_unit {source!r} to unit {target!r}: {src.dimensionality} is not "
                        f"{dst.dimensionality}", key="from_unit") from exc
    return float(at1 - at0) / _WIDE, float(at0)
