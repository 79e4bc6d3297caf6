"""Sparkplug B codec cost: microseconds per metric of a DDATA of N metrics (default 100), next to
the raw limit measured in the same run.

Run: ``.venv/bin/python bench/sparkplug_codec.py [--metrics 100 --seconds 2]`` (~15 s).

* raw limit: the generated protobuf classes filled by hand (alias, timestamp, value; no checks, no
  properties) and serialized: what any Python encoder on this protobuf runtime pays at least;
* ``encode_payload``: our codec from ready :class:`Metric` values (alias, timestamp, value and a
  ``Quality`` property, no datatype: a DDATA as the specification wants it);
* ``point_to_metric + encode``: the edge node's path from :class:`proto.points.Point`s;
* JSON ``encode_batch``: the same points as our JSON batch message, for comparison;
* ``decode_payload``: the host's side, datatypes from the births (``declared``).

Prints only; nothing here is a timed assertion.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proto.points import Point, Status, encode_batch
from proto.sparkplug import sparkplug_b_pb2 as pb
from proto.sparkplug.codec import decode_payload, encode_payload
from proto.sparkplug.mapping import datatype_for, point_to_metric
from proto.sparkplug.model import DataType, Payload

TS = 1732370000123
#: the tag types of a plausible device: mostly floats, some counters and flags
TYPES = ("float64", "float32", "int32", "uint16", "bool", "float64", "uint64", "int16", "float64", "float32")


def points(n: int) -> list[tuple[Point, DataType]]:
    out = []
    for i in range(n):
        tag_type = TYPES[i % len(TYPES)]
        value: float | int | bool
        if tag_type.startswith("float"):
            value = 20.0 + i * 0.25
        elif tag_type == "bool":
            value = i % 3 == 0
        elif tag_type == "uint64":
            value = 2**60 + i
        else:
            value = i * 7
        status = Status.BAD_TIMEOUT if i % 50 == 49 else Status.GOOD
        out.append((Point(f"tag-{i}", value, TS + i, status, None), datatype_for(tag_type)))
    return out


def raw_encode(batch: list[tuple[Point, DataType]]) -> bytes:
    msg = pb.Payload(timestamp=TS, seq=7)
    add = msg.metrics.add
    for i, (p, dt) in enumerate(batch):
        m = add()
        m.alias = i
        m.timestamp = p.ts
        if dt is DataType.DOUBLE:
            m.double_value = p.value  # type: ignore[assignment]
        elif dt is DataType.FLOAT:
            m.float_value = p.value  # type: ignore[assignment]
        elif dt is DataType.BOOLEAN:
            m.boolean_value = p.value  # type: ignore[assignment]
        elif dt in (DataType.UINT64, DataType.INT64):
            m.long_value = p.value  # type: ignore[assignment]
        else:
            m.int_value = p.value  # type: ignore[assignment]
    return msg.SerializeToString()


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Seconds per call, best of three runs of about ``seconds / 3`` each."""
    fn()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - start > 0.05:
            break
        calls *= 2
    rounds = max(1, int(seconds / 3 / (time.perf_counter() - start) * calls))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter() - start) / rounds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", type=int, default=100, help="metrics per DDATA message")
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per case (s)")
    args = parser.parse_args()
    n = args.metrics
    batch = points(n)
    metrics = [point_to_metric(p, dt, alias=i, with_unit=False) for i, (p, dt) in enumerate(batch)]
    payload = Payload(TS, 7, metrics)
    data = encode_payload(payload, with_datatypes=False)
    declared: dict[int | str, DataType] = {i: dt for i, (_, dt) in enumerate(batch)}
    assert [m.value for m in decode_payload(data, declared=declared).metrics] == [m.value for m in metrics]
    plain = [p for p, _ in batch]

    cases: list[tuple[str, Callable[[], object]]] = [
        ("raw limit: generated classes by hand", lambda: raw_encode(batch)),
        ("encode_payload (ready metrics)", lambda: encode_payload(payload, with_datatypes=False)),
        ("point_to_metric + encode_payload", lambda: encode_payload(Payload(TS, 7, [
            point_to_metric(p, dt, alias=i, with_unit=False) for i, (p, dt) in enumerate(batch)]),
            with_datatypes=False)),
        ("JSON encode_batch (same points)", lambda: encode_batch(plain, seq=7, gateway="gw-a", run=1)),
        ("decode_payload (declared datatypes)", lambda: decode_payload(data, declared=declared)),
    ]
    print(f"DDATA of {n} metrics: {len(data)} bytes Sparkplug, {len(encode_batch(plain, seq=7))} bytes JSON batch")
    raw = None
    for name, fn in cases:
        us = per_call(fn, args.seconds) / n * 1e6
        raw = raw if raw is not None else us
        print(f"  {name:<40} {us:7.2f} us/metric  {us / raw:5.2f} x raw  ({1e6 / us:>9,.0f} metrics/s)")


if __name__ == "__main__":
    main()
