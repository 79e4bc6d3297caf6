"""Memory of the daemons while a benchmark runs: peak RSS per process and per daemon, read from /proc.

Run: ``.venv/bin/python bench/rss.py [--every 0.1] -- .venv/bin/python bench/ingest.py --repeat 1``.

Starts the command, and every ``--every`` seconds walks its process tree (``/proc/<pid>/task/*/children``),
reading ``VmRSS`` and ``VmHWM`` (the kernel's own peak RSS, so a peak between two samples is not missed) of each
process from ``/proc/<pid>/status``. A process is named by its command line (``python -m ingestion`` →
ingestion, ``mosquitto``, ``postgres``, ...). At the end it prints, per name: how many processes ran, the
largest VmHWM of one process, and the largest sum of VmRSS of the processes running at one sample (what one
pod holds when a daemon runs more than one process). The command's own output passes through unchanged. A child
caught between fork and exec counts under its parent's name (``bench``) with its parent's memory.
Linux only; the benchmark is not changed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

#: ``python -m <module>`` modules that are NEXUS Edge daemons (and the simulators the benches start)
MODULES = ("ingestion", "gateway", "gateway_core", "normalizer", "nexus_operator", "gateway.drivers.modbus.simulator")


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out.extend(int(p) for p in task.read_text().split())
        except OSError:
            continue
    return out


def tree(root: int) -> list[int]:
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(children(pid))
    return seen


def name_of(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in argv if a]
    if not args:
        return None
    if "-m" in args[:-1]:
        module = args[args.index("-m") + 1]
        if module == "cProfile" and "-m" in args[args.index("-m") + 2:]:
            module = args[args.index("-m", args.index("-m") + 2) + 1]
        return module if module in MODULES else f"python -m {module}"
    exe = Path(args[0]).name
    if exe.startswith("python"):
        return "bench" if len(args) > 1 and args[1].startswith("bench/") else f"python {Path(args[1]).name}"
    return exe.split(":")[0]  # "postgres: nexus bench ..." is a postgres backend


def status_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (KeyError, ValueError, IndexError):
        return None  # a zombie has no Vm lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--every", type=float, default=0.1, help="seconds between two walks of the process tree")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the benchmark, after --")
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the benchmark command after --")
    proc = subprocess.Popen(cmd)
    # (pid, name) -> its VmHWM: a child seen between fork and exec still has its parent's command line (and
    # memory); exec gives it a new name and a new VmHWM, so the two are kept apart
    hwm: dict[tuple[int, str], int] = {}
    peak_sum: dict[str, int] = defaultdict(int)
    t0 = time.monotonic()
    while proc.poll() is None:
        now: dict[str, int] = defaultdict(int)
        for pid in tree(proc.pid)[1:]:
            name = name_of(pid)
            kib = status_kib(pid)
            if name is None or kib is None:
                continue
            hwm[(pid, name)] = max(hwm.get((pid, name), 0), kib[1])
            now[name] += kib[0]
        for name, kib_sum in now.items():
            peak_sum[name] = max(peak_sum[name], kib_sum)
        time.sleep(args.every)
    per_name: dict[str, list[int]] = defaultdict(list)
    for (_, name), peak in hwm.items():
        per_name[name].append(peak)
    print(f"\nrss.py: {' '.join(cmd)} (exit {proc.returncode}, {time.monotonic() - t0:.0f} s, "
          f"sampled every {args.every:g} s)")
    print(f"{'process':<36} {'count':>5} {'max VmHWM MiB':>14} {'max sum VmRSS MiB':>18}  each VmHWM, in start order")
    for name in sorted(per_name, key=lambda n: -max(per_name[n])):
        each = " ".join(f"{k / 1024:.0f}" for k in per_name[name][:8])
        print(f"{name:<36} {len(per_name[name]):>5} {max(per_name[name]) / 1024:>14.1f} {peak_sum[name] / 1024:>18.1f}"
              f"  {each}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
