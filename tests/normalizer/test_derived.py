"""Derived tags: expressions over the device's tags, evaluated after each poll from the inputs' latest
engineering values; quality is the worst of the inputs'; errors make the point BAD with the reason."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import DeviceConfig, parse_plant
from gateway.errors import ConfigError
from normalizer import DeviceRules
from proto.points import Point, Status


def device(tags: list[dict[str, Any]], derived: list[dict[str, Any]]) -> DeviceConfig:
    return parse_plant({"plant": {"enterprise": "e", "site": "s", "area": "a", "line": "l"},
                        "devices": [{"id": "d", "tags": tags, "derived": derived}]}).devices[0]


TAGS = [{"name": "flow", "address": 0, "type": "uint16", "transform": {"scale": 0.1}},
        {"name": "t1", "address": 1, "type": "int16"}, {"name": "t2", "address": 2, "type": "int16"},
        {"name": "running", "table": "coil", "address": 0}]


def poll(rules: DeviceRules, ts: int, status: int = Status.GOOD, **values: object) -> dict[str, Point]:
    return {p.tag: p for p in rules.apply([Point(k, v, ts, status) for k, v in values.items()])}  # type: ignore[arg-type]


def test_derived_values_follow_their_inputs_in_engineering_units() -> None:
    dev = device(TAGS, [{"name": "flow_ls", "expression": "flow / 3.6", "unit": "l/s"},
                        {"name": "hottest", "expression": "max(t1, t2)"},
                        {"name": "flow_if_running", "expression": "flow_ls if running else 0"},
                        {"name": "diverging", "expression": "abs(t1 - t2) > 5", "type": "bool"}])
    rules = DeviceRules(dev.tags, dev.derived)
    out = poll(rules, 1000, flow=360, t1=20, t2=27, running=True)
    assert out["flow"].value == pytest.approx(36.0)
    assert out["flow_ls"].value == pytest.approx(10.0) and out["flow_ls"].unit == "l/s"
    assert (out["hottest"].value, out["diverging"].value) == (27, True)
    assert out["flow_if_running"].value == pytest.approx(10.0)
    out = poll(rules, 2000, running=False)  # only one input read: the others' latest values are used
    assert (out["flow_if_running"].value, out["flow_if_running"].ts) == (0, 2000)
    assert "hottest" not in out  # none of its inputs was read in this poll


def test_the_worst_input_quality_wins_and_a_bad_input_makes_it_bad() -> None:
    dev = device(TAGS, [{"name": "hottest", "expression": "max(t1, t2)"}])
    rules = DeviceRules(dev.tags, dev.derived)
    poll(rules, 1000, t1=20, t2=27)
    out = rules.apply([Point("t1", 21, 2000, Status.UNCERTAIN)])
    assert (out[-1].tag, out[-1].value, out[-1].status) == ("hottest", 27, Status.UNCERTAIN)
    out = rules.apply([Point("t2", None, 3000, Status.BAD_TIMEOUT, None, "timeout")])
    assert (out[-1].value, out[-1].status, out[-1].reason) == (None, Status.BAD_TIMEOUT, "input 't2' is bad")


def test_an_evaluation_error_is_a_bad_point_with_the_reason() -> None:
    dev = device(TAGS, [{"name": "ratio", "expression": "t1 / t2"}])
    rules = DeviceRules(dev.tags, dev.derived)
    out = poll(rules, 1000, t1=5, t2=0)
    assert out["ratio"].value is None and out["ratio"].status == Status.BAD
    assert out["ratio"].reason is not None and "division by zero" in out["ratio"].reason


def test_derived_tags_have_rules_of_their_own() -> None:
    dev = device(TAGS, [{"name": "hot", "expression": "max(t1, t2)", "transform": {"deadband": 5},
                         "alarms": {"high": 30}}])
    rules = DeviceRules(dev.tags, dev.derived)
    got = []
    for ts, (a, b) in enumerate([(20, 21), (22, 23), (30, 31), (30, 29)]):
        got += [p.value for p in rules.apply([Point("t1", a, ts * 1000), Point("t2", b, ts * 1000)])
                if p.tag == "hot"]
    assert got == [21, 31]  # 30 is within the deadband of 31
    assert [(e.alarm, e.active) for e in rules.take()[1]] == [("high", True), ("high", False)]


@pytest.mark.parametrize(("derived", "message"), [
    ({"name": "x", "expression": "nope * 2"}, "'expression' reads 'nope', not a tag of this device"),
    ({"name": "x", "expression": "__import__('os')"}, "'expression': '__import__' is not an allowed function"),
    ({"name": "t1", "expression": "t2"}, "duplicate tag name 't1'"),
    ({"name": "x", "expression": "t1", "type": "string"}, "'type' is 'string'; expected one of float64, int64, bool"),
    ({"name": "x", "expression": "t1", "address": 3}, "unknown key(s) ['address']"),
])
def test_derived_config_errors(derived: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        device(TAGS, [derived])
    assert message in str(err.value) and "devices[0].derived[0]" in str(err.value)
