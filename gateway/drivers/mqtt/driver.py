"""MQTT source driver: values that devices already publish on a (foreign) broker, mapped to tags.

Why a driver and not a bridge: collectors and edge boxes (ParX, Tasmota, vendor gateways) publish
topics and payload shapes of their own. Mapping them here, per tag, gives their values the same path
as PLC values: canonical types, transforms, OPC UA status, UNS, historian. Per tag: a topic filter,
a payload ``format``, and for JSON a ``value`` path plus optional ``timestamp`` / ``quality`` paths
(see README.md here; the mapping is in :mod:`gateway.drivers.mqtt.mapping`). Several tags may share
a topic.

It is a subscription driver: messages are converted when they arrive and buffered (bounded) until
the poller's next :meth:`Driver.read`. A payload that does not convert is a BAD point with the
reason, counted; it never stops the driver. Reconnecting is the poller's call (:meth:`connect`),
so the client's own retry is parked.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from gateway.drivers import base
from gateway.drivers.changebuffer import ChangeBuffer
from gateway.drivers.mqtt.config import MqttConnection
from gateway.drivers.mqtt.mapping import (
    Mismatch,
    MqttAddress,
    decode,
    encode_write,
    map_message,
)
from gateway.errors import PermanentError, TemporaryError
from gateway.values import check_write
from nexus.common import MqttSettings
from nexus.mqtt import Message, MqttClient, MqttError
from proto.points import Point, Status

if TYPE_CHECKING:
    from gateway.config import DeviceConfig, TagConfig

log = logging.getLogger("gateway.drivers.mqtt")

_PARKED_S = 3600.0  # the MqttClient's own reconnect delay: the poller reconnects through connect()


# --- topic filters -----------------------------------------------------------------------------

def _matches(levels: list[str], topic: list[str]) -> bool:
    if topic[0].startswith("$") and levels[0] in ("+", "#"):
        return False  # MQTT: wildcards never match $SYS-style topics at the first level
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(topic) or (level != "+" and level != topic[i]):
            return False
    return len(topic) == len(levels)


def _covers(a: str, b: str) -> bool:
    """Whether filter ``a`` (not ``b`` itself) matches every topic that filter ``b`` matches."""
    al, bl = a.split("/"), b.split("/")
    if a == b or (al[0] in ("+", "#") and bl[0].startswith("$")):
        return False
    for i, level in enumerate(al):
        if level == "#":
            return True
        if i >= len(bl) or bl[i] == "#" or (level != "+" and level != bl[i]):
            return False
    return len(al) == len(bl)


def subscriptions(filters: set[str]) -> dict[str, str]:
    """filter -> the filter subscribed for it. Overlapping subscriptions would deliver a message twice,
    so a filter covered by another one is not subscribed itself."""
    roots = sorted(f for f in filters if not any(_covers(g, f) for g in filters))
    return {f: next(g for g in roots if g == f or _covers(g, f)) for f in filters}


# --- the driver --------------------------------------------------------------------------------

class Driver(base.Driver):
    """Subscribes once per connection; converts messages as they arrive, hands them over in read()."""

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.conn: MqttConnection = device.conn
        self._client_id = self.conn.client_id or f"nexus-{device.id}-{uuid.uuid4().hex[:8]}"
        self._sub_of = subscriptions({t.address.topic for t in device.tags})
        self._subs = sorted(set(self._sub_of.values()))
        self._filters = {f: f.split("/") for f in self._sub_of}
        # at least twice the tags, so compaction (newest per tag) always frees half
        self._buffer = ChangeBuffer(max(self.conn.buffer_size, 2 * len(device.tags)))
        self._client: MqttClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()  # set on SUBACK (or CONNACK without tags)
        self._refused: dict[str, str] = {}  # tag -> why the broker refused its subscription
        self._fresh = False  # first read after a connect: report tags without a value yet
        self._bad_tags: set[str] = set()  # tags whose last payload did not convert (log on change only)
        self.received = self.bad_payloads = self.connects = 0
        self.last_error: str | None = None

    def _link_up(self) -> bool:
        return self._client is not None and self._client.connected and self._ready.is_set()

    @property
    def connected(self) -> bool:
        """Subscribed; after a drop, stays true until read() has handed over what arrived before it."""
        return self._link_up() or bool(self._buffer)

    async def connect(self) -> None:
        await self._stop_client()
        c, d = self.conn, self.device
        settings = MqttSettings(host=c.host, port=c.port, username=c.username, password=c.password,
                                keepalive=c.keepalive, connect_timeout=d.timeout_ms / 1000,
                                reconnect_min=_PARKED_S, reconnect_max=_PARKED_S)
        self._ready, self._stop, self._refused = asyncio.Event(), asyncio.Event(), {}
        client = MqttClient(settings, client_id=self._client_id, subscriptions=[(s, c.qos) for s in self._subs],
                            on_message=self._on_message, on_connect=self._on_connect)
        client._client.on_subscribe = self._on_subscribe  # noqa: SLF001 - MqttClient has no SUBACK hook (yet)
        self._client = client
        # the client lives as long as the connection, across connect() and read() calls, so no
        # `async with` of this driver can own it: the driver does, and _stop_client awaits it (bounded)
        self._task = asyncio.create_task(client.run_loop(self._stop), name=f"gateway[{d.id}].mqtt_source.run_loop")
        try:
            async with asyncio.timeout(d.timeout_ms / 1000):
                await self._ready.wait()
        except TimeoutError:
            await self._stop_client()
            raise TemporaryError(f"no connection to broker {c.host}:{c.port} within {d.timeout_ms} ms "
                                 "(the nexus.mqtt log has the cause)", device_id=d.id) from None
        self.connects += 1
        self._fresh = True

    def lost_reason(self) -> str | None:
        c = self.conn
        return f"connection to broker {c.host}:{c.port} lost (the nexus.mqtt log has the broker's reason)"

    def _on_connect(self) -> None:
        if not self._subs:
            self._ready.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
        refused = {s: str(rc) for s, rc in zip(self._subs, codes, strict=False) if rc.is_failure}
        for t in self.device.tags:
            if (why := refused.get(self._sub_of[t.address.topic])) is not None:
                self._refused[t.name] = f"broker refused subscription {self._sub_of[t.address.topic]!r}: {why}"
        if refused:
            log.warning("broker refused subscriptions %s", refused, extra={"device": self.device.id})
        self._ready.set()

    def _on_message(self, msg: Message) -> None:
        try:
            self._ingest(msg)
        except Exception:  # a bug here must never reach paho's read callback and stall the connection
            log.exception("cannot map message", extra={"device": self.device.id, "topic": msg.topic})

    def _ingest(self, msg: Message) -> None:
        self.received += 1
        now = int(time.time() * 1000)
        topic = msg.topic.split("/")
        matches = {f: _matches(levels, topic) for f, levels in self._filters.items()}
        decoded: dict[str, Any] = {}  # format -> document: decoded once for all tags of the topic
        for tag in self.device.tags:  # in config order, so one message's points keep a stable order
            if not matches[tag.address.topic]:
                continue
            fmt = tag.address.format
            if fmt not in decoded:
                try:
                    decoded[fmt] = decode(fmt, msg.payload)
                except Mismatch as exc:
                    decoded[fmt] = exc
            self._push(map_message(tag, decoded[fmt], now), msg.topic)

    def _push(self, p: Point, topic: str) -> None:
        if p.value is None:
            self.bad_payloads += 1
            self.last_error = f"{p.tag}: {p.reason}"
            if p.tag not in self._bad_tags:
                self._bad_tags.add(p.tag)
                log.warning("tag %s: bad payload on %s: %s", p.tag, topic, p.reason,
                            extra={"device": self.device.id, "tag": p.tag, "topic": topic})
        else:
            self._bad_tags.discard(p.tag)
        if dropped := self._buffer.push(p):  # the poller fell behind the topic's rate
            log.warning("buffer full (%d points): dropped %d older values, kept the newest per tag",
                        self._buffer.capacity, dropped, extra={"device": self.device.id})

    @property
    def overflows(self) -> int:
        """Points dropped because the buffer was full (the newest per tag are kept)."""
        return self._buffer.overflows

    async def read(self) -> list[Point]:
        if not self._buffer and not self._link_up():
            c = self.conn
            raise TemporaryError(f"lost connection to broker {c.host}:{c.port}" if self._client else "not connected",
                                 device_id=self.device.id)
        points = self._buffer.drain()
        if self._fresh and self._link_up():
            self._fresh = False
            points.extend(self._initial_points({p.tag for p in points}))
        return points

    def _initial_points(self, seen: set[str]) -> list[Point]:
        """After a connect: refused tags BAD; tags without a message yet waiting (not their pre-outage state)."""
        now = int(time.time() * 1000)
        out = []
        for t in self.device.tags:
            if t.name in self._refused:
                out.append(Point(t.name, None, now, Status.BAD_CONFIGURATION_ERROR, t.unit, self._refused[t.name]))
            elif t.name not in seen:
                out.append(Point(t.name, None, now, Status.BAD_WAITING_FOR_INITIAL_DATA, t.unit,
                                 f"no message on {t.address.topic!r} since connecting"))
        return out

    async def write(self, tag: TagConfig, value: Any) -> None:
        addr: MqttAddress = tag.address
        if addr.write_topic is None:
            raise PermanentError(f"tag {tag.name!r} has no write_topic", device_id=self.device.id)
        payload = encode_write(addr, check_write(tag.type, value, length=tag.length))
        client = self._client
        if client is None or not self._link_up():
            raise TemporaryError("not connected to the broker", device_id=self.device.id)
        try:
            async with asyncio.timeout(self.device.timeout_ms / 1000):
                acked = await client.publish(addr.write_topic, payload, qos=self.conn.qos)
                await acked
        except TimeoutError:
            raise TemporaryError(f"no PUBACK for {addr.write_topic!r} within {self.device.timeout_ms} ms",
                                 device_id=self.device.id) from None
        except MqttError as exc:
            error = TemporaryError if exc.reason == "stopped" else PermanentError
            raise error(f"publish to {addr.write_topic!r} failed: {exc}", device_id=self.device.id) from exc

    async def close(self) -> None:
        try:
            await self._stop_client()
        except Exception:  # close never raises
            log.exception("closing the MQTT client failed", extra={"device": self.device.id})
        self._buffer.clear()

    async def _stop_client(self) -> None:
        """Stop the client task (it disconnects cleanly in its finally) and wait for it, bounded."""
        task, self._task, self._client = self._task, None, None
        if task is None:
            return
        self._stop.set()
        task.cancel()  # do not wait for its 1 s housekeeping tick
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            log.warning("MQTT client task did not stop within 5 s", extra={"device": self.device.id})
        elif not task.cancelled() and task.exception() is not None:
            log.warning("MQTT client task failed: %r", task.exception(), extra={"device": self.device.id})

    def health(self) -> dict[str, Any]:
        c = self.conn
        return {"connected": self.connected, "broker": f"{c.host}:{c.port}", "subscriptions": len(self._subs),
                "received": self.received, "buffered": len(self._buffer), "overflows": self.overflows,
                "bad_payloads": self.bad_payloads, "refused_tags": len(self._refused), "connects": self.connects,
                "last_error": self.last_error}

