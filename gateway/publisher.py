"""Publish loop: device batches from the queue → batch messages (QoS 1) and per-tag UNS topics.

The MQTT client's inflight window bounds what is unacknowledged; when it is full, this loop
waits, the queue fills, and pollers skip (and count) polls: backpressure end to end.

With a :class:`~gateway.spool.Spool`, batch messages go to disk while the broker is unreachable
(or while older spooled messages still wait), and :meth:`Publisher.replay_loop` sends them oldest
first once connected. Messages published but unacknowledged at shutdown are spooled too, so a
gateway stopped during a broker outage sends them after its restart. Per-tag retained topics are
state, not history: while disconnected they are skipped and published at the next change.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterator
from typing import Any

import orjson

from gateway import metrics as m
from gateway.poller import DeviceBatch
from gateway.settings import Settings
from gateway.spool import Record, Spool, SpoolFull
from nexus.mqtt import MqttClient, MqttError
from proto import batch_topic, encode_batch, encode_point

log = logging.getLogger("gateway.publisher")

#: put on the queue to end the publish loop after everything before it is published
STOP = object()


class Publisher:
    def __init__(self, settings: Settings, mqtt: MqttClient, queue: asyncio.Queue[Any],
                 spool: Spool | None = None) -> None:
        self.settings = settings
        self.mqtt = mqtt
        self.queue = queue
        self.spool = spool
        self.seq = 0
        self.points_acked = 0
        self.messages_acked = 0
        self.errors = 0
        #: unacknowledged publishes -> (topic, payload) of batch messages, to spool them at shutdown
        self._unacked: dict[asyncio.Future[int], tuple[str, bytes] | None] = {}
        self._last_tag: dict[str, tuple[object, int]] = {}
        self._spooled = asyncio.Event()
        self._kept: set[asyncio.Future[int]] = set()  # unacked at shutdown and spooled

    async def publish_loop(self) -> None:
        while True:
            item = await self.queue.get()
            m.QUEUE_DEPTH.set(self.queue.qsize())
            if item is STOP:
                return
            batch: DeviceBatch = item
            for topic, payload, points in self._messages(batch):
                await self._send(topic, payload, points)
            if self.settings.tag_topics and self.mqtt.connected:
                await self._publish_tags(batch)

    def _messages(self, batch: DeviceBatch) -> Iterator[tuple[str, bytes, int]]:
        """The batch messages of one device batch (split at ``max_points_per_message``)."""
        topic = batch_topic(batch.device.path, self.settings.topic_root)
        step = self.settings.max_points_per_message
        for i in range(0, len(batch.points), step):
            chunk = batch.points[i:i + step]
            self.seq += 1
            yield topic, encode_batch(chunk, seq=self.seq), len(chunk)

    async def _send(self, topic: str, payload: bytes, points: int) -> None:
        spool = self.spool
        while True:
            # to disk while disconnected, and while older spooled messages wait (keeps their order)
            if spool is not None and (not self.mqtt.connected or spool.pending):
                if await self._spool(spool, topic, payload):
                    return
                continue  # spool full or failing: waited; maybe connected and drained meanwhile
            try:
                # with a spool, do not wait for room while the connection is down: spool instead
                fut = await self.mqtt.publish(topic, payload, qos=1, while_connected=spool is not None)
            except MqttError as exc:
                if exc.reason == "disconnected":
                    continue
                raise
            self._track(fut, points, "batch", (topic, payload))
            return

    async def _spool(self, spool: Spool, topic: str, payload: bytes) -> bool:
        """Append to the spool; False (after a pause) when it is full or the disk fails: the publish
        loop then holds, the queue fills and pollers skip polls, counted. Nothing is dropped."""
        try:
            spool.append(topic, payload)
        except SpoolFull:
            m.SPOOL_FULL.inc()
            await asyncio.sleep(0.2)
            return False
        except OSError as exc:
            m.SPOOL_ERRORS.inc()
            log.error("spool write failed, retrying: %s", exc)
            await asyncio.sleep(1.0)
            return False
        m.SPOOLED.inc()
        m.SPOOL_BYTES.set(spool.size)
        self._spooled.set()
        return True

    def spool_queue(self) -> int:
        """After a cancelled publish loop: the batches still queued go to the spool; returns how many
        messages could not be kept (no spool, or it is full or failing), which the caller reports."""
        lost = 0
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is STOP:
                continue
            for topic, payload, _ in self._messages(item):
                try:
                    if self.spool is None:
                        raise SpoolFull("no spool")
                    self.spool.append(topic, payload)
                except (SpoolFull, OSError):
                    lost += 1
        return lost

    async def _publish_tags(self, batch: DeviceBatch) -> None:
        dev = batch.device.path
        tags = batch.device.tag_map
        for p in batch.points:
            tag = tags.get(p.tag)
            if tag is not None and not tag.publish:
                continue
            key = f"{dev.path}/{p.tag}"
            state = (p.value, p.status)
            if self._last_tag.get(key) == state:
                continue
            topic = f"{self.settings.uns_prefix}/{key}" if self.settings.uns_prefix else key
            try:
                fut = await self.mqtt.publish(topic, encode_point(p), qos=1, retain=True, while_connected=True)
            except MqttError:
                return  # disconnected: state topics wait for the next change after the reconnect
            self._last_tag[key] = state
            self._track(fut, 0, "tag")

    def _track(self, fut: asyncio.Future[int], points: int, kind: str,
               message: tuple[str, bytes] | None = None) -> None:
        self._unacked[fut] = message

        def done(f: asyncio.Future[int]) -> None:
            self._unacked.pop(f, None)
            if f in self._kept:  # failed at shutdown, but its message is in the spool
                self._kept.discard(f)
                if not f.cancelled():
                    f.exception()  # retrieved: not an "exception was never retrieved" at exit
                return
            if f.cancelled() or f.exception() is not None:
                self.errors += 1
                m.PUBLISH_ERRORS.inc()
                if not f.cancelled():
                    log.error("publish failed: %s", f.exception())
                return
            self.messages_acked += 1
            self.points_acked += points
            m.MESSAGES_OUT.labels(kind).inc()
            m.POINTS_OUT.inc(points)

        fut.add_done_callback(done)

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    async def replay_loop(self, stop: asyncio.Event) -> None:
        """Send spooled messages, oldest first, whenever connected; ends at ``stop`` (what is left
        stays on disk for the next start)."""
        spool = self.spool
        if spool is None:
            return
        while not stop.is_set():
            if not self.mqtt.connected or not spool.pending:
                self._spooled.clear()
                try:
                    async with asyncio.timeout(0.2):
                        await self._spooled.wait()
                except TimeoutError:
                    pass
                continue
            rec = spool.next()
            if rec is None:
                continue
            try:
                fut = await self.mqtt.publish(rec.topic, rec.payload, qos=1)
            except MqttError as exc:
                spool.requeue(rec)
                log.warning("spooled message not sent, retrying: %s", exc)
                await asyncio.sleep(0.2)
                continue
            fut.add_done_callback(functools.partial(self._replayed, rec))

    def _replayed(self, rec: Record, fut: asyncio.Future[int]) -> None:
        assert self.spool is not None
        if fut.cancelled():
            return  # stays in its segment file: sent again after the next start
        exc = fut.exception()
        if isinstance(exc, MqttError) and exc.reason != "stopped":  # the broker refused it: not a transient
            self.errors += 1
            m.PUBLISH_ERRORS.inc()
            log.error("broker refused a spooled message (%s); moved to %s", exc, self.spool.reject(rec))
            return
        if exc is not None:
            return  # stopped: stays in its segment file, sent again after the next start
        self.spool.ack(rec)
        points = len(orjson.loads(rec.payload).get("points", ()))
        self.messages_acked += 1
        self.points_acked += points
        m.MESSAGES_OUT.labels("batch").inc()
        m.POINTS_OUT.inc(points)
        m.REPLAYED.inc()
        m.SPOOL_BYTES.set(self.spool.size)

    def spool_unacked(self) -> int:
        """At shutdown: batch messages still unacknowledged go to the spool (sent after the restart)."""
        if self.spool is None:
            return 0
        n = 0
        # these are older than what was spooled during an outage but are appended after it: order
        # across the two is not kept (ingestion stores by timestamp and drops duplicates)
        for fut, message in list(self._unacked.items()):
            if message is not None and not fut.done():
                try:
                    self.spool.append(*message)
                    self._kept.add(fut)
                    n += 1
                except (SpoolFull, OSError):
                    log.error("spool full at shutdown: %d unacknowledged messages not kept", len(self._unacked) - n)
                    break
        return n

    async def drain(self, timeout: float) -> int:
        """Wait for outstanding PUBACKs; return how many are still unacknowledged at the deadline."""
        if self._unacked:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*list(self._unacked), return_exceptions=True)
                    if self.spool is not None:
                        while self.spool.unacked and self.mqtt.connected:  # replayed ones too
                            await asyncio.sleep(0.05)
            except TimeoutError:
                pass
        return len(self._unacked)


__all__ = ["STOP", "MqttError", "Publisher"]
