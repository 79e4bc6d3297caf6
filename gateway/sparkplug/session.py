"""The gateway's Sparkplug B edge node on the network: :class:`~gateway.sparkplug.node.EdgeNode` on an MQTT
connection of its own, fed by the gateway's readings, writing through the gateway's write path.

- **Connection**: client id ``<gateway client id>-spb``, clean start; the will is the NDEATH of each new
  session (:meth:`EdgeNode.new_session`, asked by :class:`~nexus.mqtt.MqttClient` before every CONNECT, so
  the will and the NBIRTH carry the same bdSeq). On connect: NCMD, DCMD and the primary host's STATE are
  subscribed, and once the broker answered (SUBACK) the births go out. Messages of a session never go out
  on a later one (``resend_after_reconnect=False`` and the connection's generation on every publish).
- **Devices**: one per polled device (:attr:`Fleet.on_assigned`): DBIRTH when assigned, DDEATH and DBIRTH
  when its tags change, DDEATH when removed; a poll whose every point is BAD while the device's tags are all
  in it or its breaker is open is the device down (DDEATH); its next reading that is not BAD is born again.
- **Points**: :meth:`tap` gets the device batches the JSON path publishes (after the normalizer's rules) and
  puts them on a bounded queue without waiting: a full queue drops the batch's points, counted
  (``nexus_gateway_sparkplug_points_dropped_total{why="queue_full"}``) and logged, never the JSON path
  slowed. ``sparkplug_loop`` turns what is queued into one DDATA per device per pass (up to
  :data:`MAX_METRICS` metrics each).
- **DCMD**: each metric goes through :meth:`Commands.write` (validation, the normalizer's inverse, the
  driver). Sparkplug has no response: a write done is followed by a DDATA of the tag read back where the
  driver can (else the next poll carries it); a refused one is logged with the reason and the metric's
  current value is sent again.
- **Primary host**: an offline STATE makes the node send its NDEATH (QoS 1, acknowledged) and end the
  session; the client connects again at once with the next bdSeq and waits for online.
- **Stop**: what is queued goes out (under :data:`DRAIN_S`), then our NDEATH (a normal DISCONNECT fires no
  will), then DISCONNECT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from gateway import metrics as m
from gateway.commands import Commands, from_raw
from gateway.config import DerivedConfig, DeviceConfig, TagConfig
from gateway.fleet import Fleet
from gateway.readings import DeviceBatch
from gateway.settings import Settings
from gateway.sparkplug.node import BdSeqStore, EdgeNode, Out, TagDef, WriteRequest
from nexus.mqtt import Message, MqttClient, MqttError, Will
from nexus.report import bounded, describe
from proto.points import Point, Status
from proto.sparkplug import SparkplugError
from proto.sparkplug.mapping import datatype_for
from proto.types import INT_RANGES

log = logging.getLogger("gateway.sparkplug")

MAX_METRICS = 1000  #: metrics per DDATA (a device's points of one pass are split beyond)
MAX_BATCHES = 512  #: device batches taken from the queue per pass
MAX_MESSAGES = 10_000  #: NCMD/DCMD/STATE waiting to be handled; beyond, dropped and logged
PUBLISH_TIMEOUT_S = 5.0  #: longest wait for room in the connection's window, or for the NDEATH's PUBACK
DRAIN_S = 5.0  #: at a stop, longest time to send what is queued before the NDEATH
_WARN_EVERY_S = 60.0


def metric_type(tag: TagConfig | DerivedConfig) -> str:
    """The tag type its metric carries: the tag's, except an integer tag whose rules give fractions (scale,
    offset, a range map, or a clamp bound that is not whole), which reports float64."""
    tr = tag.transform
    if tag.type in INT_RANGES and (tr.linear or any(b is not None and not float(b).is_integer()
                                                    for b in (tr.min, tr.max))):
        return "float64"
    return tag.type


def tag_defs(device: DeviceConfig) -> list[TagDef]:
    """The metrics of ``device``: its tags and derived tags; a type Sparkplug cannot carry is left out (logged)."""
    out = []
    specs: list[TagConfig | DerivedConfig] = [*device.tags, *device.derived]
    for t in specs:
        typ = metric_type(t)
        try:
            datatype_for(typ)
        except SparkplugError as exc:
            log.warning("sparkplug: tag left out of the device's metrics: %s", exc,
                        extra={"device": device.id, "tag": t.name})
            continue
        out.append(TagDef(t.name, typ, t.unit, t.writable))
    return out


@dataclass(frozen=True, slots=True)
class _Event:
    """Something for the loop to handle, in order: kind is device, connected, disconnected, message, written,
    read_back."""

    kind: str
    device: str = ""
    config: DeviceConfig | None = None
    generation: int = 0
    message: Message | None = None
    write: WriteRequest | None = None
    error: str | None = None
    point: Point | None = None


class SparkplugSession:
    def __init__(self, settings: Settings, *, commands: Commands, fleet: Fleet, folder: Path | None) -> None:
        sp = settings.sparkplug
        self.gid = settings.gateway_id
        self.node = EdgeNode(sp.group_id, settings.edge_node_id, primary_host_id=sp.primary_host_id or None,
                             bdseq=BdSeqStore(folder / "bdseq" if folder is not None else None),
                             data_qos=sp.data_qos, max_held=sp.held_points)
        self.commands, self.fleet = commands, fleet
        self.points: asyncio.Queue[DeviceBatch] = asyncio.Queue(maxsize=sp.queue_size)
        self._events: deque[_Event] = deque()
        self._messages = 0  # message events in _events
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self.mqtt = MqttClient(settings.mqtt, client_id=f"{settings.client_id}-spb", clean_start=True,
                               subscriptions=[(f, 1) for f in self.node.command_filters()],
                               on_message=self._on_message, will=self._will, on_subscribed=self._on_subscribed,
                               on_disconnect=lambda: self._event(_Event("disconnected")),
                               resend_after_reconnect=False)
        self.messages_sent = self.points_sent = self.not_sent = 0
        self.dropped_queue = self.dropped_messages = self._held_seen = 0
        self.writes_ok = self.writes_refused = 0
        self._warned_at = -_WARN_EVERY_S
        if folder is None:
            log.warning("sparkplug: no spool folder (spool_dir empty): bdSeq starts at 0 after every restart")

    # -- what feeds the loop (callbacks: never block, never raise) ------------------------------------------
    def _event(self, ev: _Event) -> None:
        self._events.append(ev)
        self._wake.set()

    def _will(self) -> Will:
        out = self.node.new_session()
        return Will(out.topic, out.payload, out.qos, out.retain)

    def _on_subscribed(self) -> None:
        self._event(_Event("connected", generation=self.mqtt.generation))

    def _on_message(self, msg: Message) -> None:
        if self._messages >= MAX_MESSAGES:
            self.dropped_messages += 1
            self._warn(f"sparkplug: {self._messages} commands waiting; one on {bounded(msg.topic)} dropped "
                       f"({self.dropped_messages} so far)")
            return
        self._messages += 1
        self._event(_Event("message", message=msg))

    def on_assigned(self, device: str, config: DeviceConfig | None) -> None:
        """The fleet started polling ``device`` (``config``) or removed it (None)."""
        self._event(_Event("device", device=device, config=config))

    def tap(self, batches: list[DeviceBatch]) -> None:
        """The device batches the JSON path is publishing; queued without waiting (a full queue: dropped, counted)."""
        put = self.points.put_nowait
        for b in batches:
            if not b.points:
                continue
            try:
                put(b)
            except asyncio.QueueFull:
                self.dropped_queue += len(b.points)
                m.SPARKPLUG_DROPPED.labels("queue_full").inc(len(b.points))
                self._warn(f"sparkplug: queue full ({self.points.maxsize} device batches): "
                           f"{self.dropped_queue} points not sent as DDATA so far (the JSON path has them)")
        self._wake.set()

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("%s", text)

    # -- the loop --------------------------------------------------------------------------------------------
    async def sparkplug_loop(self, stop: asyncio.Event) -> None:
        """Run the edge node until ``stop`` (set once the devices stopped): then send what is queued, the
        NDEATH, and disconnect."""
        mqtt_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self.mqtt.run_loop(mqtt_stop), name=f"gateway[{self.gid}].sparkplug_mqtt_loop")
            try:
                while not stop.is_set():
                    try:
                        async with asyncio.timeout(0.25):
                            await self._wake.wait()
                    except TimeoutError:
                        continue
                    await self._step()
                try:
                    async with asyncio.timeout(DRAIN_S):
                        while self._events or not self.points.empty():
                            await self._step()
                except TimeoutError:
                    log.warning("sparkplug: %d device batches not sent within %ss of the stop", self.points.qsize(),
                                DRAIN_S)
                await self._send(self.node.shutdown(), self.mqtt.generation)
            finally:
                mqtt_stop.set()
        m.SPARKPLUG_BORN.set(0)

    async def _step(self) -> None:
        self._wake.clear()
        while self._events:
            ev = self._events.popleft()
            try:
                await self._handle(ev)
            except Exception as exc:  # noqa: BLE001 - one event's bug must not end the edge node
                log.error("sparkplug: %s event failed: %s", ev.kind, describe(exc, 300))
        batches: list[DeviceBatch] = []
        while len(batches) < MAX_BATCHES and not self.points.empty():
            batches.append(self.points.get_nowait())
        if batches:
            gen = self.mqtt.generation
            try:
                outs = self._feed(batches)
            except SparkplugError as exc:  # a value its datatype cannot carry: these batches are not sent
                log.error("sparkplug: %d device batches not sent: %s", len(batches), exc)
                outs = []
            await self._send(outs, gen)
        if not self.points.empty():
            self._wake.set()
        m.SPARKPLUG_BORN.set(1 if self.node.born else 0)

    async def _handle(self, ev: _Event) -> None:
        node, gen = self.node, self.mqtt.generation
        if ev.kind == "device":
            await self._send(node.set_device(ev.device, tag_defs(ev.config)) if ev.config is not None
                             else node.remove_device(ev.device), gen)
        elif ev.kind == "connected":
            if ev.generation == gen and self.mqtt.connected:
                await self._send(node.on_connected(), gen)
        elif ev.kind == "disconnected":
            node.on_disconnected()
        elif ev.kind == "message" and ev.message is not None:
            self._messages -= 1
            outs, writes = node.on_message(ev.message.topic, ev.message.payload)
            await self._send(outs, gen)
            for w in writes:
                self._write(w)
        elif ev.kind == "written" and ev.write is not None:
            await self._written(ev.write, ev.error, gen)
        elif ev.kind == "read_back" and ev.point is not None:
            await self._send(node.data(ev.device, [ev.point]), gen)

    def _feed(self, batches: list[DeviceBatch]) -> list[Out]:
        """DDATA for the batches, one per device (chunks of MAX_METRICS); a poll that says the device is down
        ends its points so far, then DDEATH."""
        node, outs = self.node, []
        pending: dict[str, list[Point]] = {}
        for b in batches:
            d = b.device.id
            if d not in node.devices:
                continue
            if self._down(b):
                outs += self._data(d, [*pending.pop(d, ()), *b.points])
                outs += node.device_down(d)
            else:
                pending.setdefault(d, []).extend(b.points)
        for d, pts in pending.items():
            outs += self._data(d, pts)
        return outs

    def _data(self, device: str, points: list[Point]) -> list[Out]:
        node, outs = self.node, []
        for i in range(0, len(points), MAX_METRICS):
            outs += node.data(device, points[i:i + MAX_METRICS])
        if node.dropped_held > self._held_seen:
            m.SPARKPLUG_DROPPED.labels("held_full").inc(node.dropped_held - self._held_seen)
            self._held_seen = node.dropped_held
        return outs

    def _down(self, b: DeviceBatch) -> bool:
        """Every point BAD, and every tag of the device among them or its breaker open."""
        if any(p.status < Status.BAD for p in b.points):
            return False
        poller = self.fleet.get(b.device.id)
        if poller is not None and poller.breaker.state == "open":
            return True
        return {p.tag for p in b.points} >= {t.name for t in b.device.tags}

    # -- out to the broker -----------------------------------------------------------------------------------
    async def _send(self, outs: list[Out], generation: int) -> None:
        """Publish in order on connection ``generation`` only; what cannot go out there is counted, not sent later."""
        for i, o in enumerate(outs):
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                    fut = await self.mqtt.publish(o.topic, o.payload, qos=o.qos, retain=o.retain,
                                                  while_connected=True, generation=generation)
                    if o.disconnect or o.topic.split("/", 3)[2] == "NDEATH":
                        await fut  # the NDEATH is at the broker before we go
            except (MqttError, TimeoutError) as exc:
                self._not_sent(outs[i:], exc)
                return
            fut.add_done_callback(_quiet)
            self.messages_sent += 1
            self.points_sent += o.points
            m.SPARKPLUG_MESSAGES.labels(o.topic.split("/", 3)[2]).inc()
            if o.points:
                m.SPARKPLUG_POINTS.inc(o.points)
            if o.disconnect:
                await self.mqtt.end_session()
                return

    def _not_sent(self, outs: list[Out], exc: BaseException) -> None:
        self.not_sent += len(outs)
        points = sum(o.points for o in outs)
        if points:
            m.SPARKPLUG_DROPPED.labels("not_sent").inc(points)
        log.info("sparkplug: %d messages (%d points) not sent, their session is gone: %s", len(outs), points,
                 describe(exc, 200))

    # -- DCMD writes -----------------------------------------------------------------------------------------
    def _write(self, w: WriteRequest) -> None:
        answered = False

        def done(error: str | None) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self._event(_Event("written", device=w.device, write=w, error=error))

        if not self.commands.write(w.device, w.tag, w.value, done):
            done(f"device {w.device!r} is not polled by this gateway")

    async def _written(self, w: WriteRequest, error: str | None, gen: int) -> None:
        if error is not None:
            self.writes_refused += 1
            m.SPARKPLUG_WRITES.labels("refused").inc()
            log.warning("sparkplug: DCMD write refused: %s", error, extra={"device": w.device, "tag": w.tag})
            current = self.node.current(w.device, w.tag)
            if current is not None:  # the host sees the value it did not change
                await self._send(self.node.data(w.device, [current]), gen)
            return
        self.writes_ok += 1
        m.SPARKPLUG_WRITES.labels("ok").inc()
        if self._tg is not None:
            self._tg.create_task(self._read_back(w), name=f"gateway[{w.device}].sparkplug_read_back")

    async def _read_back(self, w: WriteRequest) -> None:
        """The written tag read again, in engineering units, as a DDATA; else the next poll reports it."""
        try:
            poller = self.fleet.get(w.device)
            tag = poller.device.tag(w.tag) if poller is not None else None
            if poller is None or tag is None:
                return
            raw = await poller.read_back(tag)
            point = from_raw(tag, raw) if raw is not None else None
        except Exception as exc:  # noqa: BLE001 - never ends the session's task group
            log.error("sparkplug: read-back after a write failed: %s", describe(exc, 300),
                      extra={"device": w.device, "tag": w.tag})
            return
        if point is not None:
            self._event(_Event("read_back", device=w.device, point=point))

    def summary(self) -> str:
        return (f"sparkplug: {self.messages_sent} messages ({self.points_sent} points in DDATA), {self.not_sent} not "
                f"sent (session gone), {self.dropped_queue} points dropped (queue full), {self.node.dropped_held} "
                f"not kept while unborn, {self.dropped_messages} commands dropped; DCMD writes {self.writes_ok} ok, "
                f"{self.writes_refused} refused")


def _quiet(fut: asyncio.Future[int]) -> None:
    """A QoS 1 DDATA's PUBACK is not waited for; its failure (the session ended) is not an error to log."""
    if not fut.cancelled():
        fut.exception()
