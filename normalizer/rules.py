"""One device's value rules, compiled once from its tags' config: the forward path (reading →
engineering value, then the deadband) and the inverse path for writes (engineering value → raw).

The poller calls :meth:`DeviceRules.apply` once per poll result and the write path calls
:meth:`DeviceRules.to_raw`; neither looks up a tag's config per reading. The deadband's state (the
last value reported per tag) lives here too, so a tag's rules and their state have one owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from normalizer.errors import ValueRefused
from normalizer.transform import Transform
from proto.points import Point, Status

#: types that carry no number: no transform or deadband applies to them
NON_NUMERIC = frozenset({"bool", "string"})


class TagSpec(Protocol):
    """What the rules of one tag are built from (the gateway's TagConfig is one)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...  # canonical type name (gateway.values.TYPES)
    @property
    def transform(self) -> Transform: ...


class TagRule:
    """The compiled rules of one numeric tag whose transform is not a plain pass-through."""

    __slots__ = ("deadband", "identity", "integer", "transform")

    def __init__(self, spec: TagSpec) -> None:
        self.transform = spec.transform
        self.identity = spec.transform.identity
        self.deadband = spec.transform.deadband
        self.integer = spec.type.startswith(("int", "uint"))  #: raw values are integers: writes round

    def to_raw(self, value: int | float) -> int | float:
        """The raw number for engineering ``value``, inside the tag's range; :class:`ValueRefused` if not."""
        tr = self.transform
        if (tr.min is not None and value < tr.min) or (tr.max is not None and value > tr.max):
            raise ValueRefused(f"{value} is outside the tag's range {tr.min}..{tr.max}")
        raw: float = (value - tr.offset) / tr.scale
        # scaled integers: 12.3 at scale 0.1 is 123, not 122.99999999999999
        return round(raw) if self.integer else raw


class DeviceRules:
    """The rules of every tag of one device, and the deadbands' state."""

    def __init__(self, tags: Iterable[TagSpec]) -> None:
        # only tags that need work: without any, points pass through untouched (bench/gateway.py)
        self._rules = {t.name: TagRule(t) for t in tags
                       if t.type not in NON_NUMERIC and (not t.transform.identity or t.transform.deadband)}
        self._last: dict[str, tuple[object, int]] = {}  # tag -> (value, status) last reported, for deadbands

    @property
    def passthrough(self) -> bool:
        """No tag has a rule: :meth:`apply` returns its input."""
        return not self._rules

    def apply(self, points: list[Point]) -> list[Point]:
        """Engineering values for GOOD numeric readings, and only the points that moved beyond their
        tag's deadband (a change of status always passes)."""
        rules = self._rules
        if not rules:
            return points
        out = []
        last = self._last
        for p in points:
            rule = rules.get(p.tag)
            if rule is not None and isinstance(p.value, int | float) and p.status == Status.GOOD:
                if not rule.identity:
                    p = p._replace(value=rule.transform.apply(p.value))
                prev = last.get(p.tag)
                if rule.deadband and prev is not None and prev[1] == p.status and prev[0] is not None \
                        and not rule.transform.changed(prev[0], p.value):  # type: ignore[arg-type]
                    continue
            last[p.tag] = (p.value, p.status)
            out.append(p)
        return out

    def to_raw(self, name: str, value: object) -> object:
        """The raw value to write for engineering ``value`` of tag ``name`` (unchanged for a tag without
        rules); the caller then checks it against the tag's type."""
        rule = self._rules.get(name)
        if rule is None or rule.identity:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueRefused(f"expected a number, got {value!r}")
        return rule.to_raw(value)
