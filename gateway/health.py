"""Per-device health: what each poller saw, reported retained on ``<control_root>/status/devices/<device>``.

:class:`gateway.pollstats.PollStats` is a device's record of its polls (its poller writes it; the fleet
hands it to the poller that replaces one, so counts survive a task restart or a config change). :class:`HealthReporter`
looks at every device of the fleet every :data:`TICK` seconds and publishes a report (``proto.health``)
when what matters changed (state, connected, breaker, last error), at most every ``health.interval_s``
per device, and at least every ``health.heartbeat_s`` with fresh counts and latencies. A device that
leaves the gateway (removed, moved to another gateway) has its retained report cleared (a zero-length
retained message); at a clean stop every device is reported ``offline``. After a reconnect every report
goes out again. A report another gateway's late clear removed comes back with the next heartbeat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from gateway.fleet import Fleet
from gateway.poller import DevicePoller
from gateway.pollstats import ms
from gateway.settings import Settings
from nexus.mqtt import MqttClient, MqttError
from nexus.runtime import sleep_or_stop
from proto.errors import TopicError
from proto.health import DeviceHealth, bounded_error, encode_health, health_topic

log = logging.getLogger("gateway.health")

TICK = 0.25  #: seconds between two looks at the devices
OFFLINE_DEADLINE = 2.0  #: seconds the clean stop waits for the broker to take the offline reports


def _key(h: DeviceHealth) -> tuple[object, ...]:
    """What makes a report worth sending before the heartbeat."""
    return h.state, h.connected, h.breaker, h.last_error


class HealthReporter:
    def __init__(self, settings: Settings, mqtt: MqttClient, fleet: Fleet) -> None:
        self.root = settings.control_root
        self.gid = settings.gateway_id
        self.h = settings.health
        self.mqtt = mqtt
        self.fleet = fleet
        self.reports: dict[str, DeviceHealth] = {}  #: device id -> the newest report made
        self._sent: dict[str, tuple[tuple[object, ...], float]] = {}  # device -> (key, monotonic) last sent
        self._clears: set[str] = set()  # removed devices whose report is not cleared on the broker yet
        self._topics: dict[str, str | None] = {}
        self.published = 0  #: reports the broker took (clears included)

    def on_connect(self) -> None:
        """Connected (again): every report goes out at the next tick (messages may have been lost)."""
        self._sent.clear()

    def report(self, device_id: str, *, latency: bool = True) -> DeviceHealth | None:
        """The device's health now, from its poller (or its last report while it has none); ``latency``
        False leaves out the quantiles (a sort per device: only for a report that goes out)."""
        poller: DevicePoller | None = self.fleet.get(device_id)
        failed = self.fleet.failed.get(device_id)
        old = self.reports.get(device_id)
        now = ms(time.time())
        if poller is None:
            if old is None:
                return None
            state = "failed" if failed is not None else old.state
            return dataclasses.replace(old, state=state, connected=False, ts=now,
                                       last_error=bounded_error(failed) if failed is not None else old.last_error)
        s = poller.stats
        error, error_ms = s.last_error, s.last_error_ms
        if failed is not None:
            error, error_ms = bounded_error(failed), now
        return DeviceHealth(
            device_id=device_id, gateway=self.gid, path=poller.device.path.path,
            state="failed" if failed is not None else "polling",
            connected=failed is None and s.connected, breaker=poller.breaker.state,
            consecutive_errors=poller.breaker.consecutive, last_error=error, last_error_ts=error_ms,
            last_good_ts=s.last_good_ms, latency=s.latency(self.h.window_s) if latency else None,
            polls=s.polls, errors=s.errors,
            ts=now, heartbeat_ms=ms(self.h.heartbeat_s),
        )

    async def health_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.tick()
            if await sleep_or_stop(TICK, stop):
                return

    async def tick(self) -> None:
        known = set(self.fleet.devices) | set(self.fleet.failed)
        if not self.fleet.closed:
            for dev_id in set(self.reports) - known:  # left this gateway: clear its retained report
                del self.reports[dev_id]
                self._sent.pop(dev_id, None)
                self._clears.add(dev_id)
        self._clears -= known
        if not self.mqtt.connected:
            return
        for dev_id in sorted(self._clears):
            if await self._send(dev_id, b""):
                self._clears.discard(dev_id)
                self._topics.pop(dev_id, None)
        now = time.monotonic()
        for dev_id in sorted(known):
            h = self.report(dev_id, latency=False)
            if h is None:
                continue
            key = _key(h)
            sent = self._sent.get(dev_id)
            if sent is not None:
                since = now - sent[1]
                if since < self.h.heartbeat_s and (key == sent[0] or since < self.h.interval_s):
                    continue
            h = self.report(dev_id) or h
            self.reports[dev_id] = h
            if await self._send(dev_id, encode_health(h)):
                self._sent[dev_id] = (key, now)

    async def offline(self) -> None:
        """Clean stop: every device reported ``offline``; waits (bounded) for the broker to take them."""
        acks: list[asyncio.Future[int]] = []
        now = ms(time.time())
        for dev_id, h in sorted(self.reports.items()):
            topic = self._topic(dev_id)
            if topic is None or not self.mqtt.connected:
                continue
            payload = encode_health(dataclasses.replace(h, state="offline", connected=False, ts=now))
            try:
                acks.append(await self.mqtt.publish(topic, payload, qos=1, retain=True, while_connected=True))
            except MqttError:
                break
        if acks:
            try:
                async with asyncio.timeout(OFFLINE_DEADLINE):
                    await asyncio.gather(*acks, return_exceptions=True)
            except TimeoutError:
                log.warning("%d offline device reports not acknowledged within %.0f s",
                            sum(not a.done() for a in acks), OFFLINE_DEADLINE)

    def _topic(self, device_id: str) -> str | None:
        if device_id not in self._topics:
            try:
                self._topics[device_id] = health_topic(self.root, device_id)
            except TopicError as exc:  # an id the config let through but a topic level may not hold
                log.error("no health topic for device %s: %s", device_id[:64], exc)
                self._topics[device_id] = None
        return self._topics[device_id]

    async def _send(self, device_id: str, payload: bytes) -> bool:
        topic = self._topic(device_id)
        if topic is None:
            return True
        try:
            fut = await self.mqtt.publish(topic, payload, qos=1, retain=True, while_connected=True)
        except MqttError:
            return False  # disconnected: everything goes out again after the reconnect
        fut.add_done_callback(self._done)
        return True

    def _done(self, fut: asyncio.Future[int]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.published += 1

