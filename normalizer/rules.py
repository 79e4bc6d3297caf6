"""One device's value rules, compiled once from its tags' config: the forward path (reading →
engineering value → what is reported, windows, alarms) and the inverse path for writes.

The poller calls :meth:`DeviceRules.apply` once per poll result; the write path calls
:meth:`DeviceRules.to_raw`. Neither looks up a tag's config per reading: each tag with rules has a
compiled :class:`TagChain` holding its figures and its state (last reported value, windows, alarms).
Every quality is treated alike: GOOD and UNCERTAIN values are transformed the same way; BAD readings
pass with a null value and their reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

from normalizer.alarms import Alarms
from normalizer.config import Rules
from normalizer.errors import ValueRefused
from normalizer.expr import EvalError, Expression
from normalizer.windows import Windows
from proto.aggregates import AlarmEvent, Window
from proto.points import Point, Status

#: types that carry no number: no linear rule or clamp applies to them (refused at load, normalizer.transform)
NON_NUMERIC = frozenset({"bool", "string", "datetime"})
_BAD = 0x80000000
_QUALITY = 0xC0000000
_EU_EXCEEDED = int(Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED)
_OUT_OF_RANGE = int(Status.BAD_OUT_OF_RANGE)
_new = tuple.__new__
_CONTINUOUS, _ON_CHANGE, _WINDOWS_ONLY, _ON_EVENT = range(4)
_KINDS = {"continuous": _CONTINUOUS, "on_change": _ON_CHANGE, "windows_only": _WINDOWS_ONLY, "on_event": _ON_EVENT}


class TagSpec(Protocol):
    """What the rules of one tag are built from (the gateway's TagConfig is one)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...  # canonical type name (proto.types.TYPES)
    @property
    def unit(self) -> str | None: ...
    @property
    def rules(self) -> Rules: ...


class DerivedSpec(TagSpec, Protocol):
    """A derived tag: its value is ``expression`` over other tags of the device."""

    @property
    def expression(self) -> Expression: ...


def needs_chain(spec: TagSpec) -> bool:
    r = spec.rules
    return not r.transform.identity or r.storage != "continuous" or bool(r.windows) or r.alarms is not None


class TagChain:
    """The compiled rules of one tag and their state."""

    __slots__ = (
        "above",
        "alarms",
        "band",
        "below",
        "debounce",
        "extras",
        "factor",
        "feeds",
        "hi",
        "integer",
        "kind",
        "last_status",
        "last_ts",
        "last_value",
        "linear",
        "lo",
        "name",
        "numeric",
        "pending",
        "pending_ts",
        "seen",
        "shift",
        "silence",
        "spec",
        "transform",
        "windows",
    )

    def __init__(self, spec: TagSpec) -> None:
        self.spec = spec  #: what it was compiled from: an equal spec at a reload keeps this chain and its state
        r = spec.rules
        tr = r.transform
        self.name = spec.name
        self.transform = tr
        self.numeric = spec.type not in NON_NUMERIC
        self.integer = spec.type.startswith(("int", "uint"))  #: raw values are integers: writes round
        self.linear = tr.linear
        self.factor, self.shift = tr.factor, tr.shift
        self.lo = -math.inf if tr.min is None else tr.min
        self.hi = math.inf if tr.max is None else tr.max
        self.band = tr.band
        # reasons are categories (the historian stores each text once, dashboards group by it): they name
        # the bound, never the reading, so a tag has at most these few
        self.below = f"clamped to the range minimum {self.lo:.6g}"
        self.above = f"clamped to the range maximum {self.hi:.6g}"
        self.silence = tr.max_silence_ms
        self.debounce = tr.debounce_ms
        self.kind = _KINDS[r.storage]
        self.windows = Windows(spec.name, r.windows) if r.windows else None
        self.alarms = Alarms(spec.name, r.alarms) if r.alarms is not None else None
        self.last_value: object = None  # last reported value and status, and when
        self.last_status = -1
        self.last_ts = 0
        self.pending: tuple[object, int] | None = None  # debounce: (new value, since when)
        self.pending_ts = -1  # debounce: the time of the edge being reported
        self.feeds = False  #: an input of a derived tag: the engineering value of each reading is kept
        self.seen: tuple[object, int, int] | None = None  # (value, status, ts) of the last reading, if feeds
        self.extras = self.windows is not None or self.alarms is not None  # (feeds sets it too)

    def step(self, p: Point, out: list[Point], windows: list[Window], events: list[AlarmEvent]) -> None:
        # the hot loop (bench/normalizer.py): class checks instead of isinstance, ±inf bounds instead of
        # None checks, `v - v` to tell finite numbers (0) from NaN and ±inf (NaN)
        v: Any
        tag, v, ts, st, unit, reason = p
        cls = v.__class__
        if (cls is float or cls is int) and self.numeric and st < _BAD:
            if v - v:
                v, st, reason = None, _OUT_OF_RANGE, f"not a finite number ({v})"
            elif self.linear:
                x = v * self.factor + self.shift
                if x - x:  # a finite reading that overflowed the float range on the way
                    v, st, reason = None, _OUT_OF_RANGE, "overflows the engineering range"
                elif x < self.lo:
                    reason, v, st = self.below, self.lo, _EU_EXCEEDED
                elif x > self.hi:
                    reason, v, st = self.above, self.hi, _EU_EXCEEDED
                else:
                    v = x
            elif v < self.lo:
                reason, v, st = self.below, self.lo, _EU_EXCEEDED
            elif v > self.hi:
                reason, v, st = self.above, self.hi, _EU_EXCEEDED
        elif st >= _BAD:
            v = None
        if self.extras:
            if self.feeds:
                self.seen = (v, st, ts)
            if self.windows is not None:
                self.windows.add(None if v is None or v.__class__ is str else float(v), ts, st, windows)
            if self.alarms is not None:
                self.alarms.add(v, ts, st, events)
        kind = self.kind
        if kind == _CONTINUOUS:
            pass
        elif kind == _ON_CHANGE:
            if st == self.last_status and (not self.silence or ts - self.last_ts < self.silence):
                last = self.last_value
                if v == last:
                    return
                band = self.band
                if band and v is not None and last is not None and v.__class__ is not bool \
                        and abs(v - last) < band:
                    return
        elif kind == _WINDOWS_ONLY or not self._edge(v, ts):
            return
        elif self.pending_ts >= 0:
            ts, self.pending_ts = self.pending_ts, -1  # the edge happened when the value first changed
        self.last_value, self.last_status, self.last_ts = v, st, ts
        out.append(_new(Point, (tag, v, ts, st, unit, reason)))

    def _edge(self, v: object, ts: int) -> bool:
        """on_event: whether ``v`` at ``ts`` is reported (the first reading, then each debounced change)."""
        if v is None:
            return False
        if self.last_status >= 0 and v == self.last_value:
            self.pending = None
            return False
        if self.debounce and self.last_status >= 0:
            if self.pending is None or self.pending[0] != v:
                self.pending = (v, ts)
            if ts - self.pending[1] < self.debounce:
                return False
            self.pending_ts = self.pending[1]
            self.pending = None
        return True

    def to_raw(self, value: int | float) -> int | float:
        """The raw number for engineering ``value``, inside the tag's range; :class:`ValueRefused` if not."""
        if value < self.lo or value > self.hi:
            tr = self.transform
            raise ValueRefused(f"{value} is outside the tag's range {tr.min}..{tr.max}")
        if not self.linear:
            return value
        raw: float = (value - self.shift) / self.factor
        # scaled integers: 12.3 at scale 0.1 is 123, not 122.99999999999999
        return round(raw) if self.integer else raw

    def flush(self, windows: list[Window]) -> None:
        if self.windows is not None:
            self.windows.flush(windows)


class DeviceRules:
    """The rules of every tag of one device, their state, and what they produced since the last take."""

    def __init__(self, tags: Iterable[TagSpec], derived: Iterable[DerivedSpec] = ()) -> None:
        derived = list(derived)
        inputs = {n for d in derived for n in d.expression.names}
        # only tags that need work: without any, points pass through untouched (bench/gateway.py)
        self._chains = {t.name: TagChain(t) for t in [*tags, *derived] if needs_chain(t) or t.name in inputs}
        for name in inputs & set(self._chains):
            self._chains[name].feeds = self._chains[name].extras = True
        #: derived tags in config order (one may read those before it): (spec, its chain or None)
        self._derived = [(d, self._chains.get(d.name)) for d in derived]
        self.windows: list[Window] = []  #: closed windows not yet taken
        self.events: list[AlarmEvent] = []  #: alarm events not yet taken

    def adopt(self, old: DeviceRules) -> int:
        """After a reload of the device's config: every tag whose rules (and address) did not change keeps
        its chain from ``old``, with its state (last reported value, open windows, alarms); what ``old``
        produced and nobody took yet comes along. Returns how many chains were kept."""
        kept = 0
        for name, chain in self._chains.items():
            prev = old._chains.get(name)
            if prev is not None and prev.spec == chain.spec:
                prev.feeds = chain.feeds
                prev.extras = prev.feeds or prev.windows is not None or prev.alarms is not None
                self._chains[name] = prev
                kept += 1
        self._derived = [(spec, self._chains.get(spec.name)) for spec, _ in self._derived]
        self.windows[:0], self.events[:0] = old.windows, old.events
        old.windows, old.events = [], []
        return kept

    @property
    def passthrough(self) -> bool:
        """No tag has a rule: :meth:`apply` returns its input."""
        return not self._chains

    def apply(self, points: list[Point]) -> list[Point]:
        """The points to report, in engineering units, after each tag's rules."""
        chains = self._chains
        if not chains:
            return points
        out: list[Point] = []
        windows, events = self.windows, self.events
        for p in points:
            chain = chains.get(p.tag)
            if chain is None:
                out.append(p)
            else:
                chain.step(p, out, windows, events)
        if self._derived:
            self._derive({p.tag for p in points}, out)
        return out

    def _derive(self, polled: set[str], out: list[Point]) -> None:
        """The derived tags any of whose inputs were read in this poll, from the inputs' latest readings;
        the status is the worst of the inputs' (a BAD input makes the derived point BAD, saying which)."""
        chains = self._chains
        for spec, chain in self._derived:
            names = spec.expression.names
            if polled.isdisjoint(names):
                continue
            values: dict[str, object] = {}
            status, ts, bad = 0, -1, ""
            for name in names:
                seen = chains[name].seen
                if seen is None:
                    values[name] = None
                    continue
                got, st, when = seen
                values[name] = got
                if when > ts:
                    ts = when
                if st and st & _QUALITY > status & _QUALITY:
                    status = st
                    if st & _BAD:
                        bad = name
            reason = None
            value: object = None
            if bad:
                reason = f"input {bad!r} is bad"
            else:
                try:
                    value = spec.expression.evaluate(values)  # type: ignore[arg-type]
                except EvalError as exc:
                    status, reason = int(Status.BAD), f"expression failed: {exc}"
            if ts < 0:
                continue  # no input has been read yet
            p = _new(Point, (spec.name, value, ts, status, spec.unit, reason))
            if chain is None:
                out.append(p)
                if spec.name in chains:
                    chains[spec.name].seen = (value, status, ts)
            else:
                chain.step(p, out, self.windows, self.events)
            polled.add(spec.name)

    def take(self) -> tuple[list[Window], list[AlarmEvent]]:
        """The windows closed and the alarm events raised since the last take."""
        windows, events = self.windows, self.events
        if windows or events:
            self.windows, self.events = [], []
        return windows, events

    def flush(self) -> None:
        """At a stop or reload: close the open windows (as not complete) for the next :meth:`take`."""
        for chain in self._chains.values():
            chain.flush(self.windows)

    def to_raw(self, name: str, value: object) -> object:
        """The raw value to write for engineering ``value`` of tag ``name`` (unchanged for a tag without
        value rules); the caller then checks it against the tag's type."""
        chain = self._chains.get(name)
        if chain is None or chain.transform.identity:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueRefused(f"expected a number, got {value!r}")
        return chain.to_raw(value)
