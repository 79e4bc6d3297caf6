"""The gateway daemon: one poll loop per device, one publish loop, one MQTT connection.

Task names: ``gateway[<id>].mqtt_loop``, ``gateway[<id>].publish_loop``, ``gateway[<device>].poll_loop``.
Shutdown: stop polling → publish what is queued → wait for PUBACKs under a deadline → disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.config import PlantConfig, load_plant
from gateway.errors import ConfigError
from gateway.poller import DevicePoller
from gateway.publisher import STOP, Publisher
from gateway.settings import Settings
from nexus.mqtt import MqttClient
from nexus.ops import OpsServer
from nexus.runtime import install_stop_signals

log = logging.getLogger("gateway")

SHUTDOWN_DEADLINE = 10.0


async def run(settings: Settings, *, stop: asyncio.Event | None = None, plant: PlantConfig | None = None) -> int:
    if stop is None:
        stop = asyncio.Event()
        install_stop_signals(stop)
    if plant is None:
        try:
            plant = load_plant(settings.plant)
        except ConfigError as exc:
            log.error("plant config invalid: %s", exc)
            return 2
    gid = settings.gateway_id
    queue: asyncio.Queue = asyncio.Queue(maxsize=settings.queue_size)
    mqtt = MqttClient(settings.mqtt, client_id=settings.client_id)
    publisher = Publisher(settings, mqtt, queue)
    pollers = [DevicePoller(d, queue) for d in plant.devices]
    ops = OpsServer(settings.ops, checks={"mqtt": lambda: mqtt.connected})
    await ops.start()
    log.info("gateway %s polling %d devices, %d tags", gid, len(pollers), sum(len(d.tags) for d in plant.devices))
    started = time.monotonic()
    poll_stop = stop
    mqtt_stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(mqtt.run_loop(mqtt_stop), name=f"gateway[{gid}].mqtt_loop")
            pub = tg.create_task(publisher.publish_loop(), name=f"gateway[{gid}].publish_loop")
            polls = [tg.create_task(p.poll_loop(poll_stop), name=f"gateway[{p.device.id}].poll_loop") for p in pollers]
            await stop.wait()
            await asyncio.gather(*polls)  # pollers end at their next await point
            await queue.put(STOP)
            try:
                async with asyncio.timeout(SHUTDOWN_DEADLINE):
                    await pub
            except TimeoutError:
                log.error("publish queue not drained within %ss; %d batches left", SHUTDOWN_DEADLINE, queue.qsize())
                pub.cancel()
            left = await publisher.drain(SHUTDOWN_DEADLINE) if mqtt.connected else publisher.unacked
            if left:
                log.error("%d messages unacknowledged at shutdown", left)
            mqtt_stop.set()
    finally:
        await ops.close()
    log.info("gateway stopped after %.0fs: %d polls, %d skipped, %d points in %d messages acknowledged, "
             "%d publish errors", time.monotonic() - started, sum(p.polls for p in pollers),
             sum(p.skipped for p in pollers), publisher.points_acked, publisher.messages_acked, publisher.errors)
    return 0

