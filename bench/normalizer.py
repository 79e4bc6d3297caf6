"""Normalizer throughput: readings/s through typical chains on one core, next to a bare Python loop.

Run: ``.venv/bin/python bench/normalizer.py [--readings 1000000]``.

Each chain gets the same readings (one device, 100 tags, a slowly moving signal with noise): the
raw limit is a bare loop that only builds the output Point per reading (what any stage at least
does), timed in the same run; the ratio is ours / bare. Chains: scale+clamp+deadband; unit
(°F → °C) + deadband; a 3-input expression tag (when normalizer.expr is there); a 1-minute window;
a high/low alarm. Single process, pinned to one core when it can be.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from normalizer import DeviceRules, Rules, parse_rules  # noqa: E402
from proto.points import Point, Status  # noqa: E402

TAGS = 100


@dataclass(frozen=True)
class Tag:
    name: str
    type: str
    unit: str | None
    rules: Rules


def readings(n: int) -> list[list[Point]]:
    """``n`` readings as polls of TAGS tags, 1 s apart: a sine plus noise (deterministic)."""
    polls = []
    for i in range(n // TAGS):
        ts = 1_790_000_000_000 + i * 1000
        polls.append([Point(f"t{k}", 500 + 400 * math.sin(i / 50 + k) + (i * 7919 + k) % 13 / 10, ts, Status.GOOD)
                      for k in range(TAGS)])
    return polls


def chain(keys: dict[str, Any], dtype: str = "float64", unit: str | None = None) -> DeviceRules:
    return DeviceRules([Tag(f"t{k}", dtype, unit, parse_rules(keys, dtype=dtype, unit=unit)) for k in range(TAGS)])


def bare(polls: list[list[Point]]) -> float:
    new = tuple.__new__
    t0 = time.perf_counter()
    for poll in polls:
        out = []
        for p in poll:
            out.append(new(Point, (p.tag, p.value * 1.0, p.ts, p.status, p.unit, p.reason)))
    return time.perf_counter() - t0


def ours(rules: DeviceRules, polls: list[list[Point]]) -> tuple[float, int]:
    reported = 0
    t0 = time.perf_counter()
    for poll in polls:
        reported += len(rules.apply(poll))
        rules.take()
    return time.perf_counter() - t0, reported


@dataclass(frozen=True)
class Derived:
    name: str
    type: str
    unit: str | None
    rules: Rules
    expression: Any


def expression_tags(polls: list[list[Point]]) -> None:
    """A derived tag per input tag, ``max(a, b, c) - 0.5 * a`` over three inputs: its cost is the run
    with the derived tags minus the same run without them (inputs kept, so only the evaluation counts)."""
    from normalizer.expr import compile_expression

    plain = Rules()
    inputs = [Tag(f"t{k}", "float64", None, plain) for k in range(TAGS)]
    derived = [Derived(f"d{k}", "float64", None, plain, compile_expression(
        f"max(t{k}, t{(k + 1) % TAGS}, t{(k + 2) % TAGS}) - 0.5 * t{k}")) for k in range(TAGS)]

    def run(with_derived: bool) -> float:
        rules = DeviceRules(inputs, derived) if with_derived else DeviceRules(inputs, [Derived(
            "d", "float64", None, plain, compile_expression(" + ".join(f"t{k}" for k in range(TAGS))))])
        t0 = time.perf_counter()
        for poll in polls:
            rules.apply(poll)
        return time.perf_counter() - t0

    with_d = min(run(True) for _ in range(3))
    base = min(run(False) for _ in range(3))
    evaluations = len(polls) * TAGS
    print(f"{'3-input expression tag':36s}: {evaluations / max(with_d - base, 1e-9):12,.0f} derived values/s "
          f"(with {with_d:.2f} s, without {base:.2f} s, {evaluations:,} evaluations)")


def volumes(polls: int = 1000) -> None:
    """Rows each storage mode stores per 1,000 polls (1 s apart) of the demo's signals (the simulators'
    moving values, devtools.animation), by signal kind."""
    from devtools.animation import animated_value
    from gateway.config import load_plant

    plant = load_plant(ROOT / "devtools" / "demo_plant.toml")
    device = plant.devices[0]
    kinds = {"float (zone1_temp)": device.tag("zone1_temp"), "counter (stroke_count)": device.tag("stroke_count"),
             "bool (valve1_open)": device.tag("valve1_open"), "string (state)": device.tag("state")}
    modes: dict[str, dict[str, Any]] = {
        "continuous": {},
        "on_change": {"storage": "on_change"},
        "on_change, deadband 2 + max silence 60 s": {"transform": {"deadband": 2.0, "max_silence_ms": 60000}},
        "on_event (bools)": {"storage": "on_event"},
        "windows_only (1 min)": {"storage": "windows_only", "windows": ["1m"]},
    }
    print(f"rows stored per {polls:,} polls (1 s apart) of the demo's signals:")
    for mode, keys in modes.items():
        cells = []
        for kind, tag in kinds.items():
            assert tag is not None
            try:
                rules = parse_rules(keys, dtype=tag.type, unit=tag.unit)
            except ValueError:
                cells.append(f"{kind} -")
                continue
            dr = DeviceRules([Tag(tag.name, tag.type, tag.unit, rules)])
            n = windows = 0
            for i in range(polls):
                n += len(dr.apply([Point(tag.name, animated_value(tag, float(i)), 1_790_000_000_000 + i * 1000)]))
                windows += len(dr.take()[0])
            cells.append(f"{kind} {n}" + (f" (+{windows} windows)" if windows else ""))
        print(f"  {mode:42s}: " + ", ".join(cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--readings", type=int, default=1_000_000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    polls = readings(args.readings)
    n = len(polls) * TAGS
    cases: list[tuple[str, Callable[[], DeviceRules]]] = [
        ("scale+clamp+deadband", lambda: chain({"transform": {"scale": 0.1, "offset": -5, "min": 0, "max": 95,
                                                              "deadband": 0.5}})),
        ("unit degF->degC + deadband",
         lambda: chain({"transform": {"from_unit": "degF", "deadband": 0.2}}, unit="degC")),
        ("1-minute window (continuous)", lambda: chain({"windows": ["1m"]})),
        ("high/low alarm", lambda: chain({"alarms": {"high": 850, "low": 150, "hysteresis": 5}})),
    ]
    volumes()
    t_bare = min(bare(polls) for _ in range(3))
    print(f"readings: {n:,} ({len(polls):,} polls of {TAGS} tags), one core")
    expression_tags(polls)
    print(f"bare loop (build the output point) : {n / t_bare:12,.0f} readings/s")
    for name, make in cases:
        t, reported = min(ours(make(), polls) for _ in range(3))
        print(f"{name:36s}: {n / t:12,.0f} readings/s  ratio {t_bare / t:4.2f} x bare; "
              f"{reported:,} reported ({reported * 1000 // n} per 1,000 readings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
