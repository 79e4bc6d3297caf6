"""The Sparkplug B primary host of the ingestion workers: one worker at a time, elected by PostgreSQL.

Why one: :class:`~ingestion.sparkplug.host.Host` keeps per edge node the births' aliases and the last seq, so
every message of a node must reach one process, in order. A shared subscription spreads a node's messages
over the workers (mosquitto has no sticky mode), so the workers elect a host instead: each runs
:meth:`SparkplugHost.run`, which takes a session-level advisory lock (:data:`HOST_LOCK`) on a connection of its
own (as :mod:`ingestion.upkeep` elects its leader). The holder hosts; the others try again every
``sparkplug.takeover_interval`` seconds. The lock goes with the connection: a host that dies (SIGKILL, lost
database) frees it, and the next try of another worker takes over (a new :class:`Host`: it asks the nodes it
hears from for a rebirth, Sparkplug 3.0 section 4.2.3 / 5.x "seq"). A host checks its lock connection every
``takeover_interval``; when that fails it stops hosting (another worker may hold the lock by then).

The host's MQTT session (its own client, ``<worker client id>-spb-host``, clean start, manual acks):

1. CONNECT with the will ``spBv1.0/STATE/<host_id>`` = ``{"online": false, "timestamp": T}``, retained, QoS 1,
   T chosen for this CONNECT (the client asks :meth:`SparkplugHost._will` before each one);
2. SUBSCRIBE ``spBv1.0/#`` (or each ``spBv1.0/<group>/#`` of ``sparkplug.group_filter`` and our STATE topic) at
   QoS 1, sent by the client on CONNACK; once the broker answered it (SUBACK, ``on_subscribed``), PUBLISH
   ``{"online": true, "timestamp": T}`` retained, QoS 1: the subscriptions exist when the STATE goes out, on a
   broker cluster too (Sparkplug 3.0 ``host-topic-phid-birth-sub-required``);
3. a STATE ``online: false`` delivered on our own topic while we host (a stale will of an earlier host) is
   answered by publishing online again, with the same T (our will's);
4. a clean stop publishes the offline STATE (timestamp T) before DISCONNECT (the broker sends no will then).

Every message goes through :meth:`Host.on_message` and becomes items of the worker's buffer
(:mod:`ingestion.sparkplug.items`); it is acknowledged on this client after their commit. Rebirth requests
(NCMD, QoS 0 as the specification says) go out on this client. The worker pauses this client's reading with its
own when the buffer is full (:meth:`Intake.attach`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import psycopg

from ingestion import metrics as m
from ingestion.items import OVERSIZE_PREFIX_BYTES, Item
from ingestion.settings import Settings
from ingestion.sparkplug.host import Host, HostResult
from ingestion.sparkplug.items import ClientAck, oversize, result_items
from nexus import pg
from nexus.mqtt import Message, MqttClient, MqttError, Will
from nexus.report import bounded, describe
from nexus.runtime import Backoff, sleep_or_stop, wait_first
from proto.errors import ContractError
from proto.sparkplug.topics import (
    STATE_QOS,
    STATE_RETAIN,
    MessageType,
    decode_state,
    encode_state,
    node_filter,
    state_topic,
)

log = logging.getLogger("ingestion.sparkplug")

HOST_LOCK = 0x6E787370  #: "nxsp": held (session level) by the connection of the worker that is the Sparkplug host
STATE_TIMEOUT = 2.0  #: seconds the offline STATE of a clean stop may take to be acknowledged before DISCONNECT
_KINDS = frozenset(t.value for t in MessageType)


class Intake(Protocol):
    """What the host needs of the worker (:class:`ingestion.daemon.Ingestor`)."""

    def add(self, item: Item) -> None: ...
    def attach(self, client: MqttClient) -> None: ...
    def detach(self, client: MqttClient) -> None: ...


class SparkplugHost:
    def __init__(self, settings: Settings, intake: Intake) -> None:
        self.settings = settings
        self.spb = settings.sparkplug
        self.intake = intake
        self.state_topic = state_topic(self.spb.host_id)
        self.hosting = False  #: this worker holds the host lock (and runs the host's MQTT session)
        self.client: MqttClient | None = None
        self.host: Host | None = None
        self.state_ts: int | None = None  #: T of this MQTT session: its will's and its online STATE's timestamp
        self._announce = asyncio.Event()  #: publish the online STATE (connected, or an offline one seen)
        self._closing = False

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        groups = self.spb.group_filter
        if not groups:
            return [(node_filter(), 1)]  # our STATE topic included
        return [*((node_filter(g), 1) for g in groups), (self.state_topic, 1)]

    # -- election ----------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, close: asyncio.Event) -> None:
        """Until ``stop``: contend for the host lock, and host while holding it. A host stopped keeps its MQTT
        session until ``close`` (the final batch's acks go out on it), then says offline and disconnects.
        Never raises: any failure means a new connection after a backoff."""
        db = self.settings.db
        backoff = Backoff(first=1.0, cap=30.0)
        while not stop.is_set():
            conn = await pg.connect(db.dsn, connect_timeout=db.connect_timeout, stop=stop)
            if conn is None:
                return
            try:
                if await self._elect(conn, stop):
                    backoff.reset()
                    await self._host(conn, stop, close)
            except pg.Stopped:
                return
            except (psycopg.Error, TimeoutError, OSError) as exc:
                log.warning("sparkplug host election failed (%s); reconnecting", describe(exc, 300))
            except Exception as exc:  # the host must never take the worker down
                log.exception("sparkplug host: unexpected %s", describe(exc, 300))
            finally:
                await conn.close()
            if await backoff.wait(stop):
                return

    async def _elect(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> bool:
        said = False
        while not stop.is_set():
            row = await (await self._bounded(conn.execute("SELECT pg_try_advisory_lock(%s)", (HOST_LOCK,)),
                                             stop)).fetchone()
            if row and row[0]:
                return True
            if not said:
                log.info("sparkplug: another worker is the primary host %s; %s waits to take over", self.spb.host_id,
                         self.settings.worker_id)
                said = True
            if await sleep_or_stop(self.spb.takeover_interval, stop):
                return False
        return False

    async def _bounded(self, op: Any, stop: asyncio.Event) -> Any:
        return await pg.bounded(op, timeout=self.settings.db.query_timeout, stop=stop)

    # -- hosting -----------------------------------------------------------------------------------------
    async def _host(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event, close: asyncio.Event) -> None:
        wid = self.settings.worker_id
        client = MqttClient(self.settings.mqtt, client_id=f"{self.settings.client_id}-spb-host",
                            subscriptions=self.subscriptions, on_message=self.on_message, clean_start=True,
                            session_expiry=0, manual_ack=True, will=self._will, on_subscribed=self._announce.set)
        self.host, self.client = Host(self.spb.host_id, self.spb.paths), client
        self.hosting, self._closing = True, False
        self._announce.clear()
        self.intake.attach(client)
        m.SPARKPLUG_HOST.set(1)
        m.SPARKPLUG_TAKEOVERS.inc()
        log.info("sparkplug: %s is the primary host %s (%s)", wid, self.spb.host_id,
                 ", ".join(t for t, _ in self.subscriptions))
        mqtt_stop = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(client.run_loop(mqtt_stop), name=f"ingestion[{wid}].sparkplug_mqtt_loop")
                try:
                    await self._serve(conn, client, stop)
                finally:
                    client.pause_reading()
                    if stop.is_set():
                        await close.wait()  # the final batch committed and acked on this client
                    await self._goodbye(client)
                    mqtt_stop.set()
        finally:
            self.intake.detach(client)
            self.host = self.client = None
            self.hosting = False
            m.SPARKPLUG_HOST.set(0)
            log.info("sparkplug: %s is no longer the primary host %s", wid, self.spb.host_id)

    async def _serve(self, conn: psycopg.AsyncConnection[Any], client: MqttClient, stop: asyncio.Event) -> None:
        """Announce online on each connection; check the lock's connection; return at ``stop`` or when it fails."""
        loop = asyncio.get_running_loop()
        check_at = loop.time() + self.spb.takeover_interval
        while not stop.is_set():
            if self._announce.is_set():
                self._announce.clear()
                await self._online(client)
            if loop.time() >= check_at:
                try:
                    await self._bounded(conn.execute("SELECT 1"), stop)
                except pg.Stopped:
                    return
                except (psycopg.Error, TimeoutError) as exc:
                    log.warning("sparkplug: the host lock's connection failed (%s): %s stops hosting",
                                describe(exc, 300), self.settings.worker_id)
                    return
                check_at = loop.time() + self.spb.takeover_interval
            await wait_first(self._announce.wait(), stop.wait(), timeout=max(0.0, check_at - loop.time()))

    def _will(self) -> Will:
        """The will of the next CONNECT: offline, with the timestamp its online STATE will carry."""
        now = time.time_ns() // 1_000_000
        self.state_ts = max(now, (self.state_ts or 0) + 1)  # a newer session has a newer STATE
        return Will(self.state_topic, encode_state(False, self.state_ts), qos=STATE_QOS, retain=STATE_RETAIN)

    async def _online(self, client: MqttClient) -> None:
        if self.state_ts is None:
            return
        try:
            fut = await client.publish(self.state_topic, encode_state(True, self.state_ts), qos=STATE_QOS,
                                       retain=STATE_RETAIN, while_connected=True)
        except MqttError as exc:  # disconnected: the next CONNACK announces again
            log.warning("sparkplug: online STATE not sent: %s", exc)
            return
        fut.add_done_callback(_retrieved)
        log.info("sparkplug: STATE online (timestamp %d) on %s", self.state_ts, self.state_topic)

    async def _goodbye(self, client: MqttClient) -> None:
        """A clean stop: the offline STATE (timestamp T), acknowledged, before DISCONNECT."""
        self._closing = True
        if not client.connected or self.state_ts is None:
            return
        try:
            async with asyncio.timeout(STATE_TIMEOUT):
                fut = await client.publish(self.state_topic, encode_state(False, self.state_ts), qos=STATE_QOS,
                                           retain=STATE_RETAIN, while_connected=True)
                await fut
            log.info("sparkplug: STATE offline (timestamp %d) on %s", self.state_ts, self.state_topic)
        except (MqttError, TimeoutError) as exc:
            log.warning("sparkplug: offline STATE not acknowledged (%s); the broker's will says it when the "
                        "connection ends uncleanly only", describe(exc, 200))

    # -- messages (the host client's callback, on the loop) -------------------------------------------------
    def on_message(self, msg: Message) -> None:
        """The message boundary: whatever happens while handling one message makes it a dead letter."""
        host, client = self.host, self.client
        if host is None or client is None:
            return  # after hosting: not acknowledged (clean sessions: nothing is redelivered to anybody)
        ack = ClientAck(client, msg)
        limit = self.settings.max_message_bytes
        try:
            if msg.topic == self.state_topic:
                m.SPARKPLUG_MESSAGES.labels("STATE").inc()
                self._own_state(msg.payload)
                ack()
                return
            m.SPARKPLUG_MESSAGES.labels(_kind(msg.topic)).inc()
            big = oversize(msg.topic, msg.payload, ack=ack, max_bytes=limit)
            if big is not None:
                items = [big]
            else:
                res = host.on_message(msg.topic, msg.payload)
                self._commands(client, res)
                items = result_items(msg.topic, msg.payload, res, ack=ack)
        except Exception as exc:  # noqa: BLE001 - a bug on one message must not reach the MQTT client
            payload = msg.payload if len(msg.payload) <= limit else msg.payload[:OVERSIZE_PREFIX_BYTES]
            item = Item(msg.topic, payload, ack=ack, size=len(msg.payload))
            item.fail(exc, "unexpected ")
            items = [item]
        if not items:
            ack()  # nothing to store, so nothing to commit first
            return
        for it in items:
            if it.error is not None:
                m.SPARKPLUG_DEAD_LETTERS.inc()
            self.intake.add(it)

    def _own_state(self, payload: bytes) -> None:
        try:
            state = decode_state(payload)
        except ContractError as exc:
            log.warning("sparkplug: unreadable STATE on our own topic %s ignored: %s", self.state_topic, exc)
            return
        if not state.online and not self._closing:
            log.info("sparkplug: STATE offline (timestamp %s) on our own topic while hosting: online again",
                     state.timestamp)
            self._announce.set()

    def _commands(self, client: MqttClient, res: HostResult) -> None:
        for cmd in res.commands:
            try:
                fut = client.publish_nowait(cmd.topic, cmd.payload, qos=0)
            except MqttError as exc:
                log.warning("sparkplug: rebirth request to %s not sent: %s", bounded(cmd.topic), exc)
                fut = None
            if fut is None:
                m.SPARKPLUG_REBIRTHS_UNSENT.inc()
            else:
                m.SPARKPLUG_REBIRTHS.inc()


def _kind(topic: str) -> str:
    """The message type level of a Sparkplug topic, a bounded label ("invalid" for anything else)."""
    levels = topic.split("/", 4)
    if len(levels) == 3 and levels[1] == "STATE":
        return "STATE"  # another host's
    return levels[2] if len(levels) >= 4 and levels[2] in _KINDS else "invalid"


def _retrieved(fut: asyncio.Future[int]) -> None:
    if not fut.cancelled():
        fut.exception()  # a stopped client fails its futures: retrieved, nothing to do
