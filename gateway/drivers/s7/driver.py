"""Siemens S7 driver (classic S7 protocol, ISO-on-TCP, PUT/GET) on python-snap7's asyncio client.

Tags use Siemens absolute addresses (``DB1.DBD4``, ``DB1.DBX0.3``, ``MW20``, ``I0.1``, ``QB1``,
``DB2.DBS10`` for a STRING) or the explicit keys ``area``/``db``/``offset``/``bit``; their parsing and
the value bytes are in :mod:`gateway.drivers.s7.config`.

Read plan (rebuilt when the negotiated PDU size changes):

1. Tags of one area/DB, sorted by offset, are coalesced into a *span* when the hole between them is
   at most ``max_gap`` bytes and the span still fits one response item (``pdu - 18`` bytes). A
   separate item costs 12 request bytes, 4-5 response bytes and one of the 20 item slots of a
   request, so reading a few unused bytes is cheaper. A tag larger than one item is read in pieces.
2. Items are packed first-fit into READ VAR requests of at most 20 items whose request
   (12 + 12 per item) and response (14 + 4 + data + fill byte per item) fit the negotiated PDU.

Each item has its own return code, so a tag the PLC refuses is a BAD point and its neighbours stay
GOOD: a refused span of several tags is split into one span per tag and re-read at once.

Why not ``AsyncClient.read_multi_vars``: it does one round trip per item, and the sync client's
optimizer raises on the first refused item. Requests are built with snap7's ``S7Protocol`` and
exchanged on the client's asyncio connection, one at a time per device (a lock), each bounded by
``timeout_ms``; any transport error or timeout drops the connection (``connected`` turns false).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from snap7 import AsyncClient
from snap7.datatypes import S7Area, S7WordLen
from snap7.error import S7Error, S7ProtocolError, get_protocol_error_message
from snap7.s7protocol import get_return_code_description

from gateway.config import DeviceConfig, TagConfig
from gateway.drivers import base
from gateway.drivers.s7.config import S7Address, S7Connection, decode_value, encode_value, size_of
from gateway.errors import GatewayError, PermanentError, TemporaryError, WriteRefused
from proto.points import Point, Status

log = logging.getLogger("gateway.drivers.s7")

MAX_ITEMS = 20  #: items per READ VAR request (S7 limit)
# S7 item return code -> status of the tags it covers
_ITEM_STATUS = {0x05: Status.BAD_OUT_OF_RANGE, 0x0A: Status.BAD_CONFIGURATION_ERROR,
                0x03: Status.BAD_CONFIGURATION_ERROR, 0x06: Status.BAD_CONFIGURATION_ERROR,
                0x07: Status.BAD_CONFIGURATION_ERROR}


# --- read plan ------------------------------------------------------------------------------------

@dataclass(eq=False)
class Span:
    """Bytes ``start .. start+size`` of one area/DB, read together; the tags decoded from them."""

    area: int
    db: int
    start: int
    size: int
    tags: list[TagConfig] = field(default_factory=list)


@dataclass(frozen=True)
class Item:
    """One READ VAR item: bytes ``offset .. offset+size`` of a span."""

    span: Span
    offset: int
    size: int


def plan_spans(tags: tuple[TagConfig, ...] | list[TagConfig], *, max_gap: int, max_item: int) -> list[Span]:
    """Tags coalesced into spans per area/DB (overlapping tags, e.g. bits of one byte, always)."""
    def key(t: TagConfig) -> tuple[int, int, int]:
        return t.address.code, t.address.db, t.address.offset

    spans: list[Span] = []
    cur: Span | None = None
    for tag in sorted(tags, key=key):
        a, size = tag.address, size_of(tag.type, tag.length)
        if cur is not None and (cur.area, cur.db) == (a.code, a.db) and a.offset - (cur.start + cur.size) <= max_gap \
                and max(cur.size, a.offset + size - cur.start) <= max_item:
            cur.size = max(cur.size, a.offset + size - cur.start)
            cur.tags.append(tag)
        else:
            cur = Span(a.code, a.db, a.offset, size, [tag])
            spans.append(cur)
    return spans


def pack(spans: list[Span], pdu: int) -> list[list[Item]]:
    """Items (spans, in pieces if longer than one item) packed first-fit into requests fitting ``pdu``."""
    max_item = item_limit(pdu)
    requests: list[list[Item]] = []
    budget: list[tuple[int, int]] = []  # (request bytes, response bytes) of each request
    for span in spans:
        for off in range(0, span.size, max_item):
            item = Item(span, off, min(max_item, span.size - off))
            resp = 4 + item.size + item.size % 2  # item header, data, fill byte
            for i, (q, r) in enumerate(budget):
                if len(requests[i]) < MAX_ITEMS and q + 12 <= pdu and r + resp <= pdu:
                    requests[i].append(item)
                    budget[i] = (q + 12, r + resp)
                    break
            else:
                requests.append([item])
                budget.append((12 + 12, 14 + resp))
    return requests


def item_limit(pdu: int) -> int:
    """Data bytes one item may carry in a response: PDU minus 12 header, 2 parameter, 4 item bytes."""
    return (pdu - 18) & ~1


@dataclass(frozen=True)
class _Bad:
    """A refused item or request: the status of its tags and why."""

    status: int
    reason: str
    code: int = 0  #: item return code (0: the whole request was refused)


def parse_items(raw: bytes, sizes: list[int]) -> list[bytes | _Bad]:
    """Data (or the refusal) of each item of a READ VAR response; ValueError if malformed."""
    out: list[bytes | _Bad] = []
    pos = 0
    for i, size in enumerate(sizes):
        if pos + 4 > len(raw):
            raise ValueError(f"response truncated at item {i}")
        code, transport, length = raw[pos], raw[pos + 1], int.from_bytes(raw[pos + 2:pos + 4], "big")
        pos += 4
        if code != 0xFF:
            desc = get_return_code_description(code)
            out.append(_Bad(_ITEM_STATUS.get(code, Status.BAD_DEVICE_FAILURE), f"{desc} (0x{code:02x})", code))
            continue
        n = length // 8 if transport in (0x03, 0x04, 0x05) else length  # bit lengths vs byte lengths
        if n != size or pos + n > len(raw):
            raise ValueError(f"item {i}: {n} bytes, expected {size}")
        out.append(raw[pos:pos + n])
        pos += n + (n % 2 if i < len(sizes) - 1 else 0)
    return out


class _Refused(Exception):
    """The PLC answered with an error in the header: it refuses the whole request."""

    def __init__(self, code: int) -> None:
        super().__init__(f"{get_protocol_error_message(code)} (error 0x{code:04x})")
        self.code = code


# --- driver ---------------------------------------------------------------------------------------

def _ms() -> int:
    return int(time.time() * 1000)


class Driver(base.Driver):
    """One S7 connection to one PLC; reads and writes are serialized (one request in flight)."""

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.conn: S7Connection = device.conn
        self.timeout = device.timeout_ms / 1000
        self.pdu_size = 0  #: negotiated at connect
        self.requests = 0  #: S7 round trips since start (reads and writes)
        self.spans: list[Span] = []
        self.plan: list[list[Item]] = []  #: the requests of one poll
        self._group_plans: dict[tuple[frozenset[str], int], list[list[Item]]] = {}  #: per poll group and PDU
        self._client: AsyncClient | None = None
        self._healthy = False  # false after a cancelled exchange: the stream may hold a late response
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._healthy and self._client.get_connected()

    def health(self) -> dict[str, Any]:
        return {"connected": self.connected, "pdu_size": self.pdu_size, "requests": self.requests,
                "requests_per_poll": len(self.plan), "items_per_poll": sum(len(r) for r in self.plan)}

    def _error(self, cls: type[GatewayError], message: str) -> GatewayError:
        return cls(message, device_id=self.device.id)

    async def connect(self) -> None:
        async with self._lock:
            await self._drop()
            c = self.conn
            client = AsyncClient()
            client.pdu_length = c.pdu_size
            client.local_tsap = c.local_tsap
            # connect() builds the called TSAP as connection_type << 8 | rack << 5 | slot: any TSAP splits so
            client.connection_type = c.remote_tsap >> 8
            rack, slot = (c.remote_tsap & 0xFF) >> 5, c.remote_tsap & 0x1F
            try:
                async with asyncio.timeout(self.timeout):
                    await client.connect(c.host, rack, slot, c.port)
            except BaseException as exc:
                await _quiet_disconnect(client)
                if not isinstance(exc, (TimeoutError, S7Error, OSError)):
                    raise  # cancellation, or a library bug the poller reports as a driver error and retries
                why = f"timed out after {self.device.timeout_ms} ms" if isinstance(exc, TimeoutError) else str(exc)
                raise self._error(TemporaryError, f"connect to {c.host}:{c.port} failed: {why}") from exc
            self._client, self._healthy = client, True
            if client.pdu_length != self.pdu_size:
                self.pdu_size = client.pdu_length
                self.spans = plan_spans(self.device.tags, max_gap=c.max_gap, max_item=item_limit(self.pdu_size))
            self.plan = pack(self.spans, self.pdu_size)

    def lost_reason(self) -> str | None:
        if self._client is None:
            return None
        if not self._healthy:
            return "a request was cancelled mid-exchange: the connection may hold a late answer"
        return f"connection to {self.conn.host}:{self.conn.port} closed by the PLC or the network"

    async def close(self) -> None:
        try:
            await self._drop()
        except Exception:  # close() never raises
            log.debug("close failed", exc_info=True, extra={"device": self.device.id})

    async def _drop(self) -> None:
        client, self._client, self._healthy = self._client, None, False
        if client is not None:
            await _quiet_disconnect(client)

    def _client_or_raise(self) -> AsyncClient:
        if self._client is None or not self.connected:
            raise self._error(TemporaryError, "not connected")
        return self._client

    async def _exchange(self, request: bytes, what: str) -> dict[str, Any]:
        """One request and its response, bounded by ``timeout_ms``; a transport failure drops the
        connection and raises TemporaryError, a refusal in the response header raises _Refused."""
        client = self._client_or_raise()
        conn = client.connection
        assert conn is not None
        try:
            async with asyncio.timeout(self.timeout):
                await conn.send_data(request)
                raw = await conn.receive_data()
            self.requests += 1
            response = client.protocol.parse_response(raw)
            if response["sequence"] != int.from_bytes(request[4:6], "big"):
                raise S7ProtocolError(f"response to request {response['sequence']}, not to this one")
            return response
        except asyncio.CancelledError:
            self._healthy = False
            raise
        except S7ProtocolError as exc:
            if exc.error_code:
                raise _Refused(exc.error_code) from exc
            await self._drop()
            raise self._error(TemporaryError, f"{what}: bad response: {exc}") from exc
        except TimeoutError as exc:
            await self._drop()
            raise self._error(TemporaryError, f"{what} timed out after {self.device.timeout_ms} ms") from exc
        except (S7Error, OSError) as exc:
            await self._drop()
            raise self._error(TemporaryError, f"{what} failed: {exc}") from exc

    async def _read_items(self, items: list[Item]) -> list[bytes | _Bad]:
        request = self._client_or_raise().protocol.build_multi_read_request(
            [(i.span.area, i.span.db, i.span.start + i.offset, i.size) for i in items])
        try:
            response = await self._exchange(request, "read")
        except _Refused as exc:
            return [_Bad(Status.BAD_DEVICE_FAILURE, f"the read request was refused: {exc}")] * len(items)
        params = response.get("parameters") or {}
        try:
            if params.get("function_code") != 0x04 or params.get("item_count") != len(items):
                raise ValueError(f"not an answer to a read of {len(items)} items: {params}")
            return parse_items(response.get("raw_data") or b"", [i.size for i in items])
        except ValueError as exc:
            await self._drop()
            raise self._error(TemporaryError, f"read: bad response: {exc}") from exc

    async def _read_spans(self, requests: list[list[Item]]) -> dict[Span, tuple[int, bytearray | _Bad]]:
        """(timestamp, bytes or refusal) of every span of ``requests``."""
        bufs: dict[Span, bytearray] = {}
        out: dict[Span, tuple[int, bytearray | _Bad]] = {}
        for items in requests:
            results = await self._read_items(items)
            ts = _ms()
            for item, res in zip(items, results, strict=True):  # parse_items: one result per item
                span, prev = item.span, out.get(item.span)
                if isinstance(res, _Bad):
                    out[span] = (ts, res)
                elif prev is None or not isinstance(prev[1], _Bad):  # a refused piece spoils its span
                    buf = bufs[span] if span in bufs else bufs.setdefault(span, bytearray(span.size))
                    buf[item.offset:item.offset + item.size] = res
                    out[span] = (ts, buf)
        return out

    async def read(self) -> list[Point]:
        async with self._lock:
            results = await self._read_spans(self.plan)
            refused = [s for s, (_, r) in results.items() if isinstance(r, _Bad) and r.code and len(s.tags) > 1]
            if refused:  # find the refused tag(s): one span per tag, from now on
                singles = [Span(s.area, s.db, t.address.offset, size_of(t.type, t.length), [t])
                           for s in refused for t in s.tags]
                log.warning("PLC refused %d coalesced span(s); reading their tags one by one", len(refused),
                            extra={"device": self.device.id})
                self.spans = [s for s in self.spans if s not in refused] + singles
                self.plan = pack(self.spans, self.pdu_size)
                for s in refused:
                    del results[s]
                results.update(await self._read_spans(pack(singles, self.pdu_size)))
            return self._points(results)

    async def read_tags(self, names: frozenset[str]) -> list[Point]:
        """One poll group: its tags planned among themselves. A span the PLC refuses makes its tags
        BAD (no per-tag split here; the whole-device :meth:`read` does that)."""
        key = (names, self.pdu_size)
        requests = self._group_plans.get(key)
        if requests is None:
            tags = [t for t in self.device.tags if t.name in names]
            spans = plan_spans(tags, max_gap=self.conn.max_gap, max_item=item_limit(self.pdu_size))
            requests = self._group_plans[key] = pack(spans, self.pdu_size)
        async with self._lock:
            return self._points(await self._read_spans(requests))

    def _points(self, results: dict[Span, tuple[int, bytearray | _Bad]]) -> list[Point]:
        points: dict[str, Point] = {}
        for span, (ts, res) in results.items():
            for t in span.tags:
                if isinstance(res, _Bad):
                    reason = f"PLC refused {t.address}: {res.reason}" if res.code else res.reason
                    points[t.name] = Point(t.name, None, ts, res.status, t.unit, reason)
                    continue
                off = t.address.offset - span.start
                raw = bytes(res[off:off + size_of(t.type, t.length)])
                try:
                    value = decode_value(t.type, raw, bit=t.address.bit, length=t.length)
                except ValueError as exc:  # datetime bytes that are no date (free of cost for the others)
                    points[t.name] = Point(t.name, None, ts, Status.BAD_DECODING_ERROR, t.unit,
                                           f"{t.address}: {exc}")
                    continue
                points[t.name] = Point(t.name, value, ts, Status.GOOD, t.unit)
        return [points[t.name] for t in self.device.tags if t.name in points]

    async def write(self, tag: TagConfig, value: Any) -> None:
        """Write one value. A bool is a read-modify-write of its byte (snap7's server, like its
        ``db_write_bool``, has no bit writes); a STRING keeps the PLC's max-length byte."""
        a: S7Address = tag.address
        try:
            data = b"" if tag.type == "bool" else encode_value(tag.type, value, length=tag.length)
        except (ValueError, UnicodeEncodeError) as exc:
            raise WriteRefused(f"cannot write {value!r} to {tag.type} tag {tag.name!r}: {exc}",
                               device_id=self.device.id) from exc
        async with self._lock:
            self._client_or_raise()
            if tag.type == "bool":
                assert a.bit is not None
                old = (await self._read_for_write(a))[0]
                data = bytes([old | 1 << a.bit if value else old & ~(1 << a.bit)])
            start = a.offset
            if tag.type == "string":
                data, start = data[1:], start + 1
            chunk = max(1, self.pdu_size - 35)  # header, parameters and data header of a write
            for off in range(0, len(data), chunk):
                await self._write_bytes(a, start + off, data[off:off + chunk])

    async def _read_for_write(self, a: S7Address) -> bytes:
        res = (await self._read_items([Item(Span(a.code, a.db, a.offset, 1), 0, 1)]))[0]
        if isinstance(res, _Bad):
            raise self._error(PermanentError, f"PLC refused {a}: {res.reason}")
        return res

    async def _write_bytes(self, a: S7Address, start: int, data: bytes) -> None:
        request = self._client_or_raise().protocol.build_write_request(
            S7Area(a.code), a.db, start, S7WordLen.BYTE, data)
        try:
            response = await self._exchange(request, "write")
        except _Refused as exc:
            raise self._error(PermanentError, f"PLC refused write to {a}: {exc}") from exc
        raw = response.get("raw_data") or b""
        if (response.get("parameters") or {}).get("function_code") != 0x05 or len(raw) != 1:
            await self._drop()
            raise self._error(TemporaryError, f"write to {a}: bad response")
        if raw[0] != 0xFF:
            desc = get_return_code_description(raw[0])
            raise self._error(PermanentError, f"PLC refused write to {a}: {desc} (0x{raw[0]:02x})")


async def _quiet_disconnect(client: AsyncClient) -> None:
    """Close the client's socket within a second whatever state it is in."""
    try:
        async with asyncio.timeout(1.0):
            await client.disconnect()
    except Exception:
        log.debug("disconnect failed", exc_info=True)
