"""The ingestion worker: shared subscription → decode on arrival → batch → COPY → commit → ack.

Tasks (one TaskGroup): ``ingestion[<id>].mqtt_loop`` keeps the broker session, ``.flush_loop``
writes batches. Shutdown: stop reading → final batch under a deadline → ack → disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg

from ingestion import metrics as m
from ingestion.errors import PermanentError
from ingestion.schema import migrate
from ingestion.settings import DbSettings, Settings
from ingestion.writer import Item, Writer, decode_item
from nexus import pg
from nexus.mqtt import Message, MqttClient
from nexus.ops import OpsServer
from nexus.runtime import Backoff, install_stop_signals, wait_or_stop
from proto.uns import batch_filter

log = logging.getLogger("ingestion")

SHUTDOWN_DEADLINE = 15.0  #: seconds for the final batch at shutdown
HOUSEKEEPING_EVERY = 600.0  #: seconds between deletions of expired message digests


async def connect_db(db: DbSettings, stop: asyncio.Event) -> psycopg.AsyncConnection | None:
    """Connect with capped backoff until it works or ``stop`` is set."""
    return await pg.connect(db.dsn, connect_timeout=db.connect_timeout, stop=stop)


class Ingestor:
    def __init__(self, settings: Settings, conn: psycopg.AsyncConnection) -> None:
        self.settings = settings
        self.writer = Writer(conn, worker=settings.worker_id)
        self.mqtt: MqttClient | None = None
        self.db_ok = True
        self._buffer: list[Item] = []
        self._pending_points = 0
        self._first_at = 0.0
        self._has_data = asyncio.Event()
        self._full = asyncio.Event()
        self._paused = False
        self._flush_messages = max(1, settings.mqtt.max_inflight // 2)
        self.totals = {"points": 0, "messages": 0, "duplicates": 0, "dead_letters": 0}

    # called by the MQTT client for every message (event loop thread)
    def on_message(self, msg: Message) -> None:
        item = decode_item(msg.topic, msg.payload, root=self.settings.topic_root, ack=msg)
        if not self._buffer:
            self._first_at = time.monotonic()
        self._buffer.append(item)
        self._pending_points += item.points
        m.POINTS_IN.inc(item.points)
        m.PENDING_POINTS.set(self._pending_points)
        if item.error:
            log.warning("dead letter: %s", item.error, extra={"topic": msg.topic})
        if self._pending_points >= self.settings.batch.max_points or len(self._buffer) >= self._flush_messages:
            self._full.set()
        if self._pending_points >= self.settings.batch.max_pending_points and not self._paused and self.mqtt:
            self.mqtt.pause_reading()
            self._paused = True
            m.READ_PAUSES.inc()
        self._has_data.set()

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
            remaining = self._first_at + max_age - time.monotonic()
            if remaining > 0 and not self._full.is_set() and not stop.is_set():
                try:
                    async with asyncio.timeout(remaining):
                        await self._full.wait()
                except TimeoutError:
                    pass
            items, self._buffer = self._buffer, []
            self._full.clear()
            await self._commit(items, stop)
            if time.monotonic() - last_housekeeping > HOUSEKEEPING_EVERY:
                last_housekeeping = time.monotonic()
                await self._housekeeping()

    async def _commit(self, items: list[Item], stop: asyncio.Event) -> None:
        backoff = Backoff(first=0.2, cap=5.0)
        deadline = None
        while True:
            t0 = time.perf_counter()
            try:
                res = await self.writer.write(items)
                break
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self.db_ok = False
                m.DB_ERRORS.inc()
                log.warning("batch not committed (%s); reconnecting and retrying", str(exc).strip())
                if stop.is_set():
                    deadline = deadline or time.monotonic() + SHUTDOWN_DEADLINE
                    if time.monotonic() > deadline:
                        log.error("giving up on %d messages at shutdown; the broker will redeliver them", len(items))
                        return
                await asyncio.sleep(backoff.next_delay())
                conn = await connect_db(self.settings.db, asyncio.Event())
                if conn is not None:
                    await self.writer.conn.close()
                    self.writer.conn = conn
        self.db_ok = True
        elapsed = time.perf_counter() - t0
        # committed: acknowledge every message of the batch (stored, duplicate or dead letter)
        if self.mqtt:
            for it in items:
                self.mqtt.ack(it.ack)  # type: ignore[arg-type]
        flushed = sum(it.points for it in items)
        self._pending_points -= flushed
        m.PENDING_POINTS.set(self._pending_points)
        if self._paused and self._pending_points < self.settings.batch.max_pending_points // 2 and self.mqtt:
            self.mqtt.resume_reading()
            self._paused = False
        m.MESSAGES.labels("stored").inc(res.stored_messages)
        m.MESSAGES.labels("duplicate").inc(res.duplicate_messages)
        m.MESSAGES.labels("dead_letter").inc(res.dead_letters)
        m.DEAD_LETTERS.inc(res.dead_letters)
        m.POINTS_STORED.inc(res.points)
        m.BATCH_POINTS.observe(res.points)
        m.COPY_SECONDS.observe(res.copy_seconds)
        m.COMMIT_SECONDS.observe(elapsed)
        self.totals["points"] += res.points
        self.totals["messages"] += res.stored_messages
        self.totals["duplicates"] += res.duplicate_messages
        self.totals["dead_letters"] += res.dead_letters
        if res.duplicate_messages:
            log.info("%d redelivered message(s) skipped (already stored)", res.duplicate_messages)

    async def _housekeeping(self) -> None:
        try:
            cur = await self.writer.conn.execute(
                "DELETE FROM nexus.ingested_messages WHERE ingested_at < now() - make_interval(hours => %s)",
                (self.settings.db.dedup_window_hours,))
            if cur.rowcount:
                log.info("expired %d message digests", cur.rowcount)
        except psycopg.Error as exc:
            log.warning("housekeeping failed: %s", exc)


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Run one ingestion worker until ``stop`` (or SIGTERM/SIGINT)."""
    if stop is None:
        stop = asyncio.Event()
        install_stop_signals(stop)
    wid = settings.worker_id
    mqtt: MqttClient | None = None
    ingestor: Ingestor | None = None
    # ops first: while the database is unreachable, /healthz answers and /readyz says why not ready
    ops = OpsServer(settings.ops, checks={"mqtt": lambda: mqtt is not None and mqtt.connected,
                                          "db": lambda: ingestor is not None and ingestor.db_ok})
    await ops.start()
    conn = await connect_db(settings.db, stop)
    if conn is None:
        await ops.close()
        return 0
    try:
        state = await migrate(conn, retention_days=settings.db.retention_days,
                              compress_after_days=settings.db.compress_after_days)
    except PermanentError as exc:
        log.error("%s", exc)
        await ops.close()
        return 2
    log.info("historian ready (%s)", "TimescaleDB hypertable" if state.timescale else "plain PostgreSQL")
    ingestor = Ingestor(settings, conn)
    group = f"$share/{settings.share_group}/{batch_filter(settings.topic_root)}"
    mqtt = MqttClient(settings.mqtt, client_id=settings.client_id, subscriptions=[(group, 1)],
                      on_message=ingestor.on_message, clean_start=False,
                      session_expiry=settings.session_expiry, manual_ack=True)
    ingestor.mqtt = mqtt
    mqtt_stop = asyncio.Event()
    started = time.monotonic()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(mqtt.run_loop(mqtt_stop), name=f"ingestion[{wid}].mqtt_loop")
            flush = tg.create_task(ingestor.flush_loop(stop), name=f"ingestion[{wid}].flush_loop")
            await stop.wait()
            mqtt.pause_reading()  # stop intake; flush_loop writes what is buffered, then returns
            await flush
            mqtt_stop.set()
    finally:
        await ops.close()
        await conn.close()
    log.info("ingestion stopped after %.0fs: %d points in %d messages stored, %d duplicates skipped, "
             "%d dead letters", time.monotonic() - started, ingestor.totals["points"], ingestor.totals["messages"],
             ingestor.totals["duplicates"], ingestor.totals["dead_letters"])
    return 0

