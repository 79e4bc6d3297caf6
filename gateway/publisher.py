"""Publishing: device batches → the spool (write-ahead log) → batch messages (QoS 1) until ingestion
confirms them, and per-tag UNS topics.

``publish_loop`` takes device batches from the queue, numbers each message ``(gateway, run, seq)``,
appends it to the :class:`~gateway.spool.Spool` and group-commits (one fsync per pass over what is
queued). ``send_loop`` publishes spooled messages oldest first whenever connected, inside the MQTT
client's inflight window. A message is delivered when ingestion confirms its COMMIT on
``<topic_root>/ack/v1/<gateway>`` (:meth:`Publisher.on_ack`), not at the broker's PUBACK. PUBACK
0x10 (*no matching subscribers*: nobody would get it) means not delivered: the message is sent again
after a pause. Messages not confirmed within ``ack_timeout_s`` (doubling per attempt) are sent again,
and so is every sent, unconfirmed message after a reconnect; ingestion stores a message once however
often it arrives. With ``delivery = "broker"`` a PUBACK (reason 0) is enough, for consumers that do not
confirm.

Backpressure: the inflight window bounds what is unacknowledged by the broker, the spool bounds what
is unconfirmed; when the spool is full the publish loop waits, the queue fills and pollers skip polls,
counted. Nothing is dropped. Per-tag retained topics are state, not history: while disconnected they
are skipped and published at the next change.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator

from gateway import metrics as m
from gateway.errors import SpoolFull
from gateway.readings import END, DeviceBatch, Readings
from gateway.segments import read_legacy_segment
from gateway.settings import Settings
from gateway.spool import LEGACY_RUN, Record, Spool
from gateway.statetopics import StateTopics
from nexus.mqtt import NO_MATCHING_SUBSCRIBERS, MqttClient, MqttError
from nexus.report import bounded
from proto import ContractError, decode_ack, decode_batch
from proto.streams import Numbering

log = logging.getLogger("gateway.publisher")

#: at most one fsync of the spool per this many seconds (group commit: ~50 per second, not one per poll)
SYNC_EVERY_S = 0.02
#: most device batches taken from the queue for one group commit
GROUP_MAX = 512
#: pause after PUBACK 0x10 before sending again (doubles while nobody subscribes, up to NO_SUBSCRIBER_MAX_S)
NO_SUBSCRIBER_PAUSE_S = 0.5
NO_SUBSCRIBER_MAX_S = 4.0
#: PUBACK reason codes that say "not now" rather than "never": unspecified error, implementation specific
#: error (plugins), packet identifier in use, quota exceeded. Sent again after a pause, like 0x10.
TRANSIENT_REFUSALS = frozenset({0x80, 0x83, 0x91, 0x97})


class Publisher:
    def __init__(self, settings: Settings, mqtt: MqttClient, queue: Readings, spool: Spool,
                 *, run: int | None = None) -> None:
        self.settings = settings
        self.mqtt = mqtt
        self.queue = queue
        self.spool = spool
        self.gateway = settings.gateway_id
        #: this process's run id: its start time in ms, above every run still in the spool (a clock set back
        #: must not reuse a run whose confirmations could then match new messages)
        self.run = run if run is not None else max(time.time_ns() // 1_000_000, spool.max_run + 1)
        self.numbering = Numbering(gateway=self.gateway, run=self.run, root=settings.topic_root,
                                   max_items=settings.max_points_per_message)
        self.confirm_by_ingestion = settings.delivery == "confirmed"
        self.points_confirmed = 0
        self.messages_confirmed = 0
        self.resent = 0
        self.no_subscribers = 0
        self._errors = 0
        self._wake = asyncio.Event()  # something to send, or the connection came back
        self._hold_until = 0.0  # nobody subscribed: no sends until then (monotonic)
        self._hold_s = NO_SUBSCRIBER_PAUSE_S
        self._in_flight: dict[tuple[int, int], Record] = {}  # PUBACK outstanding (paho re-sends these itself)
        self.states = StateTopics(settings, mqtt)  #: retained per-tag and alarm state topics
        self._last_sync = 0.0  # monotonic time of the last group commit
        #: given every group of device batches as it is taken (the Sparkplug edge node's feed); must not block
        self.tap: Callable[[list[DeviceBatch]], None] | None = None

    # --- into the spool ------------------------------------------------------------------------

    async def publish_loop(self) -> None:
        """Spool what the pollers queue, one group commit per pass; ends at :data:`~gateway.readings.END`."""
        while True:
            group = [await self.queue.get()]
            while len(group) < GROUP_MAX and not self.queue.empty():
                group.append(self.queue.get_nowait())
            m.QUEUE_DEPTH.set(self.queue.qsize())
            batches = [b for b in group if b is not END]
            if self.tap is not None and batches:
                self.tap(batches)
            for batch in batches:
                for topic, payload, points in self._messages(batch):
                    await self._append(topic, payload, points)
            await self._commit()
            await self.states.publish(batches)
            if len(batches) < len(group):
                return

    def _messages(self, batch: DeviceBatch) -> Iterator[tuple[str, bytes, int]]:
        """``(topic, payload, points)`` of each numbered message of ``batch`` (windows and events count
        no points)."""
        for stream, topic, payload, n in self.numbering.messages(batch.device.path, batch.points, batch.windows,
                                                                 batch.events):
            yield topic, payload, n if stream == "batch" else 0

    @property
    def errors(self) -> int:
        """Publishes the broker refused, batch and state topics."""
        return self._errors + self.states.errors

    @property
    def seq(self) -> int:
        """The number of the last message handed out in this run."""
        return self.numbering.seq

    async def _append(self, topic: str, payload: bytes, points: int) -> None:
        """Append to the spool; while it is full or the disk fails, wait (the publish loop holds, the
        queue fills and pollers skip polls, counted). Nothing is dropped."""
        while True:
            try:
                self.spool.append(topic, payload, run=self.run, seq=self.seq, points=points)
                m.SPOOLED.inc()
                return
            except SpoolFull:
                m.SPOOL_FULL.inc()
                await self._commit()
                await asyncio.sleep(0.2)
            except OSError as exc:
                m.SPOOL_ERRORS.inc()
                log.error("spool write failed, retrying: %s", exc)
                await asyncio.sleep(1.0)

    async def _commit(self) -> None:
        """One fsync for the group (in a thread: polling goes on meanwhile), at most every
        :data:`SYNC_EVERY_S`: batches queued meanwhile make the next group (an fsync costs ~1 µs per tag
        at one per poll, bench/gateway.py). The sender is woken first: sending before the fsync returns
        is fine, a crash loses only reads that were not sent."""
        self._wake.set()
        wait = self._last_sync + SYNC_EVERY_S - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_sync = time.monotonic()
        fd = self.spool.take_sync()
        if fd is not None:
            try:
                await asyncio.to_thread(os.fsync, fd)
            except OSError as exc:  # the records are written; a failed fsync only weakens power-cut safety
                m.SPOOL_ERRORS.inc()
                log.error("spool fsync failed: %s", exc)
        self._gauges()

    def adopt_legacy(self) -> int:
        """Segments written by the earlier disk buffer (before the write-ahead log): their messages go
        into the spool as they are (same bytes: ingestion knows those it stored already) under the
        reserved run :data:`LEGACY_RUN`, done at the broker's PUBACK as they were then; then the old
        file goes. Converting again after a crash halfway only repeats messages (same bytes, stored
        once). Returns the messages adopted."""
        n = 0
        seq = max((k[1] for k in self.spool.record_keys() if k[0] == LEGACY_RUN), default=0)
        for path in list(self.spool.legacy):
            for topic, payload in read_legacy_segment(path):
                seq += 1
                try:
                    points = len(decode_batch(payload).points)
                except ContractError:
                    points = 0  # ingestion dead-letters it, as it would have then
                self.spool.append(topic, payload, run=LEGACY_RUN, seq=seq, points=points)
                n += 1
            self.spool.sync()
            path.unlink()
            self.spool.legacy.remove(path)
        if n:
            log.info("spool: %d messages from an earlier build's disk buffer will be sent", n)
        return n

    def spool_queue(self) -> int:
        """After a cancelled publish loop: the batches still queued go to the spool; returns how many
        messages could not be kept (spool full or failing), which the caller reports."""
        lost = 0
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is END:
                continue
            for topic, payload, points in self._messages(item):
                try:
                    self.spool.append(topic, payload, run=self.run, seq=self.seq, points=points)
                except (SpoolFull, OSError):
                    lost += 1
        self.spool.sync()
        return lost

    # --- out to the broker ---------------------------------------------------------------------

    async def send_loop(self, stop: asyncio.Event) -> None:
        """Send spooled messages, oldest first, whenever connected; re-send what is due. Ends at
        ``stop``; what is unconfirmed stays in the spool (on disk: for the next start)."""
        spool = self.spool
        timeout = self.settings.ack_timeout_s
        last_due = time.monotonic()
        window = self.settings.send_window
        while not stop.is_set():
            now = time.monotonic()
            if now - last_due >= 0.25 and self.mqtt.connected:  # while disconnected, on_connect re-sends
                last_due = now
                late = spool.due(timeout, now, skip=self._in_flight)
                if late:
                    self._count_resent(late, "timeout")
            if (not self.mqtt.connected or now < self._hold_until or spool.pending == 0
                    or spool.sent >= window):  # bounded: what is sent and unconfirmed (a re-send flood)
                self._wake.clear()
                wait = min(0.25, max(0.0, self._hold_until - now)) or 0.25
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            rec = spool.next()
            if rec is None:
                continue
            try:
                payload = spool.payload(rec)
                fut = await self.mqtt.publish(rec.topic, payload, qos=1, while_connected=True)
            except MqttError as exc:
                spool.retry(rec)
                if exc.reason not in ("disconnected", "stopped"):
                    log.warning("batch message not sent, retrying: %s", exc)
                    await asyncio.sleep(0.2)
                continue
            except OSError as exc:  # reading a spooled payload back failed: keep it, try again later
                spool.retry(rec)
                m.SPOOL_ERRORS.inc()
                log.error("spool read failed, retrying: %s", exc)
                await asyncio.sleep(1.0)
                continue
            self._in_flight[rec.key] = rec
            fut.add_done_callback(functools.partial(self._puback, rec))

    def _puback(self, rec: Record, fut: asyncio.Future[int]) -> None:
        self._in_flight.pop(rec.key, None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, MqttError) and exc.reason == "stopped":
            return  # client stopped: stays in the spool (sent after the next start)
        if not self.spool.holds(rec):
            return  # an earlier send of it was confirmed meanwhile: delivered
        if isinstance(exc, MqttError) and exc.code in TRANSIENT_REFUSALS:
            log.warning("broker refused a batch message for now (%s); sending it again", exc)
            self._again_later(rec)
            return
        if exc is not None:  # the broker refused it for good (e.g. not authorized, topic invalid)
            self._errors += 1
            m.PUBLISH_ERRORS.inc()
            log.error("broker refused a batch message (%s); moved to %s", exc, self.spool.reject(rec))
            self._gauges()
            return
        if fut.result() == NO_MATCHING_SUBSCRIBERS:
            # the broker took it but nobody will receive it (no ingestion subscribed yet, e.g. right
            # after a broker restart): not delivered; send it again after a pause, and hold the rest
            self.no_subscribers += 1
            m.NO_SUBSCRIBERS.inc()
            self._again_later(rec)
            return
        self._hold_s = NO_SUBSCRIBER_PAUSE_S
        m.MESSAGES_OUT.labels("batch").inc()
        m.POINTS_OUT.inc(rec.points)
        if not self.confirm_by_ingestion or rec.run == LEGACY_RUN:
            self._confirmed(self.spool.confirm(rec.run, [(rec.seq, rec.seq)]))
        else:
            self.spool.started(rec)  # the broker has it now: the confirmation timer counts from here

    def _again_later(self, rec: Record) -> None:
        """Send ``rec`` again at the next due check (keeping the sending order), and hold all sending
        for a pause that doubles while the broker keeps saying no."""
        self.spool.due_now(rec)
        now = time.monotonic()
        if now >= self._hold_until:
            self._hold_until = now + self._hold_s
            self._hold_s = min(self._hold_s * 2, NO_SUBSCRIBER_MAX_S)

    def on_connect(self) -> None:
        """A new connection: every sent, unconfirmed message the client will not re-send itself (its
        PUBACK came; the broker may have lost it since) goes out again."""
        n = self.spool.resend_all(skip=self._in_flight)
        if n:
            self._count_resent(n, "reconnect")
        self._hold_until = 0.0
        self._wake.set()
        self.states.on_connect()

    def on_ack(self, payload: bytes) -> None:
        """A confirmation from ingestion: these messages are committed in the historian."""
        try:
            ack = decode_ack(payload)
        except ContractError as exc:
            m.BAD_ACKS.inc()
            log.warning("confirmation not understood: %s", bounded(str(exc)))
            return
        self._confirmed(self.spool.confirm(ack.run, ack.seqs))

    def _confirmed(self, recs: list[Record]) -> None:
        if not recs:
            return
        points = sum(r.points for r in recs)
        self.messages_confirmed += len(recs)
        self.points_confirmed += points
        m.MESSAGES_CONFIRMED.inc(len(recs))
        m.POINTS_CONFIRMED.inc(points)
        self._gauges()

    def _count_resent(self, n: int, why: str) -> None:
        self.resent += n
        m.RESENT.labels(why).inc(n)

    def _gauges(self) -> None:
        m.WAITING_MESSAGES.set(self.spool.unconfirmed)
        m.WAITING_POINTS.set(self.spool.points_waiting)
        m.SPOOL_BYTES.set(self.spool.size)

    # --- shutdown ------------------------------------------------------------------------------

    async def drain(self, timeout: float) -> int:
        """Wait (bounded) until ingestion confirmed every spooled message; returns how many are not."""
        with_deadline = time.monotonic() + timeout
        while self.spool.unconfirmed and self.mqtt.connected and time.monotonic() < with_deadline:
            await asyncio.sleep(0.05)
        return self.spool.unconfirmed


__all__ = ["MqttError", "Publisher"]
