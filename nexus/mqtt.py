"""An MQTT client for asyncio daemons: paho-mqtt driven by the event loop, no extra thread.

Why not aiomqtt: the ingestion worker must acknowledge QoS 1 messages only after its batch
commits (paho's ``manual_ack``), and both daemons need a bounded publish window whose futures
resolve on PUBACK. Both are a few lines on top of paho; this module is those lines.

The supervisor coroutine :meth:`MqttClient.run_loop` owns the connection: it connects, re-subscribes,
reconnects with capped backoff, and drives paho's timers. Acks of messages received on an earlier
connection are never sent on a newer one (their packet ids mean something else there); the broker
redelivers those messages instead, and the historian's idempotent writes absorb the duplicates.

Secured brokers (TLS, client certificates, user names, ACLs) are settings (:class:`MqttSettings`); a
refused connect, subscription or publish is one log line naming its cause (:mod:`nexus.mqtt_failures`)
and is retried with the same backoff, never an exception that ends the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter, Gauge

from nexus.common import MqttSettings
from nexus.mqtt_failures import FailureLog, connack_refusal
from nexus.mqtt_failures import MqttError as MqttError  # re-exported: every caller catches it from here
from nexus.mqtt_socket import SocketOnLoop, new_paho_client
from nexus.mqtt_types import NO_MATCHING_SUBSCRIBERS as NO_MATCHING_SUBSCRIBERS  # re-exported
from nexus.mqtt_types import Message as Message
from nexus.mqtt_types import Will as Will
from nexus.report import bounded, describe
from nexus.runtime import Backoff, sleep_or_stop, wait_first

log = logging.getLogger("nexus.mqtt")

RECONNECTS = Gauge("nexus_mqtt_reconnects", "Broker reconnects since start")
CALLBACK_ERRORS = Counter("nexus_mqtt_callback_errors_total",
                          "Exceptions raised by a message handler, caught before they reach paho's loop")


class MqttClient:
    def __init__(self, settings: MqttSettings, *, client_id: str, subscriptions: Sequence[tuple[str, int]] = (),
                 on_message: Callable[[Message], None] | None = None, clean_start: bool = True,
                 session_expiry: int = 0, manual_ack: bool = False, will: Will | Callable[[], Will] | None = None,
                 on_connect: Callable[[], None] | None = None, on_subscribed: Callable[[], None] | None = None,
                 on_disconnect: Callable[[], None] | None = None, resend_after_reconnect: bool = True) -> None:
        self.settings = settings
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_connect_cb = on_connect
        #: called once per connection when the broker answered its subscriptions (SUBACK; at once without any)
        self._on_subscribed_cb = on_subscribed
        self._connect_sub_mid: int | None = None
        self._on_disconnect_cb = on_disconnect
        #: False: what was queued or unacknowledged when a connection dropped is dropped with it (its futures
        #: fail "disconnected") instead of going out on the next one (Sparkplug: a session's messages belong to it)
        self._resend = resend_after_reconnect
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._loop = asyncio.get_running_loop()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._connack: asyncio.Future[None] | None = None
        self._pending: dict[int, tuple[asyncio.Future[int], str]] = {}  # mid -> (PUBACK future, topic)
        self._window = asyncio.Semaphore(settings.max_inflight)
        self._sub_mids: dict[int, list[tuple[str, int]]] = {}  # SUBSCRIBE packet id -> its filters
        #: filters the broker refused on this connection (filter -> QoS), subscribed again with backoff
        self.refused_subscriptions: dict[str, int] = {}
        self._resubscribe = Backoff(first=settings.reconnect_min, cap=settings.reconnect_max)
        self._resubscribe_at = 0.0
        self._failures = FailureLog(settings, client_id)
        self.generation = 0
        self._closed = False  # after run_loop ends: publish() fails fast instead of waiting for room
        self.reconnects = 0

        c = new_paho_client(settings, client_id, manual_ack=manual_ack)
        c.enable_logger(self._failures.paho)
        #: a callable gives the will of each CONNECT (Sparkplug: the NDEATH carries the session's bdSeq,
        #: a host's offline STATE the timestamp of its online one); called before every attempt
        self._will = will
        c.on_connect = self._cb_connect
        c.on_disconnect = self._cb_disconnect
        c.on_publish = self._cb_publish
        c.on_message = self._cb_message
        c.on_subscribe = self._cb_subscribe
        self._io = SocketOnLoop(self._loop, c)
        self._client = c

    # -- state ----------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    @property
    def inflight(self) -> int:
        return len(self._pending)

    # -- supervisor -----------------------------------------------------------------------------
    async def run_loop(self, stop: asyncio.Event) -> None:
        """Connect and stay connected until ``stop``; then disconnect cleanly."""
        backoff = Backoff(first=self.settings.reconnect_min, cap=self.settings.reconnect_max)
        first, failures = True, 0
        # wake the connected wait below at once on stop, not at its next 1 s tick
        stop_watch = asyncio.ensure_future(stop.wait())
        stop_watch.add_done_callback(lambda _: self._disconnected.set())
        try:
            while not stop.is_set():
                try:
                    await self._connect_once()
                except (OSError, TimeoutError, MqttError) as exc:
                    failures += 1
                    delay = backoff.next_delay()
                    self._failures.connect_failed(exc, delay, failures)
                    if await sleep_or_stop(delay, stop):
                        break
                    continue
                if not first:
                    self.reconnects += 1
                    RECONNECTS.inc()
                self._failures.connected(failures)
                first, failures = False, 0
                backoff.reset()
                while self.connected and not stop.is_set():
                    self._client.loop_misc()  # keepalive pings, retransmission timers
                    self._subscribe_refused_again()
                    await sleep_or_stop(1.0, self._disconnected)
                    if stop.is_set():
                        break
        finally:
            stop_watch.cancel()
            await self._shutdown()

    async def _connect_once(self) -> None:
        self._disconnected.clear()
        if not self._resend:
            self._drop_outgoing()
        self._failures.paho.take()
        self._connack = self._loop.create_future()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
        props.ReceiveMaximum = self.settings.max_inflight
        if self._session_expiry:
            props.SessionExpiryInterval = self._session_expiry
        s = self.settings
        will = self._will() if callable(self._will) else self._will
        if will is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)
        try:
            async with asyncio.timeout(s.connect_timeout):
                await self._loop.run_in_executor(None, lambda: self._client.connect(
                    s.host, s.port, s.keepalive, clean_start=self._clean_start, properties=props))
                await self._connack
        except BaseException:
            self._client._sock_close()  # noqa: SLF001 - paho has no public "abort connect"
            raise

    async def _shutdown(self) -> None:
        if self.connected:
            self._disconnected.clear()  # may have been set by stop (run_loop's stop watch)
            try:
                await self._flush_writes(2.0)  # acks owed to the broker go out before DISCONNECT
                self._client.disconnect()
                async with asyncio.timeout(2):
                    await self._disconnected.wait()
            except TimeoutError:
                pass
        self._client._sock_close()  # noqa: SLF001
        self._connected.clear()
        self._closed = True
        for fut, _ in self._pending.values():
            self._window.release()  # wakes a publish() waiting for room; it sees _closed and fails
            if not fut.done():
                fut.set_exception(MqttError("client stopped before PUBACK", reason="stopped"))
        self._pending.clear()
        self._window.release()  # and one more, in case nothing was pending but somebody waits

    def _drop_outgoing(self) -> None:
        self._client._out_messages.clear()  # noqa: SLF001 - paho has no public "forget the old session's queue"
        for fut, _ in self._pending.values():
            self._window.release()
            if not fut.done():
                fut.set_exception(MqttError("connection lost before PUBACK", reason="disconnected"))
        self._pending.clear()

    async def end_session(self, timeout: float = 5.0) -> None:
        """A normal DISCONNECT now (the broker sends no will), after what is queued went out; :meth:`run_loop`
        then connects again at once, asking the will callable for the new session's will."""
        if not self.connected:
            return
        await self._flush_writes(timeout)
        self._client.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.connected:
                    await asyncio.sleep(0.01)

    async def _flush_writes(self, timeout: float) -> None:
        """Wait (bounded) until paho's outgoing buffer is empty: PUBACKs owed and publishes queued."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.connected and self._client.want_write():
                    await asyncio.sleep(0.01)

    # -- publish / subscribe / ack -------------------------------------------------------------
    def publish_nowait(self, topic: str, payload: bytes, *, qos: int = 1) -> asyncio.Future[int] | None:
        """Publish at once if connected with room in the window, else None (the caller may retry
        later or rely on the other side asking again); never waits."""
        if self._closed or not self.connected or self._window.locked():
            return None
        self._window._value -= 1  # noqa: SLF001 - acquire without awaiting; checked unlocked just above
        return self._send(topic, payload, qos=qos, retain=False)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      while_connected: bool = False, generation: int | None = None) -> asyncio.Future[int]:
        """Queue a publish inside the inflight window; return a future resolved on PUBACK with its
        reason code (0 success, :data:`NO_MATCHING_SUBSCRIBERS`: accepted but nobody subscribed).

        Waits only for room in the window (backpressure); await the returned future for the ack.
        Messages queued while disconnected are sent, and unacked ones resent, on reconnect.
        ``while_connected``: raise :class:`MqttError` (reason "disconnected") instead of waiting for
        room while the connection is down (callers with a disk buffer spool instead).
        Raises :class:`MqttError` (reason "stopped") once the client has stopped; with ``generation``, reason
        "disconnected" unless it is still that connection's (a message that must not reach a later one).
        """
        if while_connected:
            if not await self._acquire_while_connected():
                raise MqttError("not connected to the broker", reason="disconnected")
        else:
            await self._window.acquire()
        if self._closed:
            self._window.release()  # pass the wake-up on to the next waiter
            raise MqttError("client stopped", reason="stopped")
        if generation is not None and (generation != self.generation or not self.connected):
            self._window.release()
            raise MqttError("the connection it was meant for is gone", reason="disconnected")
        return self._send(topic, payload, qos=qos, retain=retain)

    def _send(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> asyncio.Future[int]:
        """Hand one message to paho; the caller holds one unit of the window."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            self._window.release()
            raise MqttError(f"publish to {bounded(topic)} failed: {paho.error_string(info.rc)}", reason=str(info.rc))
        fut: asyncio.Future[int] = self._loop.create_future()
        if qos == 0:
            self._window.release()
            if info.rc == paho.MQTT_ERR_SUCCESS:
                fut.set_result(0)
            else:
                fut.set_exception(MqttError("not connected: QoS 0 message not sent", reason="disconnected"))
            return fut
        self._pending[info.mid] = (fut, topic)
        return fut

    async def _acquire_while_connected(self) -> bool:
        if not self.connected or self._closed:
            return False
        if not self._window.locked():  # room now: no need to watch the connection (the common case)
            await self._window.acquire()
            return True
        acquire = asyncio.ensure_future(self._window.acquire())
        await wait_first(acquire, self._disconnected.wait())
        if not acquire.done():
            acquire.cancel()
            try:
                await acquire
            except asyncio.CancelledError:
                return False
        return True  # got room (possibly just as the connection dropped: paho queues it, resent on reconnect)

    def ack(self, message: Message) -> None:
        """Acknowledge a QoS>0 message (manual-ack clients), unless it came on an older connection."""
        if message.qos and message.generation == self.generation and self.connected:
            self._client.ack(message.mid, message.qos)

    def pause_reading(self) -> None:
        """Stop reading the socket (the broker's window and TCP then hold the rest back)."""
        self._io.pause()

    def resume_reading(self) -> None:
        self._io.resume()

    def _subscribe(self, subscriptions: Sequence[tuple[str, int]]) -> int | None:
        rc, mid = self._client.subscribe([(t, SubscribeOptions(qos=q)) for t, q in subscriptions])
        if rc == paho.MQTT_ERR_SUCCESS and mid is not None:
            self._sub_mids[mid] = list(subscriptions)
            return mid
        return None

    def _subscribe_refused_again(self) -> None:
        """The operator may fix an ACL while we run (mosquitto reloads it on SIGHUP): ask again, backing off."""
        if self.refused_subscriptions and time.monotonic() >= self._resubscribe_at:
            self._resubscribe_at = time.monotonic() + self._resubscribe.next_delay()
            self._subscribe(list(self.refused_subscriptions.items()))

    # -- paho callbacks (run on the loop thread, except socket-open during connect) ---------------
    def _cb_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            if self._connack and not self._connack.done():
                code = int(getattr(reason, "value", 0x80))
                self._connack.set_exception(MqttError(connack_refusal(code, str(reason), self.settings.username),
                                                      reason=str(reason), code=code))
            return
        self.generation += 1
        self._sub_mids.clear()
        self.refused_subscriptions.clear()
        self._resubscribe.reset()
        self._connect_sub_mid = self._subscribe(self.subscriptions) if self.subscriptions else None
        self._connected.set()
        log.info("mqtt connected to %s:%s (session present: %s)", self.settings.host, self.settings.port,
                 flags.session_present, extra={"client_id": self.client_id})
        if self._connack and not self._connack.done():
            self._connack.set_result(None)
        if self._on_connect_cb:
            self._on_connect_cb()
        if self._connect_sub_mid is None and self._on_subscribed_cb:
            self._on_subscribed_cb()

    def _cb_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was = self.connected
        self._connected.clear()
        self._disconnected.set()
        if was:
            note = self._failures.disconnect_note() if getattr(reason, "value", 1) else ""  # 0: we said goodbye
            log.warning("mqtt disconnected: %s%s", reason, note, extra={"client_id": self.client_id})
        if self._connack and not self._connack.done():
            self._connack.set_exception(MqttError(f"disconnected during connect: {reason}", reason=str(reason)))
        if was and self._on_disconnect_cb:
            self._on_disconnect_cb()

    def _cb_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
        subscriptions = self._sub_mids.pop(mid, None)
        if subscriptions is None:
            return
        if mid == self._connect_sub_mid:
            self._connect_sub_mid = None
            if self._on_subscribed_cb:
                self._on_subscribed_cb()
        refused = []
        for (topic, qos), rc in zip(subscriptions, codes, strict=False):
            if rc.is_failure:
                self.refused_subscriptions[topic] = qos
                refused.append((topic, rc))
            elif self.refused_subscriptions.pop(topic, None) is not None:
                log.info("mqtt subscription to %s granted now", bounded(topic), extra={"client_id": self.client_id})
        if not refused:
            return
        if self._resubscribe_at <= time.monotonic():
            self._resubscribe_at = time.monotonic() + self._resubscribe.next_delay()
        for topic, rc in refused:
            self._failures.subscription_refused(topic, rc, max(0.0, self._resubscribe_at - time.monotonic()))

    def _cb_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        fut, topic = entry
        self._window.release()
        if fut.done():
            return
        if reason is not None and getattr(reason, "is_failure", False):
            code = int(getattr(reason, "value", 0x80))
            text = self._failures.publish_refused(topic, reason, code)
            fut.set_exception(MqttError(text, reason=str(reason), code=code))
        else:
            fut.set_result(int(getattr(reason, "value", 0) or 0))

    def _cb_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is None:
            return
        # paho types payload as bytes | bytearray (outgoing ones may be either); a received payload is bytes,
        # which bytes() returns as it is
        payload = bytes(msg.payload)
        try:
            self._on_message(Message(msg.topic, payload, msg.qos, bool(msg.retain), msg.mid, self.generation))
        except Exception as exc:  # noqa: BLE001 - the handler's bug must not reach paho's read loop (it would
            # re-read the same packet forever); handlers turn bad messages into dead letters themselves
            CALLBACK_ERRORS.inc()
            log.error("message handler failed on %s: %s", bounded(msg.topic), describe(exc, 300),
                      extra={"client_id": self.client_id})
