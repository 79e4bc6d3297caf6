"""The normalizer's keys of a tag in the plant config (and in gateway_core's tag API, which validates
with the same code): ``transform`` (:mod:`normalizer.transform`), ``storage``, ``windows`` and
``alarms``. Parsed once at load into :class:`Rules`; :class:`~normalizer.errors.RuleError` names the
key, e.g. ``alarms.high``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from normalizer.errors import RuleError
from normalizer.transform import Transform, parse_transform

#: a tag's keys that belong to the normalizer
TAG_KEYS = frozenset({"transform", "storage", "windows", "alarms"})
#: ``continuous``: every reading; ``on_change``: by exception (deadband, max silence; any change of a bool,
#: integer or string); ``on_event``: edges of a bool only; ``windows_only``: no raw points, only the windows
STORAGE_MODES = ("continuous", "on_change", "on_event", "windows_only")
MAX_WINDOW_MS = 3_600_000
ALARM_KEYS = frozenset({"high", "low", "hysteresis", "stuck_ms", "rate_per_s", "severity"})
_DURATION = re.compile(r"(\d+)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


@dataclass(frozen=True, kw_only=True, slots=True)
class AlarmLimits:
    high: float | None = None  #: raised when the value goes above (engineering units)
    low: float | None = None  #: raised when the value goes below
    hysteresis: float = 0.0  #: a high/low alarm clears only this far back inside its limit
    stuck_ms: int = 0  #: raised when a GOOD value has not changed for this long (0: off)
    rate_per_s: float | None = None  #: raised when the value changes faster than this per second
    severity: int = 500  #: 1..1000 (OPC UA A&C: 1 low .. 1000 high)


@dataclass(frozen=True, kw_only=True, slots=True)
class Rules:
    transform: Transform = field(default_factory=Transform)
    storage: str = "continuous"  #: one of STORAGE_MODES
    windows: tuple[int, ...] = ()  #: tumbling window widths, ms, wall-clock aligned
    alarms: AlarmLimits | None = None


def parse_duration(raw: Any, key: str) -> int:
    """``"10s"``, ``"1m"``, ``"500ms"`` or an integer of ms."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and (m := _DURATION.fullmatch(raw.strip())):
        return int(m[1]) * _UNIT_MS[m[2]]
    raise RuleError(f"{key} {raw!r} is not a duration like 10s, 1m, 500ms or an integer of ms", key=key)


def _number(d: dict[str, Any], key: str) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise RuleError(f"alarms.{key} must be a finite number, got {v!r}", key=f"alarms.{key}")
    return float(v)


def parse_alarms(d: Any, *, dtype: str) -> AlarmLimits:
    if not isinstance(d, dict):
        raise RuleError(f"'alarms' must be a table/mapping, got {type(d).__name__}", key="alarms")
    extra = sorted(set(d) - ALARM_KEYS)
    if extra:
        raise RuleError(f"unknown key(s) {extra}; expected some of {', '.join(sorted(ALARM_KEYS))}",
                        key=f"alarms.{extra[0]}")
    if dtype in ("bool", "string", "datetime") and set(d) - {"stuck_ms", "severity"}:
        raise RuleError(f"limit and rate alarms need a numeric tag, not {dtype}", key="alarms")
    high, low, rate = _number(d, "high"), _number(d, "low"), _number(d, "rate_per_s")
    hyst = _number(d, "hysteresis") or 0.0
    if hyst < 0:
        raise RuleError(f"alarms.hysteresis must be >= 0, got {hyst}", key="alarms.hysteresis")
    if high is not None and low is not None and low >= high:
        raise RuleError(f"alarms.low {low} must be below alarms.high {high}", key="alarms.low")
    if rate is not None and rate <= 0:
        raise RuleError(f"alarms.rate_per_s must be > 0, got {rate}", key="alarms.rate_per_s")
    stuck = parse_duration(d.get("stuck_ms", 0), "alarms.stuck_ms")
    if not 0 <= stuck <= 86_400_000 * 7:
        raise RuleError(f"alarms.stuck_ms {stuck} outside 0..604800000", key="alarms.stuck_ms")
    sev = d.get("severity", 500)
    if isinstance(sev, bool) or not isinstance(sev, int) or not 1 <= sev <= 1000:
        raise RuleError(f"alarms.severity must be an integer in 1..1000, got {sev!r}", key="alarms.severity")
    if high is None and low is None and rate is None and not stuck:
        raise RuleError("alarms needs at least one of high, low, rate_per_s, stuck_ms", key="alarms")
    return AlarmLimits(high=high, low=low, hysteresis=hyst, stuck_ms=stuck, rate_per_s=rate, severity=sev)


def parse_rules(d: dict[str, Any], *, dtype: str, unit: str | None) -> Rules:
    """The normalizer keys of one tag mapping ``d`` (other keys are ignored here)."""
    transform = parse_transform(d.get("transform", {}), dtype=dtype, unit=unit)
    default = "on_change" if transform.by_exception else "continuous"
    storage = d.get("storage", default)
    if storage not in STORAGE_MODES:
        raise RuleError(f"storage is {storage!r}; expected one of {', '.join(STORAGE_MODES)}", key="storage")
    if storage == "on_event" and dtype != "bool":
        raise RuleError(f"storage on_event reports the edges of a bool tag, not {dtype}", key="storage")
    if transform.by_exception and storage == "continuous" and "storage" in d:
        raise RuleError("a deadband or max_silence_ms reports by exception: storage must be on_change, "
                        "not continuous", key="storage")
    if transform.debounce_ms and storage != "on_event":
        raise RuleError("debounce_ms applies to the edges of storage on_event", key="debounce_ms")
    raw_windows = d.get("windows", [])
    if not isinstance(raw_windows, list):
        raise RuleError(f"'windows' must be a list of durations, got {type(raw_windows).__name__}", key="windows")
    windows = []
    for i, raw in enumerate(raw_windows):
        ms = parse_duration(raw, f"windows[{i}]")
        if ms % 1000 or not 1000 <= ms <= MAX_WINDOW_MS:
            raise RuleError(f"windows[{i}] {raw!r}: a window is whole seconds, 1s..1h", key=f"windows[{i}]")
        if ms in windows:
            raise RuleError(f"windows[{i}] {raw!r} is listed twice", key=f"windows[{i}]")
        windows.append(ms)
    if windows and dtype in ("string", "datetime"):
        raise RuleError(f"windows aggregate numbers, not {'strings' if dtype == 'string' else 'datetimes'}",
                        key="windows")
    if storage == "windows_only" and not windows:
        raise RuleError("storage windows_only needs at least one window", key="storage")
    alarms = parse_alarms(d["alarms"], dtype=dtype) if "alarms" in d else None
    return Rules(transform=transform, storage=storage, windows=tuple(sorted(windows)), alarms=alarms)
