"""OPC UA driver (asyncua): batched polling or subscriptions, security, browse-path addressing.

A tag's ``node`` is a node id, a node id by namespace URI or a browse path from the Root folder
(:mod:`gateway.drivers.opcua.config`). URIs and browse paths are resolved at every :meth:`connect`, so a
server that restarted with other namespace indexes is followed without a gateway restart
(:mod:`gateway.drivers.opcua.client`); :func:`discover` lists a server's variables as tags
(:mod:`gateway.drivers.opcua.browse`).

Every connect builds a new asyncua client, session and (``mode = "subscribe"``) subscription: the
poller's reconnect is the one recovery path, instead of asyncua's own reconnect underneath it.
See README.md in this folder for the config keys.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeNotif

from gateway.config import DeviceConfig, TagConfig
from gateway.drivers import base
from gateway.drivers.changebuffer import ChangeBuffer
from gateway.drivers.opcua.client import VARIANTS, bounded, open_client, resolve, shutdown, status_name
from gateway.drivers.opcua.config import NodeAddress, OpcUaConnection
from gateway.errors import PermanentError, TemporaryError
from gateway.values import INT_RANGES, check_write, round_float32
from proto.points import Point, Quality, Status
from proto.types import DateTime

log = logging.getLogger("gateway.drivers.opcua")
_BAD_NODE = ua.StatusCodes.BadNodeIdUnknown


def _ms(ts: datetime | None) -> int | None:
    """Unix ms, or None for a missing timestamp (OPC UA's null DateTime is 1601-01-01)."""
    ms = int(ts.timestamp() * 1000) if ts is not None else 0
    return ms if ms > 0 else None


def _coerce(value: Any, dtype: str) -> Any:
    """The raw Python value for a ``dtype`` tag; ValueError when the server's value cannot be one."""
    if dtype == "string":
        if isinstance(value, str):
            return value
    elif dtype == "bool":
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if dtype in INT_RANGES:
            lo, hi = INT_RANGES[dtype]
            if float(value).is_integer() and lo <= value <= hi:
                return int(value)
            raise ValueError(f"{value!r} does not fit a {dtype} tag")
        return round_float32(float(value)) if dtype == "float32" else float(value)
    raise ValueError(f"a {type(value).__name__} value does not fit a {dtype} tag")


#: OPC UA's null DateTime: 0 on the wire (1601-01-01, what asyncua decodes it and anything earlier to)
_NULL_DATE = datetime(1601, 1, 1, tzinfo=UTC)
NULL_DATE_REASON = "no date (OPC UA null DateTime)"


def _datetime_point(tag: TagConfig, value: Any, ts: int, status: int) -> Point:
    """A DateTime value as a datetime point: cut to the millisecond; OPC UA's null DateTime (MinDateTime,
    0 on the wire) is a null value with its status and a reason saying so; before 1970 is BadOutOfRange.
    MaxDateTime (Int64 max, "no end": asyncua gives 9999-12-31T23:59:59Z) is that date."""
    if not isinstance(value, datetime):
        return Point(tag.name, None, ts, ua.StatusCodes.BadTypeMismatch, tag.unit,
                     f"BadTypeMismatch: a {type(value).__name__} value does not fit a datetime tag")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # OPC UA DateTime is UTC; asyncua gives aware ones
    if value <= _NULL_DATE:
        return Point(tag.name, None, ts, status, tag.unit, NULL_DATE_REASON)
    try:
        when = DateTime.of(value)
    except ValueError:
        return Point(tag.name, None, ts, ua.StatusCodes.BadOutOfRange, tag.unit,
                     f"BadOutOfRange: {value.isoformat()} is before 1970-01-01, the earliest datetime")
    return Point(tag.name, when, ts, status, tag.unit, None if status == 0 else status_name(status))


def to_point(tag: TagConfig, dv: ua.DataValue) -> Point:
    """One value as a Point: the OPC UA status is the point's status, the source timestamp its time."""
    ts = _ms(dv.SourceTimestamp) or _ms(dv.ServerTimestamp) or int(time.time() * 1000)
    status = dv.StatusCode.value if dv.StatusCode is not None else 0
    if Quality.of(status) is Quality.BAD:
        return Point(tag.name, None, ts, status, tag.unit, status_name(status))
    value = dv.Value.Value if dv.Value is not None else None
    if value is None:
        return Point(tag.name, None, ts, Status.BAD_WAITING_FOR_INITIAL_DATA, tag.unit, "no value (null)")
    if tag.type == "datetime":
        return _datetime_point(tag, value, ts, status)
    try:
        value = _coerce(value, tag.type)
    except ValueError as exc:
        return Point(tag.name, None, ts, ua.StatusCodes.BadTypeMismatch, tag.unit, f"BadTypeMismatch: {exc}")
    return Point(tag.name, value, ts, status, tag.unit, None if status == 0 else status_name(status))


class _Changes:
    """asyncua's subscription callbacks for one connection; stale ones are ignored once it is replaced."""

    def __init__(self, drv: Driver, tags: dict[int, TagConfig]) -> None:
        self.drv, self.tags, self.active = drv, tags, True

    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        tag = self.tags.get(data.monitored_item.ClientHandle)
        if self.active and tag is not None:
            self.drv.buffer(to_point(tag, data.monitored_item.Value))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        if self.active and status.Status.is_bad() and self.drv.lost is None:
            self.drv.lost = f"subscription ended: {status_name(status.Status.value)}"

    async def connection_lost(self, exc: Exception) -> None:
        if self.active and self.drv.lost is None:
            self.drv.lost = f"connection lost: {exc or type(exc).__name__}"


class Driver(base.Driver):
    """One OPC UA server. ``read()`` polls all tags in one Read, or drains subscription changes."""

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.conn: OpcUaConnection = device.conn
        self.timeout = device.timeout_ms / 1000
        self.client: Client | None = None
        self.nodes: dict[str, ua.NodeId] = {}  #: tag name -> node id resolved at connect
        self.unresolved: dict[str, str] = {}  #: tag name -> why its node did not resolve
        self.lost: str | None = None  #: why the connection is known to be dead (set by callbacks)
        self.connects = 0
        self._changes: _Changes | None = None
        self._buffer = ChangeBuffer(self.conn.buffer_size)  # subscribe mode: changes until the next read()
        self._reported_overflows = 0

    @property
    def connected(self) -> bool:
        return self.client is not None and self.lost is None and self.client.state is UaClientState.CONNECTED

    def lost_reason(self) -> str | None:
        if self.lost is not None:
            return self.lost
        return f"connection {self.client.state.value}" if self.client is not None else None

    async def connect(self) -> None:
        await self.close()
        self.client = await open_client(self.conn, self.timeout)
        self.lost = None
        self._changes = _Changes(self, {})
        self.client.connection_lost_callback = self._changes.connection_lost
        try:
            tags = self.device.tags
            found = await resolve(self.client, [t.address for t in tags], self.timeout)
            self.nodes = {t.name: n for t, n in zip(tags, found, strict=True) if isinstance(n, ua.NodeId)}
            self.unresolved = {t.name: n for t, n in zip(tags, found, strict=True) if isinstance(n, str)}
            for name, reason in self.unresolved.items():
                log.warning("tag %s: %s", name, reason, extra={"device": self.device.id, "tag": name})
            if self.conn.mode == "subscribe":
                await self._subscribe()
        except BaseException:
            await self.close()
            raise
        self.connects += 1

    async def _subscribe(self) -> None:
        """One subscription, one monitored item per resolved tag (client handle = tag index + 1)."""
        assert self.client is not None and self._changes is not None
        self._changes.tags = tags = {i: t for i, t in enumerate(self.device.tags, 1) if t.name in self.nodes}
        sub = await bounded("CreateSubscription", self.client.create_subscription(
            self.conn.publishing_interval_ms, self._changes), self.timeout)
        results = await bounded("CreateMonitoredItems", sub.create_monitored_items(
            [self._item(handle, tag) for handle, tag in tags.items()]), self.timeout) if tags else []
        now = int(time.time() * 1000)
        for tag, res in zip(tags.values(), results, strict=True):
            if isinstance(res, ua.StatusCode):  # refused item, e.g. BadFilterNotAllowed
                self.buffer(Point(tag.name, None, now, res.value, tag.unit, f"monitoring refused: {res.name}"))
        for t in self.device.tags:
            if t.name in self.unresolved:
                self.buffer(Point(t.name, None, now, _BAD_NODE, t.unit, self.unresolved[t.name]))

    def _item(self, handle: int, tag: TagConfig) -> ua.MonitoredItemCreateRequest:
        a: NodeAddress = tag.address
        params = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=a.sampling_interval_ms,
                                         QueueSize=a.queue_size, DiscardOldest=True)
        if a.deadband:
            params.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                                DeadbandType=1 if a.deadband_type == "absolute" else 2,
                                                DeadbandValue=a.deadband)
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=self.nodes[tag.name], AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)

    @property
    def overflows(self) -> int:
        """Subscription changes dropped because read() was not called in time."""
        return self._buffer.overflows

    def buffer(self, point: Point) -> None:
        """Keep a change for the next read(); when full, keep only the newest per tag and count the rest."""
        self._buffer.push(point)

    async def read(self) -> list[Point]:
        return await self._read(None)

    async def read_tags(self, names: frozenset[str]) -> list[Point]:
        """One poll group (poll mode only: subscriptions refuse poll groups): one Read of its nodes."""
        return await self._read(names)

    async def _read(self, names: frozenset[str] | None) -> list[Point]:
        if self.conn.mode == "subscribe" and self._buffer:
            return self._drain()  # changes that arrived before a loss are still real data
        if not self.connected or self.client is None:
            self.lost = self.lost or (f"connection {self.client.state.value}" if self.client else "not connected")
            raise TemporaryError(self.lost, device_id=self.device.id)
        if self.conn.mode == "subscribe":
            return self._drain()
        wanted = [t for t in self.device.tags if names is None or t.name in names]
        tags = [t for t in wanted if t.name in self.nodes]
        params = ua.ReadParameters(TimestampsToReturn=ua.TimestampsToReturn.Both, NodesToRead=[
            ua.ReadValueId(NodeId=self.nodes[t.name], AttributeId=ua.AttributeIds.Value) for t in tags])
        try:
            values = await bounded("read", self.client.uaclient.read(params), self.timeout, self.device.id) \
                if tags else []
        except TemporaryError as exc:
            self.lost = str(exc)
            raise
        points = {t.name: to_point(t, dv) for t, dv in zip(tags, values, strict=True)}
        now = int(time.time() * 1000)
        return [points.get(t.name) or Point(t.name, None, now, _BAD_NODE, t.unit, self.unresolved.get(t.name))
                for t in wanted]

    def _drain(self) -> list[Point]:
        points = self._buffer.drain()
        if self.overflows > self._reported_overflows:
            log.warning("subscription buffer overflowed: %d changes dropped so far (kept the newest per tag)",
                        self.overflows, extra={"device": self.device.id})
            self._reported_overflows = self.overflows
        return points

    async def write(self, tag: TagConfig, value: Any) -> None:
        value = check_write(tag.type, value, length=tag.length)
        if tag.name in self.unresolved:
            raise PermanentError(f"write to {tag.name} refused: {self.unresolved[tag.name]}", device_id=self.device.id)
        if not self.connected or self.client is None:
            raise TemporaryError(f"write to {tag.name}: {self.lost or 'not connected'}", device_id=self.device.id)
        node = self.nodes[tag.name]
        if isinstance(value, DateTime):
            value = value.to_datetime()
        dv = ua.DataValue(ua.Variant(value, VARIANTS[tag.type]))
        results = await bounded(f"write to {tag.name}", self.client.uaclient.write_attributes(
            [node], [dv], ua.AttributeIds.Value), self.timeout, self.device.id)
        if not results[0].is_good():
            raise PermanentError(f"write to {tag.name} ({node.to_string()}) refused: {status_name(results[0].value)}",
                                 device_id=self.device.id)

    async def close(self) -> None:
        client, self.client = self.client, None
        if self._changes is not None:
            self._changes.active = False
            self._changes = None
        if client is not None:
            await shutdown(client, self.timeout)

    def health(self) -> dict[str, Any]:
        return {"connected": self.connected, "mode": self.conn.mode, "connects": self.connects,
                "lost": self.lost, "unresolved": dict(self.unresolved), "buffered": len(self._buffer),
                "overflows": self.overflows}

