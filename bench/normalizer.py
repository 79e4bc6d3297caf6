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
    t_bare = min(bare(polls) for _ in range(3))
    print(f"readings: {n:,} ({len(polls):,} polls of {TAGS} tags), one core")
    print(f"bare loop (build the output point) : {n / t_bare:12,.0f} readings/s")
    for name, make in cases:
        t, reported = min(ours(make(), polls) for _ in range(3))
        print(f"{name:36s}: {n / t:12,.0f} readings/s  ratio {t_bare / t:4.2f} x bare; "
              f"{reported:,} reported ({reported * 1000 // n} per 1,000 readings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
