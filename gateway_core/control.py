"""The MQTT side of the service: gateway statuses in, sync answers and config messages out, tag writes.

``assign_loop`` owns every config message: it runs :meth:`Assigner.step` whenever something changed
(a commit, a status, a will, a sync request) and at least every ``TICK`` seconds (heartbeat expiry,
handoff deadlines), and publishes what it returns, in order, at QoS 1. After each pass, gateways
offline for longer than ``forget_after`` are dropped and their retained statuses cleared (a zero-length
retained message, QoS 1), so pods that came and went do not stay listed forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from gateway_core import metrics as m
from gateway_core.errors import ApiError
from gateway_core.health import HealthStore
from gateway_core.settings import Settings
from gateway_core.sharding import Assigner
from gateway_core.store import Commit
from nexus.mqtt import Message, MqttClient, MqttError
from nexus.runtime import sleep_or_stop
from proto import commands as pcmd
from proto import config as pc
from proto.errors import ContractError

log = logging.getLogger("gateway_core.control")

TICK = 0.25  #: seconds between reconciliation passes when nothing happens
MAX_PENDING_SYNCS = 10_000  #: sync requests waiting for an answer; more are refused (the gateway retries)


class Control:
    def __init__(self, settings: Settings, assigner: Assigner) -> None:
        self.settings = settings
        self.root = settings.control_root
        self.assigner = assigner
        self.mqtt: MqttClient | None = None
        self.settled = False
        self._wake = asyncio.Event()
        self._syncs: dict[str, None] = {}  # gateways waiting for a sync response, in arrival order
        self._writes: dict[str, asyncio.Future[pcmd.WriteResponse]] = {}
        #: the devices' health reports (<root>/status/devices/+), with the gateways' liveness from the assigner
        self.health = HealthStore(self.root, assigner, max_devices=settings.live.max_health_devices)

    def subscriptions(self) -> list[tuple[str, int]]:
        return [
            (pc.status_filter(self.root), 1),
            (pc.sync_request_topic(self.root), 1),
            (pcmd.response_filter(self.root), 1),
        ]

    def committed(self, commit: Commit) -> None:
        """Called after COMMIT: hand the changed devices to the assigner for publishing."""
        m.REVISION.set(commit.revision)
        for ch in commit.changes:
            self.assigner.device_changed(ch.device_id, ch.after, commit.revision)
        self.assigner.revision = max(self.assigner.revision, commit.revision)
        self._wake.set()

    # -- incoming (event loop thread, must not block) --------------------------------------------
    def on_message(self, msg: Message) -> None:
        try:
            if msg.topic.startswith(f"{self.root}/status/gateways/"):
                gateway = pc.last_level(self.root, msg.topic, "status/gateways")
                if not msg.payload:  # a cleared retained status (ours, after forget_after): nothing
                    return
                status = pc.decode_status(msg.payload)
                if status.gateway != gateway:
                    raise pc.ConfigMessageError(
                        f"{status.gateway!r} published on the topic of {gateway!r}", field="gateway"
                    )
                self.assigner.on_status(status, wall_ms=int(time.time() * 1000) if msg.retain else None)
            elif msg.topic == pc.sync_request_topic(self.root):
                req = pc.decode_sync_request(msg.payload)
                if len(self._syncs) < MAX_PENDING_SYNCS:
                    self._syncs[req.gateway] = None
            elif pcmd.is_response_topic(self.root, msg.topic):
                resp = pcmd.decode_response(msg.payload)
                fut = self._writes.get(str(resp.request_id))
                if fut is not None and not fut.done():
                    fut.set_result(resp)
                return
            else:
                return
        except ContractError as exc:
            m.BAD_MESSAGES.labels(msg.topic.split("/")[-2] if "/" in msg.topic else msg.topic).inc()
            log.warning("bad control message: %s", exc, extra={"topic": msg.topic})
            return
        self._wake.set()

    def on_connect(self) -> None:
        self.assigner.grace()
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------------
    async def assign_loop(self, stop: asyncio.Event) -> None:
        # Retained statuses arrive right after subscribing: wait for them, so the first pass knows
        # which gateways already poll what (no needless moves after a service restart).
        # The settle period starts at the first connection, however late: a pass before that would
        # know no gateway and stop every device.
        while self.mqtt is not None and not self.mqtt.connected:
            if await sleep_or_stop(0.2, stop):
                return
        if await sleep_or_stop(self.settings.startup_settle, stop):
            return
        self.settled = True
        while not stop.is_set():
            self._wake.clear()
            if self.mqtt is None or self.mqtt.connected:
                await self.publish_step()
            else:
                # Deaf while disconnected: gateways are not dead because we cannot hear them, and
                # config messages wait in the assigner's state instead of piling up in the client.
                self.assigner.grace()
            self.health.sweep()
            await sleep_or_stop(TICK, self._wake)

    async def publish_step(self) -> None:
        msgs = self.assigner.step()
        out = [(pc.device_topic(self.root, msg.device_id), pc.encode_device(msg)) for msg in msgs]
        # after step(): every device has already left an offline gateway, forgetting it moves nothing
        forgotten = self.assigner.forget(self.settings.forget_after)
        while self._syncs:
            gateway = next(iter(self._syncs))
            del self._syncs[gateway]
            resp = pc.SyncResponse(
                revision=self.assigner.revision, devices=self.assigner.sync_devices(gateway),
                seq=self.assigner.next_seq(),
            )
            out.append((pc.sync_response_topic(self.root, gateway), pc.encode_sync_response(resp)))
            m.MESSAGES.labels("sync").inc()
        if (out or forgotten) and self.mqtt is not None:
            acks: list[asyncio.Future[int]] = []
            try:
                for topic, payload in out:
                    acks.append(await self.mqtt.publish(topic, payload, qos=1))
                for gateway in forgotten:
                    if gateway not in self.assigner.gateways:  # not back while we published the above
                        # a zero-length retained message deletes the broker's retained status
                        topic = pc.status_topic(self.root, gateway)
                        acks.append(await self.mqtt.publish(topic, b"", qos=1, retain=True))
            except MqttError as exc:  # stopping, or the client refused: what was not sent is sent again
                log.warning("config publish failed: %s", exc)
            try:
                async with asyncio.timeout(self.settings.mqtt_timeout):
                    await asyncio.gather(*acks, return_exceptions=True)
            except TimeoutError:
                log.warning(
                    "%d config messages not acknowledged within %.0f s; resent on reconnect",
                    sum(not a.done() for a in acks),
                    self.settings.mqtt_timeout,
                )
            # a device message not published, or refused by the broker, goes out again at the next pass
            for i, msg in enumerate(msgs):
                ack = acks[i] if i < len(acks) else None
                failed = ack is None or (ack.done() and not ack.cancelled() and ack.exception() is not None)
                if failed and msg.device is not None and msg.gateway is not None:
                    self.assigner.dirty.add(msg.device_id)
                    log.warning("config message for %s not delivered; resending", msg.device_id)

    # -- tag writes --------------------------------------------------------------------------------
    async def write(self, device_id: str, tag: str, value: Any) -> dict[str, Any]:
        if self.mqtt is None or not self.mqtt.connected:
            raise ApiError(503, "the broker is not connected; cannot send the write", field="broker")
        request_id = uuid.uuid4().hex
        fut: asyncio.Future[pcmd.WriteResponse] = asyncio.get_running_loop().create_future()
        self._writes[request_id] = fut
        timeout = self.settings.write_timeout
        try:
            payload = pcmd.encode_request(value, request_id)
            async with asyncio.timeout(timeout):
                await (await self.mqtt.publish(pcmd.set_topic(self.root, device_id, tag), payload, qos=1))
                result = await fut
        except TimeoutError as exc:
            m.WRITES.labels("timeout").inc()
            raise ApiError(
                504, f"no response to the write of {device_id}/{tag} within {timeout:g} s", field="timeout"
            ) from exc
        except MqttError as exc:  # the client stopped or refused the publish (shutdown, broker gone)
            raise ApiError(503, f"the write could not be sent: {exc}", field="broker") from exc
        finally:
            self._writes.pop(request_id, None)
        m.WRITES.labels("answered").inc()
        return result.doc()
