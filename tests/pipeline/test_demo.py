"""`nexus demo --duration N` (what `make demo DURATION=N` runs) exits 0 with rows stored and none lost."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.local import free_port
from tests.support import ROOT

pytestmark = pytest.mark.slow


def free_run(n: int = 2) -> int:
    """A port whose ``n - 1`` successors are free too (the demo uses port, port + 1, ...)."""
    for _ in range(50):
        p = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for i in range(1, n):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p + i))
                return p
            except OSError:
                continue
    raise RuntimeError("no free port run")


def test_demo_runs_for_a_duration_and_exits_zero(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "devtools.cli", "demo", "--duration", "6", "--home", str(tmp_path / "home"),
            "--mqtt-port", str(free_port()), "--pg-port", str(free_port()),
            "--modbus-port", str(free_run()), "--ops-port", str(free_run(3)), "--opcua-port", str(free_port()),
            "--s7-port", str(free_port()), "--api-port", str(free_port())]
    res = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=ROOT)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "== NEXUS demo summary ==" in out
    stored = next(line for line in out.splitlines() if line.startswith("rows stored"))
    assert int(stored.split()[2].replace(",", "")) > 0, out
    assert "lost               0" in out, out
    confirmed = next(line for line in out.splitlines() if line.startswith("points confirmed"))
    assert int(confirmed.split()[2].replace(",", "")) > 0, out
    assert "points waiting     0 " in out, out


def test_demo_refuses_a_taken_port_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "devtools.cli", "demo", "--duration", "1", "--home",
                              str(tmp_path / "home"), "--mqtt-port", str(port)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2
    assert f"port {port} for mosquitto (--mqtt-port) is already in use" in res.stderr
