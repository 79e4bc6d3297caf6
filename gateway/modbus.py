"""Modbus TCP driver: coalesced reads of the four tables, typed decoding, quality per tag.

Neighbouring tags of one table are read together when the span stays within ``max_registers``
(``MAX_BITS`` for coils/discrete inputs) and the hole between them is at most ``max_gap``. A span
the device refuses with "illegal data address" (often a hole in its register map) is split into
one read per tag from then on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from gateway.config import MAX_BITS, DeviceConfig, TagConfig
from gateway.errors import TemporaryError
from gateway.registers import decode
from proto.points import Point, Status

log = logging.getLogger("gateway.modbus")

_READ = {"holding": "read_holding_registers", "input": "read_input_registers",
         "coil": "read_coils", "discrete": "read_discrete_inputs"}
# Modbus exception code -> (status, reason)
_EXCEPTIONS = {
    1: (Status.BAD_CONFIGURATION_ERROR, "modbus exception 1: illegal function"),
    2: (Status.BAD_CONFIGURATION_ERROR, "modbus exception 2: illegal data address"),
    3: (Status.BAD_CONFIGURATION_ERROR, "modbus exception 3: illegal data value"),
    4: (Status.BAD_DEVICE_FAILURE, "modbus exception 4: server device failure"),
    6: (Status.BAD_COMMUNICATION_ERROR, "modbus exception 6: server device busy"),
    10: (Status.BAD_COMMUNICATION_ERROR, "modbus exception 10: gateway path unavailable"),
    11: (Status.BAD_TIMEOUT, "modbus exception 11: gateway target failed to respond"),
}


@dataclass
class Span:
    """One read request covering one or more tags of a table."""

    table: str
    start: int
    count: int
    tags: list[TagConfig]


def plan(tags: tuple[TagConfig, ...] | list[TagConfig], *, max_registers: int, max_gap: int) -> list[Span]:
    """Group tags into as few reads as the limits allow (tags may overlap, e.g. bits of one register)."""
    spans: list[Span] = []
    for table in ("holding", "input", "coil", "discrete"):
        limit = MAX_BITS if table in ("coil", "discrete") else max_registers
        cur: Span | None = None
        for tag in sorted((t for t in tags if t.table == table), key=lambda t: t.address):
            end = tag.address + tag.count
            if cur is not None and tag.address - (cur.start + cur.count) <= max_gap and end - cur.start <= limit:
                cur.count = max(cur.count, end - cur.start)
                cur.tags.append(tag)
                continue
            cur = Span(table, tag.address, tag.count, [tag])
            spans.append(cur)
    return spans


class ModbusDriver:
    """Reads one Modbus TCP device. One connection, reused; :meth:`connect` again after a failure."""

    def __init__(self, device: DeviceConfig) -> None:
        self.device = device
        self.spans = plan(device.tags, max_registers=device.max_registers, max_gap=device.max_gap)
        self._client: AsyncModbusTcpClient | None = None
        self.requests = 0

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        self.close()
        d = self.device
        client = AsyncModbusTcpClient(d.host, port=d.port, timeout=d.timeout_ms / 1000, retries=0, reconnect_delay=0)
        try:
            async with asyncio.timeout(d.timeout_ms / 1000 + 1):
                ok = await client.connect()
        except (TimeoutError, OSError) as exc:
            client.close()
            raise TemporaryError(f"connect to {d.host}:{d.port} failed: {exc!r}", device_id=d.id) from exc
        if not ok:
            client.close()
            raise TemporaryError(f"connect to {d.host}:{d.port} failed", device_id=d.id)
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def bad_points(self, status: int, reason: str, ts: int | None = None) -> list[Point]:
        ts = ts or int(time.time() * 1000)
        return [Point(t.name, None, ts, status, t.unit, reason) for t in self.device.tags]

    async def read(self) -> list[Point]:
        """Read every tag once. Device-level failures raise :class:`TemporaryError` (the caller
        reports all tags BAD and reconnects); a refused span only makes its own tags BAD."""
        if self._client is None:
            raise TemporaryError("not connected", device_id=self.device.id)
        points: list[Point] = []
        for span in list(self.spans):
            points.extend(await self._read_span(span))
        return points

    async def _read_span(self, span: Span) -> list[Point]:
        d = self.device
        fn = getattr(self._client, _READ[span.table])
        try:
            async with asyncio.timeout(d.timeout_ms / 1000 + 0.5):
                rr = await fn(span.start, count=span.count, device_id=d.unit_id)
            self.requests += 1
        except (TimeoutError, asyncio.TimeoutError) as exc:
            self.close()
            raise TemporaryError(f"read timed out after {d.timeout_ms} ms", device_id=d.id) from exc
        except (ModbusException, OSError) as exc:
            self.close()
            raise TemporaryError(f"read failed: {exc}", device_id=d.id) from exc
        ts = int(time.time() * 1000)
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            if code == 2 and len(span.tags) > 1:
                self._split(span)
                log.warning("span %s@%d+%d refused (illegal address); reading its tags one by one",
                            span.table, span.start, span.count, extra={"device": d.id})
            status, reason = _EXCEPTIONS.get(code, (Status.BAD_DEVICE_FAILURE, f"modbus exception {code}"))
            return [Point(t.name, None, ts, status, t.unit, reason) for t in span.tags]
        out = []
        if span.table in ("coil", "discrete"):
            bits = rr.bits
            for t in span.tags:
                out.append(Point(t.name, bool(bits[t.address - span.start]), ts, Status.GOOD, t.unit))
            return out
        regs = rr.registers
        for t in span.tags:
            off = t.address - span.start
            value = decode(regs[off:off + t.count], t.type, byte_order=t.byte_order or d.byte_order,
                           word_order=t.word_order or d.word_order, bit=t.bit)
            if t.type not in ("bool", "string"):
                value = t.transform.apply(value)  # type: ignore[arg-type]
            out.append(Point(t.name, value, ts, Status.GOOD, t.unit))
        return out

    def _split(self, span: Span) -> None:
        i = self.spans.index(span)
        self.spans[i:i + 1] = [Span(span.table, t.address, t.count, [t]) for t in span.tags]
