"""Alarms of one tag: out of range high/low with hysteresis, stuck value, rate of change.

Each alarm is a two-state machine, so it is raised once and cleared once, never on every poll:

- ``high``: raised when the value goes above ``high``; cleared when it is back at or below
  ``high - hysteresis``. ``low`` likewise, mirrored.
- ``rate``: raised when the change between two GOOD/UNCERTAIN readings exceeds ``rate_per_s`` per
  second; cleared at the first change within it.
- ``stuck``: raised when a GOOD value has not changed for ``stuck_ms``; cleared when it changes. A
  reading that is not GOOD restarts the count (a stuck value is a good-looking value that does not move).

BAD readings carry no value: limit and rate alarms keep their state through them (an outage does not
clear an alarm), and the rate is measured afresh after them.
"""

from __future__ import annotations

from normalizer.config import AlarmLimits
from proto.aggregates import AlarmEvent
from proto.points import Status

_QUALITY_MASK = 0xC0000000


class Alarms:
    __slots__ = ("_last", "_last_ts", "_same_since", "_same_value", "active", "limits", "tag")

    def __init__(self, tag: str, limits: AlarmLimits) -> None:
        self.tag = tag
        self.limits = limits
        self.active: dict[str, bool] = {}  #: alarm -> raised now
        self._last: float | None = None  # previous usable value and its time, for the rate
        self._last_ts = 0
        self._same_value: object = None  # the GOOD value unchanged since _same_since, for stuck
        self._same_since = -1

    def _set(self, alarm: str, on: bool, ts: int, value: float | None, limit: float | None,
             out: list[AlarmEvent]) -> None:
        if self.active.get(alarm, False) != on:
            self.active[alarm] = on
            out.append(AlarmEvent(self.tag, alarm, ts, on, value, limit, self.limits.severity))

    def add(self, value: object, ts: int, status: int, out: list[AlarmEvent]) -> None:
        lim = self.limits
        if status & 0x80000000 or value is None:
            self._last = None
            self._same_since = -1
            return
        if lim.stuck_ms:
            if status & _QUALITY_MASK != Status.GOOD or value != self._same_value or self._same_since < 0:
                if self.active.get("stuck") and value != self._same_value:
                    self._set("stuck", False, ts, _num(value), lim.stuck_ms / 1000, out)
                self._same_value = value
                self._same_since = ts if status & _QUALITY_MASK == Status.GOOD else -1
            elif ts - self._same_since >= lim.stuck_ms:
                self._set("stuck", True, ts, _num(value), lim.stuck_ms / 1000, out)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        v = float(value)
        if lim.high is not None:
            if v > lim.high:
                self._set("high", True, ts, v, lim.high, out)
            elif v <= lim.high - lim.hysteresis:
                self._set("high", False, ts, v, lim.high, out)
        if lim.low is not None:
            if v < lim.low:
                self._set("low", True, ts, v, lim.low, out)
            elif v >= lim.low + lim.hysteresis:
                self._set("low", False, ts, v, lim.low, out)
        if lim.rate_per_s is not None:
            if self._last is not None and ts > self._last_ts:
                rate = abs(v - self._last) * 1000 / (ts - self._last_ts)
                self._set("rate", rate > lim.rate_per_s, ts, v, lim.rate_per_s, out)
            self._last, self._last_ts = v, ts


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
