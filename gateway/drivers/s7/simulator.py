"""A simulated S7 PLC: snap7's own server with the DB, M (merker), I and Q areas a device's tags use.

Each DB the tags name is registered exactly as long as its tags need (so a read past its end is
refused like on a PLC); M, I and Q are registered with at least ``area_size`` bytes. ``missing``
names tags the simulated PLC does not have: their DB is not registered, or not extended for them,
so tests can see the PLC refuse them. The area buffers outlive the server: :meth:`stop` closes the
listener and every connection for real, :meth:`start` serves the same memory again on the same port.

:meth:`set`/:meth:`get` go through the driver's codec; :meth:`write_bytes`/:meth:`read_bytes`
touch raw memory (tests use them to check the codec against independently packed bytes).

Run standalone: ``python -m gateway.drivers.s7.simulator plant.toml`` serves every ``s7`` device of the file on its
configured port, with moving values (see :func:`devtools.animation.animated_value`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

from snap7.server import Server
from snap7.type import SrvArea

from devtools.animation import animated_value  # the same moving values as the Modbus simulator
from gateway.config import DeviceConfig, TagConfig, load_plant
from gateway.drivers.s7.config import decode_value, encode_value, size_of
from proto.types import DateTime

log = logging.getLogger("gateway.drivers.s7.simulator")

_SRV_AREA = {"DB": SrvArea.DB, "M": SrvArea.MK, "I": SrvArea.PE, "Q": SrvArea.PA}
AreaKey = tuple[str, int]  # ("DB", 1), ("M", 0), ...


class S7Simulator:
    """Serves one device's tags on ``host:port`` (default: the device's configured port)."""

    def __init__(self, device: DeviceConfig, *, port: int | None = None, host: str = "127.0.0.1",
                 values: dict[str, Any] | None = None, missing: tuple[str, ...] = (), area_size: int = 256) -> None:
        self.device = device
        self.host = host
        self.port = port if port is not None else device.conn.port
        self.tags = {t.name: t for t in device.tags}
        self.areas: dict[AreaKey, bytearray] = _layout([t for t in device.tags if t.name not in missing], area_size)
        self._server: Server | None = None
        for name, value in (values or {}).items():
            self.set(name, value)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        server = Server(log=False)
        for (area, index), buf in self.areas.items():
            server.register_area(_SRV_AREA[area], index, buf)  # registered by reference: writes land in buf
        server.start_to(self.host, self.port)
        self._server = server
        return self

    def stop(self) -> None:
        """Close the listener and every client connection (a PLC switched off)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def _locked(self, key: AreaKey) -> Iterator[bytearray]:
        """The area's buffer, under the server's lock for it (its client threads use that lock)."""
        server = self._server
        if server is None:
            yield self.areas[key]
            return
        server.lock_area(_SRV_AREA[key[0]], key[1])
        try:
            yield self.areas[key]
        finally:
            server.unlock_area(_SRV_AREA[key[0]], key[1])

    def write_bytes(self, area: str, index: int, offset: int, data: bytes) -> None:
        with self._locked((area, index)) as buf:
            if offset + len(data) > len(buf):
                raise IndexError(f"{area}{index or ''} has {len(buf)} bytes; cannot write {len(data)} at {offset}")
            buf[offset:offset + len(data)] = data

    def read_bytes(self, area: str, index: int, offset: int, size: int) -> bytes:
        with self._locked((area, index)) as buf:
            return bytes(buf[offset:offset + size])

    def set(self, name: str, value: Any) -> None:
        """Set a tag as the PLC program would (a bool changes only its bit)."""
        tag = self.tags[name]
        a = tag.address
        with self._locked((a.area, a.db)) as buf:
            if tag.type == "bool":
                assert a.bit is not None
                mask = 1 << a.bit
                buf[a.offset] = buf[a.offset] | mask if value else buf[a.offset] & ~mask
            else:
                data = encode_value(tag.type, value, length=tag.length)
                buf[a.offset:a.offset + len(data)] = data

    def get(self, name: str) -> Any:
        tag = self.tags[name]
        a = tag.address
        data = self.read_bytes(a.area, a.db, a.offset, size_of(tag.type, tag.length))
        return decode_value(tag.type, data, bit=a.bit, length=tag.length)

    def animate(self, t: float, *, hold: tuple[str, ...] = ()) -> None:
        """Every tag (except ``hold``) to its moving value at time ``t`` (seconds)."""
        for name, tag in self.tags.items():
            if name not in hold and self._served(tag):
                # a datetime shows the PLC's clock (UTC)
                self.set(name, DateTime(int(time.time() * 1000)) if tag.type == "datetime" else animated_value(tag, t))

    def _served(self, tag: TagConfig) -> bool:
        buf = self.areas.get((tag.address.area, tag.address.db))
        return buf is not None and tag.address.offset + size_of(tag.type, tag.length) <= len(buf)


def _layout(tags: list[TagConfig], area_size: int) -> dict[AreaKey, bytearray]:
    """Zeroed areas covering ``tags``; STRINGs get their max-length byte, as a PLC declares them."""
    ends: dict[AreaKey, int] = {("M", 0): area_size, ("I", 0): area_size, ("Q", 0): area_size}
    for t in tags:
        key = (t.address.area, t.address.db)
        ends[key] = max(ends.get(key, 0), t.address.offset + size_of(t.type, t.length))
    areas = {key: bytearray(end) for key, end in ends.items()}
    for t in tags:
        if t.type == "string":
            areas[(t.address.area, t.address.db)][t.address.offset] = t.length
    return areas


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Serve the s7 devices of a plant file with snap7's server")
    ap.add_argument("plant", help="plant config (.toml/.yaml)")
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sims = [S7Simulator(d, host=args.host) for d in load_plant(args.plant).devices if d.protocol == "s7"]
    if not sims:
        raise SystemExit(f"{args.plant}: no s7 devices")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for sim in sims:
        sim.start()
        log.info("serving %s on %s:%d", sim.device.id, sim.host, sim.port)
    t0 = time.monotonic()
    try:
        while not stop.is_set():
            for sim in sims:
                sim.animate(time.monotonic() - t0)
            stop.wait(1.0)
    finally:
        for sim in sims:
            sim.stop()


if __name__ == "__main__":
    main()
