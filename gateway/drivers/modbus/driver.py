"""Modbus driver (TCP, RTU on a serial line, RTU frames over TCP): coalesced reads of the four
tables, typed decoding, quality per tag, writes of holding registers and coils.

Neighbouring tags of one table are read together when the span stays within ``max_registers``
(``MAX_BITS`` for coils/discrete inputs) and the hole between them is at most ``max_gap``. A span
the device refuses with "illegal data address" (often a hole in its register map) is split into
one read per tag from then on.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from gateway.config import DeviceConfig, TagConfig
from gateway.drivers import base
from gateway.drivers.modbus.config import MAX_BITS, TABLES, ModbusAddress, ModbusConnection
from gateway.drivers.modbus.registers import decode, encode
from gateway.errors import PermanentError, TemporaryError, WriteRefused
from gateway.values import shortest_float32
from proto.points import Point, Status

log = logging.getLogger("gateway.drivers.modbus")

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
    fast: _FastDecode | None = None  #: one struct for the whole span, when its tags allow it


_STRUCT_CODES = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
                 "float32": "f", "float64": "d"}


@dataclass(frozen=True)
class _FastDecode:
    """Decodes every tag of a span with one precompiled ``struct`` (big-endian, no overlaps, no bits):
    3x cheaper per tag than :func:`decode` one by one (bench/gateway.py)."""

    registers: struct.Struct  #: the span's registers -> bytes
    values: struct.Struct  #: those bytes -> one value per tag
    float32_at: tuple[tuple[int, int], ...]  #: (value index, byte offset) of float32 tags, to round

    @staticmethod
    def build(span: Span) -> _FastDecode | None:
        addresses = [t.address.address for t in span.tags]
        if addresses != sorted(addresses):
            return None  # values come out in address order, the points in span order: keep them equal
        fmt, pos, floats = [">"], 0, []
        for i, t in enumerate(span.tags):
            a: ModbusAddress = t.address
            code = _STRUCT_CODES.get(t.type)
            off = a.address - span.start
            if code is None or a.bit is not None or a.byte_order != "big" or a.word_order != "big" or off < pos:
                return None  # bits, strings, other orders or overlapping tags: decode tag by tag
            if off > pos:
                fmt.append(f"{(off - pos) * 2}x")
            if code == "f":
                floats.append((i, off * 2))
            fmt.append(code)
            pos = off + a.count
        return _FastDecode(struct.Struct(f">{span.count}H"), struct.Struct("".join(fmt)), tuple(floats))

    def decode(self, regs: list[int]) -> list[Any]:
        raw = self.registers.pack(*regs)
        values = list(self.values.unpack_from(raw))
        for i, off in self.float32_at:
            values[i] = shortest_float32(values[i], raw[off:off + 4])
        return values


def plan(tags: tuple[TagConfig, ...] | list[TagConfig], *, max_registers: int, max_gap: int) -> list[Span]:
    """Group tags into as few reads as the limits allow (tags may overlap, e.g. bits of one register)."""
    spans: list[Span] = []
    for table in TABLES:
        limit = MAX_BITS if table in ("coil", "discrete") else max_registers
        cur: Span | None = None
        for tag in sorted((t for t in tags if t.address.table == table), key=lambda t: t.address.address):
            a = tag.address
            end = a.address + a.count
            if cur is not None and a.address - (cur.start + cur.count) <= max_gap and end - cur.start <= limit:
                cur.count = max(cur.count, end - cur.start)
                cur.tags.append(tag)
                continue
            cur = Span(table, a.address, a.count, [tag])
            spans.append(cur)
    for span in spans:
        if span.table in ("holding", "input"):
            span.fast = _FastDecode.build(span)
    return spans


Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class Driver(base.Driver):
    """Reads and writes one Modbus device over ``connections`` reused connections (one by default;
    servers that allow several answer a poll's spans in parallel); :meth:`connect` again after a failure."""

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.conn: ModbusConnection = device.conn
        self.spans = plan(device.tags, max_registers=self.conn.max_registers, max_gap=self.conn.max_gap)
        self._group_spans: dict[frozenset[str], list[Span]] = {}  # poll group -> its own coalesced reads
        self._clients: list[Client] = []
        self._lost: str | None = None  # why a connection dropped without a failed request
        self.requests = 0

    @property
    def connected(self) -> bool:
        return bool(self._clients) and all(c.connected for c in self._clients)

    def _where(self) -> str:
        c = self.conn
        return c.serial_port if c.transport == "rtu" else f"{c.host}:{c.port}"

    def lost_reason(self) -> str | None:
        return self._lost

    def _on_link(self, up: bool) -> None:
        """pymodbus's trace_connect: called with False only when the transport went away by itself
        (not when we close it)."""
        if not up and self._lost is None:
            self._lost = f"connection to {self._where()} closed by the device or the network"

    async def connect(self) -> None:
        await self.close()
        self._lost = None
        clients: list[Client] = []
        try:
            for _ in range(self.conn.connections):
                clients.append(await self._open())
        except TemporaryError:
            for c in clients:
                c.close()
            raise
        self._clients = clients

    async def _open(self) -> Client:
        c, timeout = self.conn, self.device.timeout_ms / 1000
        client: Client
        if c.transport == "rtu":
            client = AsyncModbusSerialClient(c.serial_port, framer=FramerType.RTU, baudrate=c.baudrate,
                                             bytesize=c.bytesize, parity=c.parity, stopbits=c.stopbits,
                                             timeout=timeout, retries=0, reconnect_delay=0,
                                             trace_connect=self._on_link)
        else:
            framer = FramerType.RTU if c.transport == "rtu_tcp" else FramerType.SOCKET
            client = AsyncModbusTcpClient(c.host, port=c.port, framer=framer, timeout=timeout, retries=0,
                                          reconnect_delay=0, trace_connect=self._on_link)
        try:
            async with asyncio.timeout(timeout + 1):
                ok = await client.connect()
        except (TimeoutError, OSError) as exc:
            client.close()
            raise TemporaryError(f"connect to {self._where()} failed: {exc!r}", device_id=self.device.id) from exc
        if not ok:
            client.close()
            raise TemporaryError(f"connect to {self._where()} failed", device_id=self.device.id)
        return client

    async def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients = []

    def health(self) -> dict[str, Any]:
        return {"connected": self.connected, "connections": len(self._clients), "requests": self.requests,
                "spans": len(self.spans)}

    async def read(self) -> list[Point]:
        """Read every tag once. Device-level failures raise :class:`TemporaryError` (the caller
        reports all tags BAD and reconnects); a refused span only makes its own tags BAD."""
        return await self._read_spans(self.spans)

    async def read_tags(self, names: frozenset[str]) -> list[Point]:
        """One poll group: only its tags, coalesced among themselves."""
        spans = self._group_spans.get(names)
        if spans is None:
            c = self.conn
            spans = plan([t for t in self.device.tags if t.name in names], max_registers=c.max_registers,
                         max_gap=c.max_gap)
            self._group_spans[names] = spans
        return await self._read_spans(spans)

    async def _read_spans(self, spans: list[Span]) -> list[Point]:
        if not self._clients:
            raise TemporaryError("not connected", device_id=self.device.id)
        todo = list(spans)  # _split may change ``spans`` meanwhile
        n = len(self._clients)
        if n == 1 or len(todo) == 1:
            points: list[Point] = []
            for span in todo:
                points.extend(await self._read_span(span, spans))
            return points
        # span i goes over connection i % n; each connection reads its spans one after the other
        results: list[list[Point]] = [[] for _ in todo]

        async def worker(k: int) -> None:
            for i in range(k, len(todo), n):
                results[i] = await self._read_span(todo[i], spans, k)

        try:
            async with asyncio.TaskGroup() as tg:
                for k in range(n):
                    tg.create_task(worker(k), name=f"gateway[{self.device.id}].read[connection {k}]")
        except* TemporaryError as group:  # the poller expects one TemporaryError, as with one connection
            raise group.exceptions[0] from None
        return [p for r in results for p in r]

    async def _call(self, fn: str, *args: Any, client: int = 0, **kwargs: Any) -> Any:
        """One request with the device's timeout; transport failures close the connections."""
        d = self.device
        if not self._clients:
            raise TemporaryError("not connected", device_id=d.id)
        try:
            async with asyncio.timeout(d.timeout_ms / 1000 + 0.5):
                rr = await getattr(self._clients[client], fn)(*args, device_id=self.conn.unit_id, **kwargs)
            self.requests += 1
            return rr
        except TimeoutError as exc:
            await self.close()
            raise TemporaryError(f"request timed out after {d.timeout_ms} ms", device_id=d.id) from exc
        except (ModbusException, OSError) as exc:
            await self.close()
            raise TemporaryError(f"request failed: {exc}", device_id=d.id) from exc

    async def _read_span(self, span: Span, spans: list[Span], client: int = 0) -> list[Point]:
        rr = await self._call(_READ[span.table], span.start, count=span.count, client=client)
        ts = int(time.time() * 1000)
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            if code == 2 and len(span.tags) > 1:
                self._split(spans, span)
                log.warning("span %s@%d+%d refused (illegal address); reading its tags one by one",
                            span.table, span.start, span.count, extra={"device": self.device.id})
            status, reason = _EXCEPTIONS.get(code, (Status.BAD_DEVICE_FAILURE, f"modbus exception {code}"))
            return [Point(t.name, None, ts, status, t.unit, reason) for t in span.tags]
        out = []
        if span.table in ("coil", "discrete"):
            bits = rr.bits
            for t in span.tags:
                out.append(Point(t.name, bool(bits[t.address.address - span.start]), ts, Status.GOOD, t.unit))
            return out
        regs = rr.registers
        if span.fast is not None:
            good = Status.GOOD
            return [Point(t.name, v, ts, good, t.unit) for t, v in zip(span.tags, span.fast.decode(regs), strict=True)]
        for t in span.tags:
            a: ModbusAddress = t.address
            off = a.address - span.start
            value = decode(regs[off:off + a.count], t.type, byte_order=a.byte_order, word_order=a.word_order,
                           bit=a.bit)
            out.append(Point(t.name, value, ts, Status.GOOD, t.unit))
        return out

    @staticmethod
    def _split(spans: list[Span], span: Span) -> None:
        i = spans.index(span)
        spans[i:i + 1] = [Span(span.table, t.address.address, t.address.count, [t]) for t in span.tags]

    async def write(self, tag: TagConfig, value: Any) -> None:
        a: ModbusAddress = tag.address
        if a.table == "coil":
            rr = await self._call("write_coil", a.address, bool(value))
        elif a.table != "holding":
            raise PermanentError(f"a {a.table} tag is read-only", device_id=self.device.id)
        elif a.bit is not None:  # one bit of a register: read-modify-write (FC 22 is not universal)
            rr = await self._call("read_holding_registers", a.address, count=1)
            self._check(rr, "read before bit write")
            reg = rr.registers[0]
            reg = (reg | (1 << a.bit)) if value else (reg & ~(1 << a.bit))
            rr = await self._call("write_register", a.address, reg)
        else:
            try:
                regs = encode(value, tag.type, byte_order=a.byte_order, word_order=a.word_order, length=tag.length)
            except (ValueError, struct.error) as exc:
                raise WriteRefused(f"cannot encode {value!r} as {tag.type}: {exc}", device_id=self.device.id) from exc
            if len(regs) == 1:
                rr = await self._call("write_register", a.address, regs[0])
            else:
                rr = await self._call("write_registers", a.address, regs)
        self._check(rr, "write")

    def _check(self, rr: Any, what: str) -> None:
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            reason = _EXCEPTIONS.get(code, (0, f"modbus exception {code}"))[1]
            raise PermanentError(f"{what} refused by the device: {reason}", device_id=self.device.id)
