"""Retained state topics: each tag's current value on its UNS topic, and each alarm's current state.

State, not history (the batch, windows and events streams are the history, spooled until
confirmed): a per-tag topic is published only when its (value, status) differs from what the broker
holds as far as we sent it, and skipped while disconnected; after each (re)connect every tag's topic
goes out again with its next reading (the broker may have restarted without its retained messages). Alarm
states change rarely and matter at once, so every current alarm state is published again after a
reconnect. The deadbands that decide what is worth reporting at all are the normalizer's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from gateway import metrics as m
from gateway.readings import DeviceBatch
from gateway.settings import Settings
from nexus.mqtt import MqttClient, MqttError
from proto import ContractError, DevicePath, encode_point
from proto.aggregates import alarm_state_topic, encode_alarm_state

log = logging.getLogger("gateway.statetopics")


class StateTopics:
    def __init__(self, settings: Settings, mqtt: MqttClient) -> None:
        self.settings = settings
        self.mqtt = mqtt
        self.errors = 0  #: state publishes the broker refused
        #: per-tag topic -> the (value, status) the broker holds retained there, as far as we sent it
        self._retained: dict[str, tuple[object, int]] = {}
        self._tag_topics: dict[tuple[DevicePath, str], str] = {}  # from proto.uns, built once per tag
        self._alarms: dict[str, bytes] = {}  # alarm state topic -> its current payload
        self._republish = False  # connected again: every alarm state goes out once more

    def on_connect(self) -> None:
        self._republish = bool(self._alarms)
        # a broker restarted without persistence holds no retained state: each tag's topic goes out again with
        # its next reading, changed or not
        self._retained.clear()

    async def publish(self, batches: Iterable[DeviceBatch]) -> None:
        for batch in batches:
            for e in batch.events:
                try:
                    topic = alarm_state_topic(batch.device.path, e.tag, e.alarm, self.settings.topic_root)
                except ContractError as exc:
                    self._refused(f"no alarm topic for {batch.device.id}/{e.tag[:64]}: {exc}")
                    continue
                self._alarms[topic] = encode_alarm_state(e)
                if self.mqtt.connected:
                    await self._send(topic, self._alarms[topic], "alarm")
        if self._republish and self.mqtt.connected:
            self._republish = False
            for topic, payload in list(self._alarms.items()):
                await self._send(topic, payload, "alarm")
        if self.settings.tag_topics and self.mqtt.connected:
            for batch in batches:
                await self._publish_tags(batch)

    def _tag_topic(self, device: DevicePath, tag: str) -> str:
        topic = self._tag_topics.get((device, tag))
        if topic is None:
            topic = self._tag_topics[(device, tag)] = device.tag(tag).topic(self.settings.uns_prefix)
        return topic

    async def _publish_tags(self, batch: DeviceBatch) -> None:
        dev = batch.device.path
        tags = batch.device.tag_map
        for p in batch.points:
            tag = tags.get(p.tag)
            if tag is not None and not tag.publish:
                continue
            try:
                topic = self._tag_topic(dev, p.tag)
            except ContractError as exc:  # a tag level the config let through but the UNS refuses (too long)
                self._refused(f"no tag topic for {dev.path}/{p.tag[:64]}: {exc}")
                continue
            state = (p.value, p.status)
            if self._retained.get(topic) == state:
                continue
            if not await self._send(topic, encode_point(p), "tag"):
                return  # disconnected: state topics wait for the next change after the reconnect
            self._retained[topic] = state

    async def _send(self, topic: str, payload: bytes, kind: str) -> bool:
        try:
            fut = await self.mqtt.publish(topic, payload, qos=1, retain=True, while_connected=True)
        except MqttError:
            if kind == "alarm":
                self._republish = True
            return False
        fut.add_done_callback(lambda f: self._done(f, kind))
        return True

    def _done(self, fut: asyncio.Future[int], kind: str) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, MqttError) and exc.reason == "stopped":
            return
        if exc is not None:
            self._refused(f"{kind} state publish failed: {exc}")
            return
        m.MESSAGES_OUT.labels(kind).inc()

    def _refused(self, text: str) -> None:
        self.errors += 1
        m.PUBLISH_ERRORS.inc()
        log.error("%s", text)
