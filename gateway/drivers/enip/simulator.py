"""A Logix controller simulated by cpppo's EtherNet/IP server, run as a child process on loopback.

cpppo serves flat tags of its elementary types (SINT, USINT, INT, UINT, DINT, UDINT, LINT, ULINT,
REAL, LREAL, BOOL, STRING, SSTRING), scalars or one-dimensional arrays, all starting at zero. A
dotted name (``Motor.Speed``) is one flat tag that answers the two-segment symbolic path a client
sends for a structure member; cpppo has no structure layouts and cannot upload its tag list.

:meth:`EnipSimulator.set` and :meth:`EnipSimulator.get` use cpppo's own client, a CIP
implementation independent of pycomm3, so tests can check the driver's decoding and encoding
against it rather than against itself.

Run standalone: ``python -m gateway.drivers.enip.simulator plant.toml`` serves every ``enip`` device of the file
on its configured port.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devtools.local import LocalServerError, ensure_port_free, stop_process, wait_port
from gateway.config import DeviceConfig
from gateway.drivers.enip.config import CIP_TYPES

_ELEMENT = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<index>\d+)\])?$")


def tags_for(device: DeviceConfig) -> dict[str, str]:
    """cpppo tag definitions (name -> ``TYPE`` or ``TYPE[n]``) that serve every tag of ``device``."""
    types: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for t in device.tags:
        m = _ELEMENT.match(t.address.path)
        if m is None or t.address.path.startswith("Program:"):
            raise ValueError(f"cpppo cannot serve {t.address.path!r} (only the last segment may have an index)")
        name, cip = m["name"], CIP_TYPES[t.type]
        if types.setdefault(name, cip) != cip:
            raise ValueError(f"{name!r} is used as {types[name]} and as {cip}")
        if m["index"] is not None:
            sizes[name] = max(sizes.get(name, 1), int(m["index"]) + 1)
    return {n: f"{cip}[{sizes[n]}]" if n in sizes else cip for n, cip in types.items()}


class EnipSimulator:
    """``python -m cpppo.server.enip`` on ``host:port`` serving ``tags`` (name -> ``TYPE[n]``)."""

    def __init__(self, tags: dict[str, str], *, port: int, host: str = "127.0.0.1", log: Path | None = None,
                 route_path: str | None = None) -> None:
        self.tags = dict(tags)
        self.host = host
        self.port = port
        self.log = log  #: cpppo's output (warnings about refused requests), or discarded
        self.route_path = route_path  #: e.g. "1/0": accept only this route (cpppo --route-path)
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_device(cls, device: DeviceConfig, **kwargs: Any) -> EnipSimulator:
        return cls(tags_for(device), host=device.conn.host, port=device.conn.port, **kwargs)

    def start(self, timeout: float = 20.0) -> Self:
        ensure_port_free(self.port, "the cpppo EtherNet/IP simulator")
        cmd = [sys.executable, "-m", "cpppo.server.enip", "--no-config", "--no-udp",
               "--address", f"{self.host}:{self.port}"]
        if self.route_path is not None:
            cmd += ["--route-path", f'"{self.route_path}"']
        cmd += [f"{name}={typ}" for name, typ in self.tags.items()]
        log = open(self.log, "ab") if self.log else contextlib.nullcontext(subprocess.DEVNULL)  # noqa: SIM115
        with log as out:  # the child has its own copy of the file
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            wait_port(self.port, timeout, self.proc, "cpppo EtherNet/IP simulator")
        except LocalServerError:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=5)

    def kill(self) -> None:
        """SIGKILL, as a controller that loses power: no session is closed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- cpppo's client, to set and check values independently of pycomm3 -------------------------

    def set(self, **values: tuple[str, Any]) -> None:
        """Write values with cpppo's client: ``set(Speed=("REAL", 1.5), **{"Counts[3]": ("DINT", 7)})``."""
        ops = []
        for path, (cip, value) in values.items():
            text = f'"{value}"' if isinstance(value, str) else str(int(value) if isinstance(value, bool) else value)
            ops.append(f"{path}=({cip}){text}")
        self._client(ops)

    def get(self, *paths: str) -> list[Any]:
        """Read one element per path with cpppo's client."""
        return [v[0] for v in self._client(list(paths))]

    def _client(self, ops: list[str], timeout: float = 5.0) -> list[Any]:
        from cpppo.server.enip import client  # only the tests and the demo need it

        out = []
        with client.connector(host=self.host, port=self.port, timeout=timeout) as conn:
            for _idx, _dsc, op, _rpy, sts, val in conn.pipeline(
                    operations=client.parse_operations(ops), depth=2, timeout=timeout):
                if sts not in (0, None) or val is None:
                    raise LocalServerError(f"cpppo client: {op} failed with status {sts!r}")
                out.append(val)
        return out


def main(argv: list[str] | None = None) -> None:
    from gateway.config import load_plant

    ap = argparse.ArgumentParser(description="Serve the enip devices of a plant file with cpppo")
    ap.add_argument("plant")
    args = ap.parse_args(argv)
    sims = [EnipSimulator.for_device(d) for d in load_plant(args.plant).devices if d.protocol == "enip"]
    for sim in sims:
        sim.start()
        print(f"serving {sorted(sim.tags)} on {sim.host}:{sim.port}", flush=True)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        signal.sigwait(stop)
    finally:
        for sim in sims:
            sim.stop()


if __name__ == "__main__":
    main()
