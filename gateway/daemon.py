"""The gateway daemon: one task group per device, one publish loop, one MQTT connection.

Task names: ``gateway[<id>].mqtt_loop``, ``gateway[<id>].publish_loop``, ``gateway[<id>].respond_loop``,
``gateway[<device>].run`` (with ``poll_loop`` and ``command_loop`` inside).
Shutdown: stop polling and answer pending writes → publish what is queued → wait for PUBACKs under a
deadline → disconnect.
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
    gid = settings.gateway_id
    # DeviceBatch items and the STOP sentinel, typed as Fleet, DevicePoller and Publisher take it
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=settings.queue_size)
    fleet = Fleet(queue, PollPool(settings.max_concurrent_polls))
    commands: Commands | None = None
    managed = None
    subscriptions = [(set_filter(settings.control_root), 1)]
    if settings.config_source == "core":
        managed = Managed(gateway_id=gid, root=settings.control_root, capacity=settings.capacity,
                          heartbeat_s=settings.heartbeat_s, fleet=fleet)
        subscriptions += managed.subscriptions

    def on_message(msg: Message) -> None:
        if managed is not None and managed.handles(msg.topic):
            managed.on_message(msg)
        elif commands is not None:
            commands.on_message(msg)

    mqtt = MqttClient(settings.mqtt, client_id=settings.client_id, subscriptions=subscriptions,
                      on_message=on_message, will=managed.will if managed else None,
                      on_connect=managed.on_connect if managed else None)
    commands = Commands(settings.control_root, mqtt, fleet.get)
    if managed is not None:
        managed.mqtt = mqtt
    spool = None
    if settings.spool_dir:
        try:
            spool = Spool(Path(settings.spool_dir) / gid, max_bytes=settings.spool_max_mb * 2**20,
                          fsync=settings.spool_fsync)
        except OSError as exc:
            log.error("spool folder %s unusable: %s", Path(settings.spool_dir) / gid, exc)
            return 2
    publisher = Publisher(settings, mqtt, queue, spool)
    ops = OpsServer(settings.ops, checks={"mqtt": lambda: mqtt.connected})
    await ops.start()
    if plant is not None:
        log.info("gateway %s polling %d devices, %d tags", gid, len(plant.devices),
                 sum(len(d.tags) for d in plant.devices))
    else:
        log.info("gateway %s waiting for devices from gateway_core on %s/config", gid, settings.control_root)
    started = time.monotonic()
    mqtt_stop = asyncio.Event()
    devices_stopped = asyncio.Event()
    replay_stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(mqtt.run_loop(mqtt_stop), name=f"gateway[{gid}].mqtt_loop")
            pub = tg.create_task(publisher.publish_loop(), name=f"gateway[{gid}].publish_loop")
            tg.create_task(publisher.replay_loop(replay_stop), name=f"gateway[{gid}].replay_loop")
            responses = tg.create_task(commands.respond_loop(devices_stopped), name=f"gateway[{gid}].respond_loop")
            if managed is not None:
                tg.create_task(managed.apply_loop(devices_stopped), name=f"gateway[{gid}].apply_loop")
                tg.create_task(managed.status_loop(devices_stopped), name=f"gateway[{gid}].status_loop")
            if plant is not None:
                await fleet.apply(plant.devices)
            await stop.wait()
            await fleet.stop_all()  # pollers end at their next await point; pending writes are answered
            devices_stopped.set()
            await queue.put(STOP)
            try:
                async with asyncio.timeout(SHUTDOWN_DEADLINE):
                    await pub
                    await responses
            except TimeoutError:
                log.error("publish queue not drained within %ss; %d batches left", SHUTDOWN_DEADLINE, queue.qsize())
                pub.cancel()
                responses.cancel()
            left = await publisher.drain(SHUTDOWN_DEADLINE) if mqtt.connected else publisher.unacked
            kept = publisher.spool_unacked()  # sent again after the next start
            replay_stop.set()
            if spool is not None:
                if spool.pending or kept:
                    log.warning("%d batch messages kept in the spool %s for the next start", spool.pending,
                                spool.folder)
                spool.close()
            elif left:
                log.error("%d messages unacknowledged at shutdown", left)
            if managed is not None:
                await managed.offline()
            mqtt_stop.set()
    finally:
        await ops.close()
    log.info("gateway stopped after %.0fs: %d polls, %d skipped, %d points in %d messages acknowledged, "
             "%d publish errors, %d write responses", time.monotonic() - started, fleet.polls, fleet.skipped,
             publisher.points_acked, publisher.messages_acked, publisher.errors, commands.answered)
    return 0
