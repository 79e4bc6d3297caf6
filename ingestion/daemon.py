"""The ingestion worker: shared subscription → decode on arrival → batch → COPY → commit → ack.

It subscribes (one shared group) to the three device streams: points (``<root>/batch/v1/#``), edge
windows (``<root>/windows/v1/#``) and alarm events (``<root>/events/v1/#``); their messages are batched
together, stored in one transaction and confirmed in the same acks.

Tasks (one TaskGroup): ``ingestion[<id>].mqtt_loop`` keeps the broker session, ``.flush_loop``
writes batches, and on plain PostgreSQL ``.upkeep`` keeps partitions and rollups when this worker is the
leader (:mod:`ingestion.upkeep`). After each COMMIT the batch's messages are acknowledged to the broker (PUBACK) and
confirmed to their gateways on ``<root>/ack/v1/<gateway>`` (:mod:`proto.delivery`): a gateway keeps
a batch until it is confirmed, so a message left unacknowledged here is re-sent, never lost.

Shutdown, within ``drain_deadline`` whatever the database does: stop reading → final batch (every
database await is bounded; at the give-up time a stuck statement is cancelled and what is not
committed is left unacknowledged, for redelivery) → owed acks → DISCONNECT → summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from ingestion import metrics as m
from ingestion.errors import DbError, DbStopped, PermanentError
from ingestion.items import OVERSIZE_PREFIX_BYTES, Item, bounded_text, decode_item
from ingestion.settings import Settings
from ingestion.sparkplug.hosting import SparkplugHost
from ingestion.upkeep import Upkeep
from ingestion.writer import Writer, WriteResult
from nexus import pg
from nexus.mqtt import NO_MATCHING_SUBSCRIBERS, Message, MqttClient, MqttError
from nexus.ops import OpsServer
from nexus.report import bounded
from nexus.runtime import Backoff, install_stop_signals, wait_or_stop
from proto import ContractError, ack_topic, encode_acks
from proto.aggregates import events_filter, windows_filter
from proto.uns import batch_filter

log = logging.getLogger("ingestion")

HOUSEKEEPING_EVERY = 600.0  #: seconds between deletions of expired message digests
#: seconds of the drain deadline kept for the owed PUBACKs and acks, and DISCONNECT (milliseconds on a
#: working broker; a broken one costs only redeliveries)
MQTT_CLOSE_RESERVE = 2.0
#: database work is given up this long before the MQTT reserve: the time pg.bounded needs to cancel it
GIVE_UP_RESERVE = MQTT_CLOSE_RESERVE + 2 * pg.CANCEL_GRACE


class Ingestor:
    def __init__(self, settings: Settings, writer: Writer) -> None:
        self.settings = settings
        self.writer = writer  #: opened (migrated); while running, only the flush loop uses it
        self.mqtt: MqttClient | None = None
        #: set at the drain deadline's give-up time: database work in progress is cancelled, the rest of
        #: the buffer is left unacknowledged (redelivered to, or re-sent by its gateway to, a running worker)
        self.give_up = asyncio.Event()
        self._buffer: list[Item] = []
        self._buffer_bytes = 0
        self._committing: list[Item] = []
        self._pending_points = 0  # points, windows and alarm events buffered + being committed
        self._pending_bytes = 0  # payload bytes held, buffered + being committed
        self._first_at = 0.0
        self._has_data = asyncio.Event()
        self._full = asyncio.Event()
        self._paused = False
        self._intakes: list[MqttClient] = []  #: other clients feeding the buffer (the Sparkplug host's): see attach
        self.stopping = False  #: intake stopped for good (shutdown): backpressure must not resume it
        self._flush_messages = max(1, settings.mqtt.max_inflight // 2)
        self.totals = {"points": 0, "windows": 0, "events": 0, "messages": 0, "duplicates": 0, "dead_letters": 0,
                       "duplicate_points": 0, "acks_sent": 0, "acks_unsent": 0}

    @property
    def unacknowledged(self) -> int:
        """Messages received and not committed (left to redelivery if we stop now)."""
        return len(self._buffer) + len(self._committing)

    # -- intake: called by the MQTT client for every message (event loop thread) ----------------------
    def on_message(self, msg: Message) -> None:
        """The message boundary: whatever happens while handling one message makes it a dead letter."""
        limit = self.settings.max_message_bytes
        # what the ack needs, without an oversize payload: the item holds only what pending bytes count
        ack = msg if len(msg.payload) <= limit else dataclasses.replace(msg, payload=b"")
        try:
            item = decode_item(msg.topic, msg.payload, root=self.settings.topic_root, ack=ack, max_bytes=limit)
        except Exception as exc:  # noqa: BLE001 - decode_item does not raise; this is the last line, by contract
            payload = msg.payload if len(msg.payload) <= limit else msg.payload[:OVERSIZE_PREFIX_BYTES]
            item = Item(msg.topic, payload, ack=ack, size=len(msg.payload))
            item.fail(exc, "unexpected ")
        self._add(item)

    # -- other clients feeding the buffer (ingestion/sparkplug/hosting.py) --------------------------------
    def add(self, item: Item) -> None:
        """An item of another client (its ``ack`` a callable acknowledging it there), buffered like ours."""
        self._add(item)

    def attach(self, client: MqttClient) -> None:
        """``client`` feeds the buffer from now on: it pauses and resumes reading with ours."""
        self._intakes.append(client)
        if self._paused or self.stopping:
            client.pause_reading()

    def detach(self, client: MqttClient) -> None:
        self._intakes.remove(client)

    def _add(self, item: Item) -> None:
        if not self._buffer:
            self._first_at = time.monotonic()
        size = len(item.payload)
        self._buffer.append(item)
        self._buffer_bytes += size
        self._pending_points += item.rows
        self._pending_bytes += size
        m.POINTS_IN.inc(item.points)
        m.PENDING_POINTS.set(self._pending_points)
        m.PENDING_BYTES.set(self._pending_bytes)
        if item.error is not None:
            if item.error.startswith("MessageTooLarge"):
                m.OVERSIZE.inc()
            elif item.error.startswith("unexpected "):
                m.UNEXPECTED_ERRORS.inc()
            log.warning("dead letter: %s", item.error, extra={"topic": bounded(item.topic)})
        elif item.batch is not None and item.batch.duplicates:
            m.DUPLICATE_POINTS.inc(item.batch.duplicates)
            self.totals["duplicate_points"] += item.batch.duplicates
        b = self.settings.batch
        if (self._pending_points >= b.max_points or len(self._buffer) >= self._flush_messages
                or self._buffer_bytes >= b.max_pending_bytes // 2):
            self._full.set()
        if (not self._paused and self.mqtt
                and (self._pending_points >= b.max_pending_points or self._pending_bytes >= b.max_pending_bytes)):
            self.mqtt.pause_reading()
            for c in self._intakes:
                c.pause_reading()
            self._paused = True
            m.READ_PAUSES.inc()
        self._has_data.set()

    # -- writing ---------------------------------------------------------------------------------------
    async def flush_loop(self, stop: asyncio.Event) -> None:
        max_age = self.settings.batch.max_age_ms / 1000
        last_housekeeping = time.monotonic()
        while True:
            if not self._buffer:
                if stop.is_set():
                    return
                self._has_data.clear()
                await wait_or_stop(self._has_data, stop)
                continue
            if self.give_up.is_set():
                return  # what is buffered stays unacknowledged
            remaining = self._first_at + max_age - time.monotonic()
            if remaining > 0 and not self._full.is_set() and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._full.wait()
            self._committing, self._buffer = self._buffer, []
            self._buffer_bytes = 0
            self._full.clear()
            if not await self._commit(self._committing):
                return
            self._committing = []
            if time.monotonic() - last_housekeeping > HOUSEKEEPING_EVERY:
                last_housekeeping = time.monotonic()
                await self._housekeeping()

    async def _commit(self, items: list[Item]) -> bool:
        """Write ``items`` in one transaction, reconnecting and retrying until it works; False if
        :attr:`give_up` came first (nothing acknowledged)."""
        backoff = Backoff(first=0.2, cap=5.0)
        while True:
            t0 = time.perf_counter()
            try:
                res = await self.writer.write(items, stop=self.give_up)
                break
            except DbStopped:
                log.error("drain deadline: batch of %d messages given up (statement cancelled), left "
                          "unacknowledged for redelivery", len(items))
                return False
            except DbError as exc:
                m.DB_ERRORS.inc()
                log.warning("batch of %d messages not committed (%s); reconnecting and retrying", len(items), exc)
                if await backoff.wait(self.give_up) or not await self.writer.reconnect(self.give_up):
                    log.error("drain deadline: database still unavailable; a batch of %d messages left "
                              "unacknowledged for redelivery", len(items))
                    return False
        self._committed(items, res, time.perf_counter() - t0)
        return True

    def _committed(self, items: list[Item], res: WriteResult, elapsed: float) -> None:
        if self.mqtt:
            for it in items:  # stored, duplicate or dead letter: all committed
                ack = it.ack
                if type(ack) is Message:
                    self.mqtt.ack(ack)
                elif callable(ack):  # a message of another client (the Sparkplug host's) is acked on it
                    ack()
        self._confirm(items)
        self._pending_points -= sum(it.rows for it in items)
        self._pending_bytes -= sum(len(it.payload) for it in items)
        m.PENDING_POINTS.set(self._pending_points)
        m.PENDING_BYTES.set(self._pending_bytes)
        b = self.settings.batch
        if (self._paused and not self.stopping and self.mqtt and self._pending_points < b.max_pending_points // 2
                and self._pending_bytes < b.max_pending_bytes // 2):
            self.mqtt.resume_reading()
            for c in self._intakes:
                c.resume_reading()
            self._paused = False
        m.MESSAGES.labels("stored").inc(res.stored_messages)
        m.MESSAGES.labels("duplicate").inc(res.duplicate_messages)
        m.MESSAGES.labels("dead_letter").inc(res.dead_letters)
        m.DEAD_LETTERS.inc(res.dead_letters)
        m.POINTS_STORED.inc(res.points)
        m.WINDOWS_STORED.inc(res.windows)
        m.ALARM_EVENTS_STORED.inc(res.events)
        m.ALARM_EVENTS_REPEATED.inc(res.repeated_events)
        m.PARTITIONS_CREATED.inc(res.partitions)
        m.BATCH_POINTS.observe(res.points)
        m.COPY_SECONDS.observe(res.copy_seconds)
        m.COMMIT_SECONDS.observe(elapsed)
        self.totals["points"] += res.points
        self.totals["windows"] += res.windows
        self.totals["events"] += res.events
        self.totals["messages"] += res.stored_messages
        self.totals["duplicates"] += res.duplicate_messages
        self.totals["dead_letters"] += res.dead_letters
        if res.duplicate_messages:
            log.info("%d redelivered message(s) skipped (already stored)", res.duplicate_messages)

    def _confirm(self, items: list[Item]) -> None:
        """Publish the committed seqs to each gateway, one ack per (gateway, run); never waits: an ack
        that cannot go now is counted, and the gateway re-sends the batch and gets it next time."""
        runs: dict[tuple[str, int], list[int]] = {}
        for it in items:
            d = it.delivery
            if d is not None:
                runs.setdefault((d[0], d[1]), []).append(d[2])
        for (gateway, run), seqs in runs.items():
            try:
                topic = ack_topic(gateway, self.settings.topic_root)
                payloads = encode_acks(run, seqs)
            except ContractError as exc:  # the decoders validated the gateway id; defensive
                log.warning("no ack for gateway %s: %s", gateway[:130], bounded_text(str(exc)))
                continue
            for payload in payloads:
                fut = None
                if self.mqtt is not None:
                    try:
                        fut = self.mqtt.publish_nowait(topic, payload, qos=1)
                    except MqttError as exc:
                        log.warning("ack to %s not sent: %s", bounded(topic), exc)
                if fut is None:
                    m.ACKS_UNSENT.inc()
                    self.totals["acks_unsent"] += 1
                else:
                    m.ACKS_SENT.inc()
                    self.totals["acks_sent"] += 1
                    fut.add_done_callback(_ack_done)

    async def _housekeeping(self) -> None:
        try:
            expired = await self.writer.expire_digests(stop=self.give_up)
        except DbError as exc:
            log.warning("housekeeping failed: %s", exc)
            return
        if expired:
            log.info("expired %d message digests", expired)


def _ack_done(fut: asyncio.Future[int]) -> None:
    if fut.cancelled() or fut.exception() is not None:  # retrieved: a stopped client fails its futures
        return
    if fut.result() == NO_MATCHING_SUBSCRIBERS:
        m.ACKS_UNHEARD.inc()


async def _finish(task: asyncio.Task[None], at: float) -> None:
    """Let ``task`` end by loop time ``at``; then cancel it (again, if it does not end at once)."""
    loop = asyncio.get_running_loop()
    await asyncio.wait({task}, timeout=max(0.0, at - loop.time()))
    for _ in range(3):
        if task.done():
            return
        log.error("%s still running at the drain deadline: cancelled", task.get_name())
        task.cancel()
        await asyncio.wait({task}, timeout=pg.CANCEL_GRACE)


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Run one ingestion worker until ``stop`` (or SIGTERM/SIGINT)."""
    if stop is None:
        stop = asyncio.Event()
        install_stop_signals(stop)
    wid = settings.worker_id
    mqtt: MqttClient | None = None
    writer = Writer(settings.db, worker=wid)
    # ops first: while the database is unreachable, /healthz answers and /readyz says why not ready
    ops = OpsServer(settings.ops, checks={"mqtt": lambda: mqtt is not None and mqtt.connected,
                                          "db": lambda: writer.ready})
    await ops.start()
    try:
        state = await writer.open(stop)
    except PermanentError as exc:
        log.error("%s", exc)
        await ops.close()
        return 2
    if state is None:
        log.info("ingestion stopped before the historian was ready")
        await ops.close()
        return 0
    log.info("historian ready (%s)", "TimescaleDB hypertable" if state.timescale else "plain PostgreSQL")
    ingestor = Ingestor(settings, writer)
    root = settings.topic_root
    subscriptions = [(f"$share/{settings.share_group}/{f(root)}", 1)
                     for f in (batch_filter, windows_filter, events_filter)]
    # no session kept (the default): nothing waits in the broker for a worker that is gone; gateways
    # re-send what was not confirmed (see Settings.session_expiry)
    mqtt = MqttClient(settings.mqtt, client_id=settings.client_id, subscriptions=subscriptions,
                      on_message=ingestor.on_message, clean_start=settings.session_expiry == 0,
                      session_expiry=settings.session_expiry, manual_ack=True)
    ingestor.mqtt = mqtt
    mqtt_stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    drain_started: float | None = None
    give_up_timer: asyncio.TimerHandle | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            mqtt_task = tg.create_task(mqtt.run_loop(mqtt_stop), name=f"ingestion[{wid}].mqtt_loop")
            flush = tg.create_task(ingestor.flush_loop(stop), name=f"ingestion[{wid}].flush_loop")
            upkeep = None if state.timescale else tg.create_task(
                Upkeep(settings.db, worker=wid).run(stop), name=f"ingestion[{wid}].upkeep")
            # the Sparkplug host, when this worker is elected: pauses at stop, closes at mqtt_stop (after the flush)
            sparkplug = tg.create_task(SparkplugHost(settings, ingestor).run(stop, mqtt_stop),
                                       name=f"ingestion[{wid}].sparkplug") if settings.sparkplug.enabled else None
            await stop.wait()
            drain_started = time.monotonic()
            deadline = loop.time() + settings.drain_deadline
            ingestor.stopping = True
            mqtt.pause_reading()  # stop intake; flush_loop writes what is buffered, then returns
            give_up_timer = loop.call_at(deadline - GIVE_UP_RESERVE, ingestor.give_up.set)
            await _finish(flush, deadline - MQTT_CLOSE_RESERVE)
            if upkeep is not None:  # stopped by ``stop`` itself, its statement cancelled: a moment
                await _finish(upkeep, deadline - MQTT_CLOSE_RESERVE)
            mqtt_stop.set()  # owed PUBACKs and acks are flushed before DISCONNECT (MqttClient._shutdown)
            await _finish(mqtt_task, deadline)
            if sparkplug is not None:  # its offline STATE, then DISCONNECT
                await _finish(sparkplug, deadline)
    finally:
        if give_up_timer is not None:
            give_up_timer.cancel()
        await ops.close()
        await writer.close()
    t = ingestor.totals
    drain = time.monotonic() - drain_started if drain_started is not None else 0.0
    log.info("ingestion stopped after %.0fs (drain %.1fs): %d points, %d windows and %d alarm events in %d "
             "messages stored, %d duplicate messages skipped, %d duplicate points dropped, %d dead letters, %d "
             "acks sent, %d not sent; %d messages left unacknowledged for redelivery", time.monotonic() - started,
             drain, t["points"], t["windows"], t["events"], t["messages"], t["duplicates"], t["duplicate_points"],
             t["dead_letters"], t["acks_sent"], t["acks_unsent"], ingestor.unacknowledged)
    return 0
