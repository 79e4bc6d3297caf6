"""The gateway daemon: one task group per device, one publish loop, one MQTT connection.

Task names: ``gateway[<id>].mqtt_loop``, ``.publish_loop``, ``.replay_loop`` (disk buffer),
``.respond_loop`` (write answers), in core mode ``.apply_loop`` and ``.status_loop``, and per device
``gateway[<device>].run`` (with ``poll_loop`` and ``command_loop`` inside).
Shutdown: stop polling and answer pending writes → publish what is queued → wait for PUBACKs under a
deadline, spool what is left → offline status → disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from gateway.commands import Commands
from gateway.config import PlantConfig, load_plant
from gateway.errors import ConfigError
from gateway.fleet import Fleet
from gateway.managed import Managed
from gateway.poller import PollPool
from gateway.publisher import STOP, Publisher
from gateway.settings import Settings
from gateway.spool import Spool
from nexus.mqtt import Message, MqttClient
from nexus.ops import OpsServer
from nexus.runtime import install_stop_signals
from proto.commands import set_filter

log = logging.getLogger("gateway")

SHUTDOWN_DEADLINE = 10.0


class Gateway:
    """The parts of one gateway process, wired together; :meth:`serve` runs them until ``stop``."""

    def __init__(self, settings: Settings, spool: Spool | None) -> None:
        self.settings = s = settings
        self.gid = s.gateway_id
        # DeviceBatch items and the STOP sentinel, typed as Fleet, DevicePoller and Publisher take it
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=s.queue_size)
        self.fleet = Fleet(self.queue, PollPool(s.max_concurrent_polls))
        self.managed = None
        subscriptions = [(set_filter(s.control_root), 1)]
        if s.config_source == "core":
            self.managed = Managed(gateway_id=self.gid, root=s.control_root, capacity=s.capacity,
                                   heartbeat_s=s.heartbeat_s, fleet=self.fleet)
            subscriptions += self.managed.subscriptions
        m = self.managed
        self.mqtt = MqttClient(s.mqtt, client_id=s.client_id, subscriptions=subscriptions,
                               on_message=self._on_message, will=m.will if m else None,
                               on_connect=m.on_connect if m else None)
        self.commands = Commands(s.control_root, self.mqtt, self.fleet.get)
        if m is not None:
            m.mqtt = self.mqtt
        self.spool = spool
        self.publisher = Publisher(s, self.mqtt, self.queue, spool)

    def _on_message(self, msg: Message) -> None:
        if self.managed is not None and self.managed.handles(msg.topic):
            self.managed.on_message(msg)
        else:
            self.commands.on_message(msg)

    async def serve(self, stop: asyncio.Event, plant: PlantConfig | None) -> None:
        gid = self.gid
        mqtt_stop, devices_stopped, replay_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.mqtt.run_loop(mqtt_stop), name=f"gateway[{gid}].mqtt_loop")
            pub = tg.create_task(self.publisher.publish_loop(), name=f"gateway[{gid}].publish_loop")
            tg.create_task(self.publisher.replay_loop(replay_stop), name=f"gateway[{gid}].replay_loop")
            responses = tg.create_task(self.commands.respond_loop(devices_stopped),
                                       name=f"gateway[{gid}].respond_loop")
            if self.managed is not None:
                tg.create_task(self.managed.apply_loop(devices_stopped), name=f"gateway[{gid}].apply_loop")
                tg.create_task(self.managed.status_loop(devices_stopped), name=f"gateway[{gid}].status_loop")
            if plant is not None:
                await self.fleet.apply(plant.devices)
            await stop.wait()
            # stop intake: pollers end at their next await point, pending writes are answered
            await self.fleet.stop_all()
            devices_stopped.set()
            await self._flush(pub, responses)
            replay_stop.set()
            if self.managed is not None:
                await self.managed.offline()
            mqtt_stop.set()

    async def _flush(self, pub: asyncio.Task[None], responses: asyncio.Task[None]) -> None:
        """Publish what is queued, wait for PUBACKs under a deadline, keep the rest in the spool."""
        try:
            async with asyncio.timeout(SHUTDOWN_DEADLINE):
                await self.queue.put(STOP)
                await pub
                await responses
        except TimeoutError:
            pub.cancel()
            responses.cancel()
            await asyncio.gather(pub, responses, return_exceptions=True)
            lost = self.publisher.spool_queue()
            log.error("publish queue not drained within %ss; queued batches spooled%s", SHUTDOWN_DEADLINE,
                      f", {lost} messages could not be kept" if lost else "")
        publisher = self.publisher
        left = await publisher.drain(SHUTDOWN_DEADLINE) if self.mqtt.connected else publisher.unacked
        kept = publisher.spool_unacked()  # sent again after the next start
        if self.spool is not None:
            if self.spool.pending or kept:
                log.warning("%d batch messages kept in the spool %s for the next start", self.spool.pending,
                            self.spool.folder)
            self.spool.close()
        elif left:
            log.error("%d messages unacknowledged at shutdown", left)


def open_spool(settings: Settings) -> Spool | None:
    if not settings.spool_dir:
        return None
    return Spool(Path(settings.spool_dir) / settings.gateway_id, max_bytes=settings.spool_max_mb * 2**20,
                 fsync=settings.spool_fsync)


async def run(settings: Settings, *, stop: asyncio.Event | None = None, plant: PlantConfig | None = None) -> int:
    if stop is None:
        stop = asyncio.Event()
        install_stop_signals(stop)
    if plant is None and settings.config_source == "file":
        try:
            plant = load_plant(settings.plant)
        except ConfigError as exc:
            log.error("plant config invalid: %s", exc)
            return 2
    try:
        spool = open_spool(settings)
    except OSError as exc:
        log.error("spool folder %s unusable: %s", Path(settings.spool_dir) / settings.gateway_id, exc)
        return 2
    gw = Gateway(settings, spool)
    ops = OpsServer(settings.ops, checks={"mqtt": lambda: gw.mqtt.connected})
    await ops.start()
    if plant is not None:
        log.info("gateway %s polling %d devices, %d tags", gw.gid, len(plant.devices),
                 sum(len(d.tags) for d in plant.devices))
    else:
        log.info("gateway %s waiting for devices from gateway_core on %s/config", gw.gid, settings.control_root)
    started = time.monotonic()
    try:
        await gw.serve(stop, plant)
    finally:
        await ops.close()
    pub = gw.publisher
    log.info("gateway stopped after %.0fs: %d polls, %d skipped, %d points in %d messages acknowledged, "
             "%d publish errors, %d write responses", time.monotonic() - started, gw.fleet.polls, gw.fleet.skipped,
             pub.points_acked, pub.messages_acked, pub.errors, gw.commands.answered)
    return 0
