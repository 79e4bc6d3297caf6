"""Devices managed by gateway_core: follow ``<root>/config/...`` and apply each change in place.

- At every (re)connect the gateway asks for a full sync; the answer replaces its device set, so a
  message missed while disconnected can never leave it stale.
- A device message naming this gateway starts or restarts that device only; one naming another
  gateway (or nobody, or a tombstone) stops it. Older revisions of a device than the one applied are
  ignored (a redelivered message must not undo a newer change).
- After each applied change, and every heartbeat, the gateway publishes its retained status: the
  applied revision, the devices it polls, and the devices it does not poll although assigned, and
  why: a config it could not apply, or a device task that ended (published at once; gateway_core
  sees the device as not polled, with the reason, while the fleet restarts it).
  Its MQTT last will marks it offline, so gateway_core can move its devices to other gateways.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.config import DeviceConfig, parse_device
from gateway.errors import ConfigError
from gateway.fleet import Fleet
from nexus.mqtt import Message, MqttClient, MqttError, Will
from nexus.runtime import wait_or_stop
from proto.config import (
    ConfigMessageError,
    GatewayStatus,
    SyncRequest,
    decode_device,
    decode_sync_response,
    device_filter,
    encode_status,
    encode_sync_request,
    offline_will,
    status_topic,
    sync_request_topic,
    sync_response_topic,
)

log = logging.getLogger("gateway.managed")

SYNC_RETRY_HEARTBEATS = 3  #: a sync request without an answer is sent again after this many heartbeats


class Managed:
    def __init__(self, *, gateway_id: str, root: str, capacity: int, heartbeat_s: float, fleet: Fleet) -> None:
        self.gid = gateway_id
        self.root = root
        self.capacity = capacity
        self.heartbeat_s = heartbeat_s
        self.fleet = fleet
        self.mqtt: MqttClient | None = None
        self.applied_revision = 0
        self.errors: dict[str, str] = {}
        self._wanted: dict[str, DeviceConfig] = {}
        self._revisions: dict[str, int] = {}  # device id -> revision of the message that set its state
        self._changed = asyncio.Event()
        self._status_due = asyncio.Event()
        self._pending_revision = 0
        self._pending_seq = 0  # highest seq of the config messages received
        self.applied_seq = 0  # ... and applied: echoed in the status so a handoff waits for it
        self._sync_due = False  # until a sync response arrives
        self._sync_asked = -1e9  # monotonic time of the last sync request
        fleet.on_change = self._status_due.set  # a device task ended or restarted: tell gateway_core now

    # --- what the MQTT client needs ------------------------------------------------------------

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        return [(device_filter(self.root), 1), (sync_response_topic(self.root, self.gid), 1)]

    @property
    def will(self) -> Will:
        return Will(status_topic(self.root, self.gid), offline_will(self.gid), qos=1, retain=True)

    def on_connect(self) -> None:
        """Ask for a full sync on every connection (sent by :meth:`status_loop`, after the subscriptions)."""
        self._sync_due = True
        self._sync_asked = -1e9  # at once
        self._status_due.set()

    def handles(self, topic: str) -> bool:
        return topic.startswith(f"{self.root}/config/")

    def on_message(self, msg: Message) -> None:
        """A config message (never raises: a bad one is logged and counted in the status errors)."""
        try:
            if msg.topic == sync_response_topic(self.root, self.gid):
                self._on_sync(msg.payload)
            elif msg.topic.startswith(f"{self.root}/config/devices/"):
                self._on_device(msg.payload)
        except ConfigMessageError as exc:
            log.error("bad config message on %s: %s", msg.topic, exc, extra={"topic": msg.topic})

    # --- state changes -------------------------------------------------------------------------

    def _on_sync(self, payload: bytes) -> None:
        resp = decode_sync_response(payload)
        self._sync_due = False
        wanted: dict[str, DeviceConfig] = {}
        errors: dict[str, str] = {}
        for doc in resp.devices:
            dev_id = doc["id"]
            if self._revisions.get(dev_id, -1) > resp.revision:  # a newer device message already arrived
                if dev_id in self._wanted:
                    wanted[dev_id] = self._wanted[dev_id]
                continue
            self._revisions[dev_id] = resp.revision
            self._parse_into(wanted, errors, doc)
        for dev_id, rev in self._revisions.items():  # newer messages for devices the sync did not list
            if rev > resp.revision and dev_id in self._wanted:
                wanted[dev_id] = self._wanted[dev_id]
        self._wanted, self.errors = wanted, errors
        self._mark(resp.revision, resp.seq)
        log.info("sync: revision %d, %d devices assigned", resp.revision, len(wanted))

    def _on_device(self, payload: bytes) -> None:
        msg = decode_device(payload)
        if msg.revision < self._revisions.get(msg.device_id, -1):
            return  # stale (redelivered after a newer change)
        self._revisions[msg.device_id] = msg.revision
        self.errors.pop(msg.device_id, None)
        if msg.gateway == self.gid and msg.device is not None:
            self._parse_into(self._wanted, self.errors, msg.device)
        else:
            self._wanted.pop(msg.device_id, None)
        self._mark(msg.revision, msg.seq)

    def _parse_into(self, wanted: dict[str, DeviceConfig], errors: dict[str, str], doc: dict[str, Any]) -> None:
        dev_id = str(doc.get("id"))
        try:
            wanted[dev_id] = parse_device(doc, {}, f"config/devices/{dev_id}")
        except ConfigError as exc:
            errors[dev_id] = str(exc)
            wanted.pop(dev_id, None)
            log.error("device config not applied: %s", exc, extra={"device": dev_id})

    def _mark(self, revision: int, seq: int = 0) -> None:
        self._pending_revision = max(self._pending_revision, revision)
        self._pending_seq = max(self._pending_seq, seq)
        self._changed.set()

    # --- loops ---------------------------------------------------------------------------------

    async def apply_loop(self, stop: asyncio.Event) -> None:
        """Apply the wanted device set to the fleet, one change set at a time."""
        while not stop.is_set():
            if await wait_or_stop(self._changed, stop):
                return
            self._changed.clear()
            revision, seq = self._pending_revision, self._pending_seq
            await self.fleet.apply(list(self._wanted.values()))
            self.applied_revision = max(self.applied_revision, revision)
            self.applied_seq = max(self.applied_seq, seq)
            self._status_due.set()

    async def status_loop(self, stop: asyncio.Event) -> None:
        """Ask for a sync after each connect; publish the status on change and every heartbeat."""
        while not stop.is_set():
            self._status_due.clear()
            # asked again every few heartbeats until a response arrives: a lost request (gateway_core
            # away, a full window) must not leave this gateway on a stale assignment
            if self._sync_due and self.mqtt is not None and self.mqtt.connected \
                    and time.monotonic() - self._sync_asked >= SYNC_RETRY_HEARTBEATS * self.heartbeat_s:
                self._sync_asked = time.monotonic()
                await self._publish(sync_request_topic(self.root), encode_sync_request(SyncRequest(gateway=self.gid)))
            await self._publish_status()
            try:
                async with asyncio.timeout(self.heartbeat_s):
                    await wait_or_stop(self._status_due, stop)
            except TimeoutError:
                pass

    def status(self) -> GatewayStatus:
        return GatewayStatus(gateway=self.gid, online=True, capacity=self.capacity,
                             applied_revision=self.applied_revision, devices=tuple(self.fleet.devices),
                             errors={**self.errors, **self.fleet.failed}, ts=int(time.time() * 1000),
                             config_seq=self.applied_seq)

    async def _publish_status(self) -> None:
        await self._publish(status_topic(self.root, self.gid), encode_status(self.status()), retain=True)

    async def offline(self) -> None:
        """Clean shutdown: say so at once instead of waiting for the broker to fire the will."""
        await self._publish(status_topic(self.root, self.gid), offline_will(self.gid), retain=True, wait=True)

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False, wait: bool = False) -> None:
        if self.mqtt is None or not self.mqtt.connected:
            return  # the next connect re-syncs and re-announces
        try:
            async with asyncio.timeout(2):
                fut = await self.mqtt.publish(topic, payload, qos=1, retain=retain, while_connected=True)
                if wait:
                    await fut
        except (TimeoutError, MqttError) as exc:  # a broker hiccup must not end the loop
            log.warning("control message not published: %s", exc, extra={"topic": topic})

