"""Publish loop: device batches from the queue → batch messages (QoS 1) and per-tag UNS topics.

The MQTT client's inflight window bounds what is unacknowledged; when it is full, this loop
waits, the queue fills, and pollers skip (and count) polls: backpressure end to end.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway import metrics as m
from gateway.poller import DeviceBatch
from gateway.settings import Settings
from nexus.mqtt import MqttClient, MqttError
from proto import batch_topic, encode_batch, encode_point

log = logging.getLogger("gateway.publisher")

#: put on the queue to end the publish loop after everything before it is published
STOP = object()


class Publisher:
    def __init__(self, settings: Settings, mqtt: MqttClient, queue: asyncio.Queue[Any]) -> None:
        self.settings = settings
        self.mqtt = mqtt
        self.queue = queue
        self.seq = 0
        self.points_acked = 0
        self.messages_acked = 0
        self.errors = 0
        self._unacked: set[asyncio.Future[None]] = set()
        self._last_tag: dict[str, tuple[object, int]] = {}

    async def publish_loop(self) -> None:
        s = self.settings
        while True:
            item = await self.queue.get()
            m.QUEUE_DEPTH.set(self.queue.qsize())
            if item is STOP:
                return
            batch: DeviceBatch = item
            topic = batch_topic(batch.device.path, s.topic_root)
            step = s.max_points_per_message
            for i in range(0, len(batch.points), step):
                chunk = batch.points[i:i + step]
                self.seq += 1
                fut = await self.mqtt.publish(topic, encode_batch(chunk, seq=self.seq), qos=1)
                self._track(fut, len(chunk), "batch")
            if s.tag_topics:
                await self._publish_tags(batch)

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
            self._last_tag[key] = state
            topic = f"{self.settings.uns_prefix}/{key}" if self.settings.uns_prefix else key
            fut = await self.mqtt.publish(topic, encode_point(p), qos=1, retain=True)
            self._track(fut, 0, "tag")

    def _track(self, fut: asyncio.Future[None], points: int, kind: str) -> None:
        self._unacked.add(fut)

        def done(f: asyncio.Future[None]) -> None:
            self._unacked.discard(f)
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

    async def drain(self, timeout: float) -> int:
        """Wait for outstanding PUBACKs; return how many are still unacknowledged at the deadline."""
        if self._unacked:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*list(self._unacked), return_exceptions=True)
            except TimeoutError:
                pass
        return len(self._unacked)


__all__ = ["STOP", "MqttError", "Publisher"]
