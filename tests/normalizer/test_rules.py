"""The normalizer's rules of one device, per rule with its edge cases: linear and range maps, units,
clamp, report by exception, edges, windows, alarms, the inverse for writes, and the config errors.
Pure: no servers needed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normalizer import DeviceRules, RuleError, Rules, ValueRefused, parse_rules
from proto.points import Point, Status
from proto.types import DateTime

EU = Status.UNCERTAIN_ENGINEERING_UNITS_EXCEEDED


@dataclass(frozen=True)
class Tag:
    name: str
    type: str
    unit: str | None = None
    rules: Rules = field(default_factory=Rules)


def tag(name: str, dtype: str, unit: str | None = None, **keys: Any) -> Tag:
    return Tag(name, dtype, unit, parse_rules(keys, dtype=dtype, unit=unit))


def pt(tag: str, value: object, ts: int = 1, status: int = Status.GOOD, reason: str | None = None) -> Point:
    return Point(tag, value, ts, status, None, reason)  # type: ignore[arg-type]


def values(rules: DeviceRules, readings: list[tuple[object, int]], name: str = "t",
           status: int = Status.GOOD) -> list[tuple[object, int]]:
    out = []
    for value, ts in readings:
        out += [(p.value, p.ts) for p in rules.apply([pt(name, value, ts, status)])]
    return out


# --- forward path ---------------------------------------------------------------------------------

def test_tags_without_rules_pass_through_untouched() -> None:
    rules = DeviceRules([tag("a", "uint16"), tag("flag", "bool")])
    points = [pt("a", 7), pt("flag", True)]
    assert rules.passthrough and rules.apply(points) is points


def test_good_and_uncertain_are_scaled_alike_bad_passes_null_with_its_reason() -> None:
    rules = DeviceRules([tag("level", "int16", transform={"scale": 0.1, "offset": -5.0})])
    out = rules.apply([pt("level", 425, 1), pt("level", 425, 2, Status.UNCERTAIN),
                       pt("level", None, 3, Status.BAD_TIMEOUT, "timeout")])
    assert [(p.value, p.status, p.reason) for p in out] == [
        (pytest.approx(37.5), Status.GOOD, None), (pytest.approx(37.5), Status.UNCERTAIN, None),
        (None, Status.BAD_TIMEOUT, "timeout")]


def test_raw_range_maps_to_engineering_range() -> None:
    rules = DeviceRules([tag("p", "uint16", "bar", transform={"raw_min": 4000, "raw_max": 20000,
                                                               "eng_min": 0, "eng_max": 10})])
    assert [v for v, _ in values(rules, [(4000, 1), (12000, 2), (20000, 3)], "p")] == [0.0, 5.0, 10.0]
    assert rules.to_raw("p", 5.0) == 12000


def test_units_are_converted_with_factor_and_offset_worked_out_once() -> None:
    rules = DeviceRules([tag("t", "float32", "degC", transform={"from_unit": "degF"}),
                         tag("p", "float64", "psi", transform={"from_unit": "bar"})])
    out = {p.tag: p.value for p in rules.apply([pt("t", 212.0), pt("p", 1.0)])}
    assert out["t"] == pytest.approx(100.0, abs=1e-9) and out["p"] == pytest.approx(14.5037738, rel=1e-7)
    assert rules.to_raw("t", 0.0) == pytest.approx(32.0)


def test_scale_then_unit() -> None:
    rules = DeviceRules([tag("t", "int16", "degC", transform={"scale": 0.1, "from_unit": "degF"})])
    assert values(rules, [(320, 1)])[0][0] == pytest.approx(0.0, abs=1e-9)


def test_clamp_marks_the_value_uncertain_with_a_reason_naming_the_bound() -> None:
    rules = DeviceRules([tag("t", "float64", transform={"min": 0.0, "max": 100.0})])
    out = rules.apply([pt("t", 100.0, 1), pt("t", 150.5, 2), pt("t", -3.0, 3), pt("t", 0.0, 4)])
    assert [(p.value, p.status) for p in out] == [(100.0, Status.GOOD), (100.0, EU), (0.0, EU), (0.0, Status.GOOD)]
    assert out[1].reason == "clamped to the range maximum 100"
    assert out[2].reason == "clamped to the range minimum 0"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_readings_are_bad(bad: float) -> None:
    rules = DeviceRules([tag("t", "float64", transform={"scale": 2.0})])
    [p] = rules.apply([pt("t", bad)])
    assert (p.value, p.status) == (None, Status.BAD_OUT_OF_RANGE) and "not a finite number" in (p.reason or "")


def test_a_reading_that_overflows_on_the_way_is_bad() -> None:
    rules = DeviceRules([tag("t", "float64", transform={"scale": 1e300})])
    [p] = rules.apply([pt("t", 1e10)])
    assert (p.value, p.status, p.reason) == (None, Status.BAD_OUT_OF_RANGE, "overflows the engineering range")


def test_bool_and_none_values_of_a_numeric_tag_pass_untransformed() -> None:
    rules = DeviceRules([tag("t", "int16", transform={"scale": 2.0})])
    out = rules.apply([pt("t", True, 1), pt("t", None, 2, Status.UNCERTAIN)])
    assert [(p.value, p.status) for p in out] == [(True, Status.GOOD), (None, Status.UNCERTAIN)]


def test_big_integers_stay_exact_without_a_linear_rule() -> None:
    rules = DeviceRules([tag("c", "uint64", transform={"max": 2.0**64})])
    big = 2**53 + 1
    [p] = rules.apply([pt("c", big)])
    assert p.value == big and type(p.value) is int


def test_deadband_reports_moves_at_or_beyond_it_and_every_quality_change() -> None:
    rules = DeviceRules([tag("t", "float32", transform={"deadband": 1.0})])
    assert values(rules, [(20.0, 1), (20.5, 2), (20.99, 3), (21.0, 4), (21.5, 5), (19.9, 6)]) == [
        (20.0, 1), (21.0, 4), (19.9, 6)]
    bad = rules.apply([pt("t", None, 7, Status.BAD_TIMEOUT, "timeout")])
    assert [(p.value, p.status) for p in bad] == [(None, Status.BAD_TIMEOUT)]
    assert rules.apply([pt("t", None, 8, Status.BAD_TIMEOUT, "timeout")]) == []  # the same BAD again: no news
    assert values(rules, [(19.9, 9)]) == [(19.9, 9)]  # GOOD again: reported


def test_percent_deadband_is_of_the_engineering_span() -> None:
    rules = DeviceRules([tag("t", "float64", transform={"min": 0.0, "max": 200.0, "deadband_percent": 1.0})])
    assert values(rules, [(50.0, 1), (51.9, 2), (52.0, 3)]) == [(50.0, 1), (52.0, 3)]


def test_max_silence_reports_a_stable_value_at_least_that_often() -> None:
    rules = DeviceRules([tag("t", "float64", transform={"deadband": 5.0, "max_silence_ms": 1000})])
    got = values(rules, [(10.0, t) for t in range(0, 3001, 250)])
    assert got == [(10.0, 0), (10.0, 1000), (10.0, 2000), (10.0, 3000)]


def test_on_change_for_integers_and_strings() -> None:
    rules = DeviceRules([tag("n", "int32", storage="on_change"), tag("s", "string", storage="on_change")])
    assert values(rules, [(1, 1), (1, 2), (2, 3), (2, 4)], "n") == [(1, 1), (2, 3)]
    assert values(rules, [("IDLE", 1), ("IDLE", 2), ("RUN", 3)], "s") == [("IDLE", 1), ("RUN", 3)]


def test_edges_with_debounce_report_the_time_of_the_change() -> None:
    rules = DeviceRules([tag("door", "bool", storage="on_event", transform={"debounce_ms": 100})])
    readings = [(False, 0), (True, 50), (False, 80), (False, 200), (True, 300), (True, 350), (True, 400),
                (False, 500), (False, 650)]
    assert values(rules, readings, "door") == [(False, 0), (True, 300), (False, 500)]


def test_windows_only_publishes_no_raw_points() -> None:
    rules = DeviceRules([tag("t", "float64", storage="windows_only", windows=["1s"])])
    assert values(rules, [(1.0, 0), (2.0, 500), (3.0, 1000)]) == []
    [w], _ = rules.take()
    assert (w.start, w.width, w.count, w.min, w.max, w.avg, w.first, w.last) == (0, 1000, 2, 1.0, 2.0, 1.5, 1.0, 2.0)


# --- windows ----------------------------------------------------------------------------------------

def test_windows_are_wall_clock_aligned_and_exact() -> None:
    rules = DeviceRules([tag("t", "float64", windows=["10s"])])
    readings = [(float(i), 5_000 + i * 1000) for i in range(30)]  # 5 s .. 34 s
    values(rules, readings)
    windows, _ = rules.take()
    assert [(w.start, w.count, w.min, w.max, w.complete) for w in windows] == [
        (0, 5, 0.0, 4.0, False), (10_000, 10, 5.0, 14.0, True), (20_000, 10, 15.0, 24.0, True)]
    w = windows[1]
    assert w.avg == pytest.approx(9.5) and w.first == 5.0 and w.last == 14.0
    # each value holds 1 s; the window starts with 4.0 (held from 9 s) and ends with 14.0 from 19 s
    assert w.twa == pytest.approx(sum(range(5, 15)) / 10)


def test_time_weighted_average_of_irregular_samples() -> None:
    rules = DeviceRules([tag("t", "float64", windows=["10s"])])
    values(rules, [(0.0, 0), (10.0, 1000), (0.0, 9000), (0.0, 10_000)])
    [w], _ = rules.take()
    assert w.avg == pytest.approx(10 / 3)
    assert w.twa == pytest.approx((0 * 1 + 10 * 8 + 0 * 1) / 10)


def test_bad_readings_are_not_aggregated_but_worsen_the_window_status() -> None:
    rules = DeviceRules([tag("t", "float64", windows=["1s"])])
    rules.apply([pt("t", 1.0, 0), pt("t", None, 200, Status.BAD_TIMEOUT), pt("t", 3.0, 600), pt("t", 0.0, 1000)])
    [w], _ = rules.take()
    assert (w.count, w.min, w.max, w.status) == (2, 1.0, 3.0, Status.BAD_TIMEOUT)
    assert w.twa == pytest.approx((1.0 * 200 + 3.0 * 400) / 600)


def test_flush_emits_open_windows_as_incomplete() -> None:
    rules = DeviceRules([tag("t", "float64", windows=["1m"])])
    values(rules, [(1.0, 60_000), (2.0, 61_000)])
    rules.flush()
    [w], _ = rules.take()
    assert (w.start, w.count, w.complete) == (60_000, 2, False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.integers(0, 5_000)), min_size=1, max_size=200))
def test_window_counts_and_order_properties(steps: list[tuple[float, int]]) -> None:
    rules = DeviceRules([tag("t", "float64", windows=["1s", "10s"])])
    ts, readings = 0, []
    for value, gap in steps:
        ts += gap
        readings.append((value, ts))
    values(rules, readings)
    rules.flush()
    windows, _ = rules.take()
    for width in (1000, 10_000):
        mine = [w for w in windows if w.width == width]
        assert sum(w.count for w in mine) == len(readings)
        for w in mine:
            inside = [v for v, t in readings if w.start <= t < w.start + width]
            assert w.count == len(inside) and w.min == min(inside) and w.max == max(inside)
            tol = 1e-9 * max(1.0, abs(w.min), abs(w.max))
            assert w.min - tol <= w.avg <= w.max + tol
            # the time-weighted average may include the value held from before the window
            before = [v for v, t in readings if t < w.start + width]
            assert min(before) - tol <= w.twa <= max(before) + tol


# --- alarms -----------------------------------------------------------------------------------------

def events(rules: DeviceRules, readings: list[tuple[object, int]], name: str = "t") -> list[tuple[str, bool, int]]:
    values(rules, readings, name)
    return [(e.alarm, e.active, e.ts) for e in rules.take()[1]]


def test_high_alarm_with_hysteresis_is_raised_once_and_cleared_once() -> None:
    rules = DeviceRules([tag("t", "float64", alarms={"high": 90.0, "hysteresis": 2.0, "severity": 700})])
    got = events(rules, [(80.0, 1), (90.0, 2), (90.5, 3), (95.0, 4), (89.0, 5), (88.0, 6), (87.0, 7)])
    assert got == [("high", True, 3), ("high", False, 6)]


def test_low_and_rate_alarms() -> None:
    rules = DeviceRules([tag("t", "float64", alarms={"low": 10.0, "rate_per_s": 5.0})])
    got = events(rules, [(20.0, 0), (21.0, 1000), (30.0, 2000), (31.0, 3000), (9.0, 10_000), (12.0, 11_000)])
    assert got == [("rate", True, 2000), ("rate", False, 3000), ("low", True, 10_000), ("low", False, 11_000)]


def test_stuck_alarm_needs_good_quality_and_clears_on_change() -> None:
    rules = DeviceRules([tag("t", "int32", alarms={"stuck_ms": "10s"})])
    readings: list[tuple[object, int]] = [(5, t * 1000) for t in range(0, 12)] + [(6, 12_000)]
    assert events(rules, readings) == [("stuck", True, 10_000), ("stuck", False, 12_000)]
    rules = DeviceRules([tag("t", "int32", alarms={"stuck_ms": "10s"})])
    values(rules, [(5, 0)])
    rules.apply([pt("t", 5, 5000, Status.UNCERTAIN)])
    assert events(rules, [(5, 14_000), (5, 15_000)]) == []  # the count restarted at the UNCERTAIN reading


# --- writes -----------------------------------------------------------------------------------------

def test_inverse_for_writes_rounds_integers_and_checks_the_range() -> None:
    rules = DeviceRules([tag("level", "int16", transform={"scale": 0.1, "min": -100.0, "max": 100.0}),
                         tag("ratio", "float32", transform={"scale": 0.5}), tag("plain", "uint16")])
    assert rules.to_raw("level", 12.3) == 123  # not 122.99999999999999
    assert rules.to_raw("ratio", 1.25) == 2.5
    assert rules.to_raw("plain", "anything") == "anything"  # no rules: the type check is the caller's
    with pytest.raises(ValueRefused, match=r"150 is outside the tag's range -100\.0\.\.100\.0"):
        rules.to_raw("level", 150)
    with pytest.raises(ValueRefused, match="expected a number, got 'fast'"):
        rules.to_raw("level", "fast")
    with pytest.raises(ValueRefused, match="expected a number, got True"):
        rules.to_raw("level", True)


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e3, 1e3), st.floats(0.001, 1e3) | st.floats(-1e3, -0.001), st.floats(-1e4, 1e4))
def test_inverse_of_forward_is_identity_within_float_precision(raw: float, scale: float, offset: float) -> None:
    rules = DeviceRules([tag("t", "float64", transform={"scale": scale, "offset": offset})])
    [p] = rules.apply([pt("t", raw)])
    assert rules.to_raw("t", p.value) == pytest.approx(raw, rel=1e-9, abs=1e-9 * (1 + abs(offset / scale)))


@settings(max_examples=200, deadline=None)
@given(st.integers(-2**15, 2**15 - 1), st.sampled_from([0.1, 0.01, 0.5, 2.0, 10.0]))
def test_inverse_of_forward_for_scaled_integers_is_exact(raw: int, scale: float) -> None:
    rules = DeviceRules([tag("t", "int16", transform={"scale": scale})])
    [p] = rules.apply([pt("t", raw)])
    assert rules.to_raw("t", p.value) == raw


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=2, max_size=100), st.floats(0.1, 10))
def test_a_deadband_never_hides_a_larger_change_beyond_max_silence(seq: list[float], band: float) -> None:
    rules = DeviceRules([tag("t", "float64", transform={"deadband": band, "max_silence_ms": 5000})])
    reported: float | None = None
    reported_at = 0
    for i, v in enumerate(seq):
        ts = i * 1000
        out = rules.apply([pt("t", v, ts)])
        if out:
            reported, reported_at = out[0].value, ts  # type: ignore[assignment]
        assert reported is not None and (abs(v - reported) < band or reported_at == ts)
        assert ts - reported_at < 5000


# --- config errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("keys", "dtype", "unit", "key", "message"), [
    ({"transform": {"scale": 0}}, "int16", None, "scale", "scale must not be 0"),
    ({"transform": {"scale": math.nan}}, "int16", None, "scale", "finite number"),
    ({"transform": {"raw_min": 0, "raw_max": 10}}, "int16", None, "eng_min", "go together; missing eng_min, eng_max"),
    ({"transform": {"raw_min": 5, "raw_max": 5, "eng_min": 0, "eng_max": 1}}, "int16", None, "raw_max", "empty"),
    ({"transform": {"scale": 2, "raw_min": 0, "raw_max": 1, "eng_min": 0, "eng_max": 1}}, "int16", None, "scale",
     "not both"),
    ({"transform": {"from_unit": "degF"}}, "float32", None, "from_unit", "needs the tag's 'unit'"),
    ({"transform": {"from_unit": "degF"}}, "float32", "bar", "from_unit",
     "cannot convert from_unit 'degF' to unit 'bar'"),
    ({"transform": {"from_unit": "furlongz"}}, "float32", "m", "from_unit", "unknown unit 'furlongz'"),
    ({"transform": {"from_unit": "m"}}, "float32", "parsecz", "unit", "unknown unit 'parsecz'"),
    ({"transform": {"min": 5, "max": 1}}, "float32", None, "min", "greater than max"),
    ({"transform": {"deadband_percent": 5}}, "float32", None, "deadband_percent", "needs a span"),
    ({"transform": {"deadband": 1, "deadband_percent": 5, "min": 0, "max": 1}}, "float32", None,
     "deadband_percent", "not both"),
    ({"transform": {"scale": 2}}, "bool", None, "scale", "needs a numeric tag"),
    ({"transform": {"debounce_ms": 10}}, "int16", None, "debounce_ms", "for bool tags"),
    ({"transform": {"debounce_ms": 10}}, "bool", None, "debounce_ms", "storage on_event"),
    ({"transform": {"gain": 2}}, "int16", None, "gain", r"unknown key\(s\) \['gain'\]"),
    ({"storage": "sometimes"}, "int16", None, "storage", "expected one of continuous"),
    ({"storage": "on_event"}, "int16", None, "storage", "edges of a bool"),
    ({"storage": "continuous", "transform": {"deadband": 1}}, "int16", None, "storage", "must be on_change"),
    ({"storage": "windows_only"}, "int16", None, "storage", "needs at least one window"),
    ({"windows": ["1.5s"]}, "int16", None, "windows[0]", "is not a duration"),
    ({"windows": ["500ms"]}, "int16", None, "windows[0]", "whole seconds, 1s..1h"),
    ({"windows": ["1m", "60s"]}, "int16", None, "windows[1]", "listed twice"),
    ({"windows": ["1m"]}, "string", None, "windows", "not strings"),
    ({"alarms": {}}, "int16", None, "alarms", "at least one of"),
    ({"alarms": {"high": 1, "low": 2}}, "int16", None, "alarms.low", "must be below"),
    ({"alarms": {"high": "x"}}, "int16", None, "alarms.high", "finite number"),
    ({"alarms": {"high": 1, "loud": True}}, "int16", None, "alarms.loud", r"unknown key\(s\)"),
    ({"alarms": {"high": 1}}, "bool", None, "alarms", "numeric tag"),
    ({"alarms": {"rate_per_s": 0}}, "int16", None, "alarms.rate_per_s", "> 0"),
    ({"alarms": {"high": 1, "severity": 0}}, "int16", None, "alarms.severity", "1..1000"),
    # a datetime is no quantity: nothing numeric applies to it
    ({"transform": {"scale": 2}}, "datetime", None, "scale", "scale needs a numeric tag, not datetime"),
    ({"transform": {"offset": 3600000}}, "datetime", None, "offset", "offset needs a numeric tag, not datetime"),
    ({"transform": {"deadband": 1000}}, "datetime", None, "deadband", "deadband needs a numeric tag, not datetime"),
    ({"transform": {"max": 1}}, "datetime", None, "max", "max needs a numeric tag, not datetime"),
    ({"transform": {"debounce_ms": 10}}, "datetime", None, "debounce_ms", "debounce_ms is for bool tags"),
    ({"windows": ["1m"]}, "datetime", None, "windows", "windows aggregate numbers, not datetimes"),
    ({"alarms": {"high": 1}}, "datetime", None, "alarms", "limit and rate alarms need a numeric tag, not datetime"),
    ({"alarms": {"rate_per_s": 1}}, "datetime", None, "alarms", "need a numeric tag, not datetime"),
    ({"storage": "on_event"}, "datetime", None, "storage", "edges of a bool tag, not datetime"),
])
def test_config_errors_name_the_key(keys: dict[str, Any], dtype: str, unit: str | None, key: str,
                                    message: str) -> None:
    with pytest.raises(RuleError, match=message) as err:
        parse_rules(keys, dtype=dtype, unit=unit)
    assert err.value.key == key


def test_a_reload_resets_only_the_tags_whose_rules_changed() -> None:
    band5 = {"deadband": 5.0}
    old = DeviceRules([tag("a", "float64", transform=band5), tag("b", "float64", transform=band5),
                       tag("w", "float64", windows=["10s"])])
    old.apply([pt("a", 10.0, 1000), pt("b", 10.0, 1000), pt("w", 1.0, 1000)])
    new = DeviceRules([tag("a", "float64", transform=band5), tag("b", "float64", transform={"deadband": 1.0}),
                       tag("w", "float64", windows=["10s"])])
    assert new.adopt(old) == 2
    out = {p.tag: p.value for p in new.apply([pt("a", 11.0, 2000), pt("b", 11.0, 2000), pt("w", 2.0, 11_000)])}
    assert "a" not in out  # a kept its last reported 10.0: 11 is inside its band
    assert out["b"] == 11.0  # b's rules changed: it starts afresh
    [w], _ = new.take()
    assert (w.start, w.count, w.complete) == (0, 1, False)  # w's open window survived the reload


def test_a_datetime_tag_passes_unchanged_on_change_when_it_changes_and_with_a_heartbeat() -> None:
    d1, d2 = DateTime(1_796_205_600_123), DateTime(1_796_205_600_124)
    rules = DeviceRules([tag("t", "datetime", storage="on_change", transform={"max_silence_ms": 10})])
    got = values(rules, [(d1, 1), (DateTime(d1.ms), 2), (d2, 3), (d2, 4), (d2, 13), (None, 14)])
    assert got == [(d1, 1), (d2, 3), (d2, 13), (None, 14)]
    assert all(type(v) is DateTime for v, _ in got[:3])
    continuous = DeviceRules([tag("t", "datetime", windows=[], alarms={"stuck_ms": 5})])
    assert values(continuous, [(d1, 1), (d1, 2)]) == [(d1, 1), (d1, 2)]
    bad = continuous.apply([pt("t", d1, 3, Status.BAD_TIMEOUT, "timeout")])
    assert [(p.value, p.status, p.reason) for p in bad] == [(None, Status.BAD_TIMEOUT, "timeout")]


def test_a_stuck_datetime_raises_the_stuck_alarm_without_a_value() -> None:
    d = DateTime(0)
    rules = DeviceRules([tag("t", "datetime", alarms={"stuck_ms": 5})])
    for ts in (1, 3, 6):
        rules.apply([pt("t", d, ts)])
    rules.apply([pt("t", DateTime(1), 7)])
    _, events = rules.take()
    assert [(e.alarm, e.active, e.ts, e.value) for e in events] == [("stuck", True, 6, None), ("stuck", False, 7, None)]
