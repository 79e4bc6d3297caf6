"""The normalizer's rules of one device: engineering values, deadbands and their state, the inverse
for writes. Pure functions of their input: no servers needed."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from normalizer import DeviceRules, Transform, ValueRefused
from proto.points import Point, Status


@dataclass(frozen=True)
class Tag:
    name: str
    type: str
    transform: Transform = field(default_factory=Transform)


def good(tag: str, value: object, ts: int = 1) -> Point:
    return Point(tag, value, ts, Status.GOOD, None, None)


def test_tags_without_rules_pass_through_untouched() -> None:
    rules = DeviceRules([Tag("a", "uint16"), Tag("flag", "bool", Transform(scale=2.0))])
    points = [good("a", 7), good("flag", True)]
    assert rules.passthrough
    assert rules.apply(points) is points


def test_scale_offset_and_clamp_apply_to_good_numbers_only() -> None:
    rules = DeviceRules([Tag("level", "int16", Transform(scale=0.1, offset=-5.0, max=40.0))])
    bad = Point("level", None, 2, Status.BAD_TIMEOUT, None, "timeout")
    out = rules.apply([good("level", 425), bad, good("level", 1000, 3)])
    assert [p.value for p in out] == [pytest.approx(37.5), None, 40.0]
    assert out[1] is bad


def test_deadband_reports_only_moves_beyond_it_and_every_status_change() -> None:
    rules = DeviceRules([Tag("t", "float32", Transform(deadband=1.0))])
    seen = []
    for ts, value in enumerate([20.0, 20.5, 20.9, 21.0, 21.5, 19.9]):
        seen += [p.value for p in rules.apply([good("t", value, ts)])]
    assert seen == [20.0, 21.0, 19.9]
    bad = Point("t", None, 9, Status.BAD_TIMEOUT, None, "timeout")
    assert rules.apply([bad]) == [bad]
    assert [p.value for p in rules.apply([good("t", 19.9, 10)])] == [19.9]  # GOOD again: reported


def test_inverse_for_writes_rounds_integers_and_checks_the_range() -> None:
    rules = DeviceRules([Tag("level", "int16", Transform(scale=0.1, min=-100.0, max=100.0)),
                         Tag("ratio", "float32", Transform(scale=0.5)), Tag("plain", "uint16")])
    assert rules.to_raw("level", 12.3) == 123  # not 122.99999999999999
    assert rules.to_raw("ratio", 1.25) == 2.5
    assert rules.to_raw("plain", "anything") == "anything"  # no rules: the type check is the caller's
    with pytest.raises(ValueRefused, match=r"150 is outside the tag's range -100\.0\.\.100\.0"):
        rules.to_raw("level", 150)
    with pytest.raises(ValueRefused, match="expected a number, got 'fast'"):
        rules.to_raw("level", "fast")
    with pytest.raises(ValueRefused, match="expected a number, got True"):
        rules.to_raw("level", True)
