"""The gateway daemon: one task group per device, one publish loop, one MQTT connection.

Task names: ``gateway[<id>].mqtt_loop``, ``.publish_loop`` (queue → spool), ``.send_loop`` (spool →
broker, re-sends), ``.respond_loop`` (write answers), ``.health_loop`` (per-device health), in core mode
``.apply_loop`` and ``.status_loop``, with Sparkplug on ``.sparkplug_loop`` (and its ``.sparkplug_mqtt_loop``),
and per device ``gateway[<device>].run`` (with ``poll_loop`` and ``command_loop`` inside).
Shutdown: stop polling and answer pending writes → the edge node sends what it has queued, its NDEATH and
disconnects, while the JSON path spools what is queued → wait for ingestion's confirmations under a
deadline (what is unconfirmed stays in the spool) → devices' health offline → offline status → disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from gateway.commands import Commands
from gateway.config import PlantConfig, load_plant
from gateway.errors import ConfigError, SpoolFull
from gateway.fleet import Fleet
from gateway.health import HealthReporter
from gateway.managed import Managed
from gateway.poller import PollPool
from gateway.publisher import Publisher
from gateway.readings import END, new_queue
from gateway.settings import Settings
from gateway.sparkplug.session import SparkplugSession
from gateway.spool import Spool
from nexus.mqtt import Message, MqttClient
from nexus.ops import OpsServer
from nexus.runtime import install_stop_signals
from proto.commands import set_filter
from proto.delivery import ack_topic

log = logging.getLogger("gateway")

SHUTDOWN_DEADLINE = 10.0


class Gateway:
    """The parts of one gateway process, wired together; :meth:`serve` runs them until ``stop``."""

    def __init__(self, settings: Settings, spool: Spool) -> None:
        self.settings = s = settings
        self.gid = s.gateway_id
        self.queue = new_queue(s.queue_size)
        self.fleet = Fleet(self.queue, PollPool(s.max_concurrent_polls))
        self.managed = None
        subscriptions = [(set_filter(s.control_root), 1)]
        if s.config_source == "core":
            self.managed = Managed(gateway_id=self.gid, root=s.control_root, capacity=s.capacity,
                                   heartbeat_s=s.heartbeat_s, fleet=self.fleet)
            subscriptions += self.managed.subscriptions
        self.ack_topic = ack_topic(self.gid, s.topic_root)
        if s.delivery == "confirmed":
            subscriptions.append((self.ack_topic, 1))
        m = self.managed
        self.mqtt = MqttClient(s.mqtt, client_id=s.client_id, subscriptions=subscriptions,
                               on_message=self._on_message, will=m.will if m else None,
                               on_connect=self._on_connect)
        self.commands = Commands(s.control_root, self.mqtt, self.fleet.get)
        if m is not None:
            m.mqtt = self.mqtt
        self.spool = spool
        self.publisher = Publisher(s, self.mqtt, self.queue, spool)
        self.health = HealthReporter(s, self.mqtt, self.fleet) if s.health.enabled else None
        self.sparkplug: SparkplugSession | None = None
        if s.sparkplug.enabled:
            folder = Path(s.spool_dir) / s.gateway_id / "sparkplug" if s.spool_dir else None
            self.sparkplug = sp = SparkplugSession(s, commands=self.commands, fleet=self.fleet, folder=folder)
            self.fleet.on_assigned = sp.on_assigned
            self.publisher.tap = sp.tap

    def _on_connect(self) -> None:
        self.publisher.on_connect()
        if self.health is not None:
            self.health.on_connect()
        if self.managed is not None:
            self.managed.on_connect()

    def _on_message(self, msg: Message) -> None:
        if msg.topic == self.ack_topic:
            self.publisher.on_ack(msg.payload)
        elif self.managed is not None and self.managed.handles(msg.topic):
            self.managed.on_message(msg)
        else:
            self.commands.on_message(msg)

    async def serve(self, stop: asyncio.Event, plant: PlantConfig | None) -> None:
        gid = self.gid
        mqtt_stop, devices_stopped, send_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.mqtt.run_loop(mqtt_stop), name=f"gateway[{gid}].mqtt_loop")
            if self.sparkplug is not None:  # stopped with devices_stopped: it ends by itself (NDEATH, DISCONNECT)
                tg.create_task(self.sparkplug.sparkplug_loop(devices_stopped), name=f"gateway[{gid}].sparkplug_loop")
            pub = tg.create_task(self.publisher.publish_loop(), name=f"gateway[{gid}].publish_loop")
            tg.create_task(self.publisher.send_loop(send_stop), name=f"gateway[{gid}].send_loop")
            responses = tg.create_task(self.commands.respond_loop(devices_stopped),
                                       name=f"gateway[{gid}].respond_loop")
            if self.managed is not None:
                tg.create_task(self.managed.apply_loop(devices_stopped), name=f"gateway[{gid}].apply_loop")
                tg.create_task(self.managed.status_loop(devices_stopped), name=f"gateway[{gid}].status_loop")
            if self.health is not None:
                tg.create_task(self.health.health_loop(devices_stopped), name=f"gateway[{gid}].health_loop")
            if plant is not None:
                await self.fleet.apply(plant.devices)
            await stop.wait()
            # stop intake: pollers end at their next await point, pending writes are answered
            await self.fleet.stop_all()
            devices_stopped.set()
            await self._flush(pub, responses)
            send_stop.set()
            if self.health is not None:
                await self.health.offline()
            if self.managed is not None:
                await self.managed.offline()
            mqtt_stop.set()
        self._close_spool()

    async def _flush(self, pub: asyncio.Task[None], responses: asyncio.Task[None]) -> None:
        """Spool what is queued, wait for confirmations under a deadline; the rest stays in the spool."""
        try:
            async with asyncio.timeout(SHUTDOWN_DEADLINE):
                await self.queue.put(END)
                await pub
                await responses
        except TimeoutError:
            pub.cancel()
            responses.cancel()
            await asyncio.gather(pub, responses, return_exceptions=True)
            lost = self.publisher.spool_queue()
            log.error("publish queue not drained within %ss; queued batches spooled%s", SHUTDOWN_DEADLINE,
                      f", {lost} messages could not be kept" if lost else "")
        await self.publisher.drain(SHUTDOWN_DEADLINE)

    def _close_spool(self) -> None:
        spool = self.spool
        spool.close()
        left = spool.unconfirmed
        if left and spool.folder is not None:
            log.warning("%d batch messages (%d points) not confirmed yet: kept in the spool %s for the next start",
                        left, spool.points_waiting, spool.folder)
        elif left:
            log.error("%d batch messages (%d points) not confirmed and lost: the spool is in memory only "
                      "(set SPOOL_DIR to keep them across restarts)", left, spool.points_waiting)


def open_spool(settings: Settings) -> Spool:
    folder = Path(settings.spool_dir) / settings.gateway_id if settings.spool_dir else None
    return Spool(folder, max_bytes=settings.spool_max_mb * 2**20, fsync=settings.spool_fsync)


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
    try:
        gw.publisher.adopt_legacy()
    except (OSError, SpoolFull) as exc:
        log.error("spool of an earlier build not converted (%s); its files stay in %s", exc, spool.folder)
    checks = {"mqtt": lambda: gw.mqtt.connected}
    if gw.sparkplug is not None:
        checks["sparkplug_mqtt"] = lambda: gw.sparkplug is not None and gw.sparkplug.mqtt.connected
    ops = OpsServer(settings.ops, checks=checks)
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
    confirmed_by = "ingestion" if settings.delivery == "confirmed" else "the broker"
    log.info("gateway stopped after %.0fs: %d polls, %d skipped; %d points in %d messages confirmed by %s, "
             "%d points in %d messages waiting in the spool, %d messages re-sent, %d answered 'no subscribers', "
             "%d publish errors; %d write responses", time.monotonic() - started, gw.fleet.polls, gw.fleet.skipped,
             pub.points_confirmed, pub.messages_confirmed, confirmed_by, gw.spool.points_waiting,
             gw.spool.unconfirmed, pub.resent, pub.no_subscribers, pub.errors, gw.commands.answered)
    if gw.sparkplug is not None:
        log.info("gateway stopped: %s", gw.sparkplug.summary())
    return 0
