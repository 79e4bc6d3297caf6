"""The normalizer daemon: values that do not come from our gateway, through the gateway's per-tag rules,
out as normalized batches, windows and alarm events.

Intake (:meth:`Normalizer.on_message`, called on the loop for every message): decode
(:mod:`normalizer.source`), check against the devices file, apply the device's
:class:`normalizer.DeviceRules` and add what comes out to the device's outgoing buffer; a refused
message becomes a dead letter instead, and nothing raised while handling one message escapes it.
``normalizer[<id>].flush_loop`` publishes each buffer after ``linger_ms`` (or once it is full), QoS 1,
numbered ``(gw=<normalizer id>, run, seq)``.

Two broker connections: the input one (shared subscriptions, manual acks, the session that outlives
us) and the output one (publishes). Backpressure stops reading the input connection; the PUBACKs
that let us acknowledge input arrive on the other, so stopping reading never starves them.

No loss between input and output: an input message is acknowledged to the broker (manual ack) only
once every output message holding anything derived from it (its points, the windows and alarm events
its readings closed, or its dead letter) has been PUBACKed, and in the order messages arrived. What is
not acknowledged when the process dies is redelivered by the broker (the session outlives us:
``session_expiry``) and normalized again: output may repeat, never miss. At ``max_pending``
unacknowledged messages reading stops (backpressure), and resumes below half.

Shutdown, within ``drain_deadline``: stop reading → close the open windows → publish every buffer →
wait for the PUBACKs and acknowledge → DISCONNECT → summary.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from functools import partial
from typing import Any

from nexus.mqtt import NO_MATCHING_SUBSCRIBERS, Message, MqttClient, MqttError
from nexus.ops import OpsServer
from nexus.report import bounded, bounded_traceback, describe
from nexus.runtime import install_stop_signals, wait_first
from normalizer import metrics as m
from normalizer.devices import DeviceDef, DevicesError, load_devices
from normalizer.outbox import Encoder, Outgoing, Publication
from normalizer.rules import DeviceRules
from normalizer.settings import Settings
from normalizer.source import InputError, Source, encode_dead_letter, prepare
from proto import ContractError, ack_topic, encode_acks
from proto.aggregates import AlarmEvent, Window
from proto.points import DeliveryId, Point, peek_delivery_id
from proto.uns import DevicePath

log = logging.getLogger("normalizer")

#: seconds of the drain deadline kept for the owed PUBACKs to the broker and DISCONNECT
MQTT_CLOSE_RESERVE = 2.0
RETRY_FIRST, RETRY_CAP = 0.2, 5.0  #: seconds: backoff of an output message the broker refused


class Job:
    """One input message, until it is acknowledged (a :class:`normalizer.outbox.Held`)."""

    __slots__ = ("delivery", "msg", "refs")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self.refs = 0  #: buffers and output messages holding something derived from it, not yet PUBACKed
        self.delivery: DeliveryId | None = None  #: the input batch's (gw, run, seq), confirmed once done


class LogBudget:
    """At most ``burst`` lines per ``period`` seconds; the next line allowed says how many were not logged."""

    def __init__(self, burst: int = 10, period: float = 10.0) -> None:
        self.burst, self.period = burst, period
        self._start = -period
        self._used = 0
        self.skipped = 0

    def take(self) -> str | None:
        """None: do not log this one; else the suffix to log it with."""
        now = time.monotonic()
        if now - self._start >= self.period:
            self._start, self._used = now, 0
        if self._used >= self.burst:
            self.skipped += 1
            return None
        self._used += 1
        skipped, self.skipped = self.skipped, 0
        return f" ({skipped} more not logged)" if skipped else ""


class Normalizer:
    def __init__(self, settings: Settings, devices: dict[DevicePath, DeviceDef]) -> None:
        self.settings = settings
        self.devices = devices
        self.rules = {path: DeviceRules(d.tags.values()) for path, d in devices.items()}
        self.source = Source(in_root=settings.in_root, in_prefix=settings.in_prefix, batches=settings.in_batches,
                             tags=settings.in_tags, max_bytes=settings.max_message_bytes)
        self.mqtt: MqttClient | None = None  #: the input connection: subscriptions and acks
        self.out: MqttClient | None = None  #: the output connection: publishes
        #: numbers our output (gw=normalizer id, run: one per process start, seq)
        self.encoder = Encoder(gateway=settings.normalizer_id, run=int(time.time() * 1000), root=settings.out_root,
                               max_points=settings.max_batch_points)
        self._jobs: deque[Job] = deque()  # arrival order: acknowledged from the head
        self._out: dict[DevicePath, Outgoing] = {}
        self._ready: deque[Publication] = deque()  # dead letters, to publish
        self._retry: list[tuple[float, Publication]] = []  # (not before, message) refused by the broker
        self._wake = asyncio.Event()
        self._paused = False
        self.stopping = False  #: intake stopped for good: backpressure must not resume it
        self.unsettled = 0  #: output messages published and not yet PUBACKed (or failed)
        self._budget = LogBudget()
        self.totals = dict.fromkeys(("messages", "points_in", "points_out", "batches", "windows", "events",
                                     "dead_letters", "acked", "retries", "unheard"), 0)

    @property
    def unacknowledged(self) -> int:
        """Input messages received and not acknowledged (left to redelivery if we stop now)."""
        return len(self._jobs)

    # -- intake: called by the MQTT client for every message (event loop thread) ------------------------
    def on_message(self, msg: Message) -> None:
        """The message boundary: whatever goes wrong with one message makes it a dead letter."""
        job = Job(msg)
        self._jobs.append(job)
        self.totals["messages"] += 1
        m.INFLIGHT.set(len(self._jobs))
        if not self._paused and self.mqtt is not None and len(self._jobs) >= self.settings.max_pending:
            self.mqtt.pause_reading()
            self._paused = True
            m.READ_PAUSES.inc()
        kind = self.source.kind(msg.topic)
        m.MESSAGES_IN.labels(kind).inc()
        try:
            self._normalize(job)
        except InputError as exc:
            self._dead_letter(job, kind, exc.kind, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug met by one message must not stop the daemon
            if self._budget.take() is not None:
                log.error("unexpected error on a message: %s", bounded_traceback(exc),
                          extra={"topic": bounded(msg.topic)})
            self._dead_letter(job, kind, "unexpected", describe(exc))
        if job.refs == 0:  # nothing came out (inside a deadband): done at once
            self._ack_ready()

    def _normalize(self, job: Job) -> None:
        d = self.source.decode(job.msg.topic, job.msg.payload, int(time.time() * 1000))
        m.POINTS_IN.inc(len(d.points))
        self.totals["points_in"] += len(d.points)
        if d.duplicates:
            m.DUPLICATE_POINTS.inc(d.duplicates)
        points = prepare(self.devices.get(d.device), d.points)
        rules = self.rules.get(d.device)
        windows: list[Window] = []
        events: list[AlarmEvent] = []
        if rules is not None:
            try:
                points = rules.apply(points)
            except BaseException:
                rules.take()  # what this message half-produced goes with its dead letter
                raise
            windows, events = rules.take()
        job.delivery = d.delivery
        if points or windows or events:
            self._add(d.device, points, windows, events, job)

    def _add(self, device: DevicePath, points: list[Point], windows: list[Window], events: list[AlarmEvent],
             job: Job | None) -> None:
        o = self._out.get(device)
        if o is None:
            o = self._out[device] = Outgoing(device, time.monotonic())
            self._wake.set()  # the flush loop arms its timer for it
        o.add(points, windows, events, job)
        if len(o.points) >= self.settings.max_batch_points:
            self._wake.set()

    def _dead_letter(self, job: Job, kind: str, why: str, reason: str) -> None:
        msg = job.msg
        m.DEAD_LETTERS.labels(why).inc()
        self.totals["dead_letters"] += 1
        suffix = self._budget.take()
        if suffix is not None:
            log.warning("dead letter (%s): %s%s", why, bounded(reason), suffix, extra={"topic": bounded(msg.topic)})
        if kind == "batch":  # a refused batch is confirmed too, or its gateway would re-send it forever
            job.delivery = peek_delivery_id(msg.payload)
        s = self.settings
        payload = encode_dead_letter(normalizer=s.normalizer_id, topic=msg.topic, payload=msg.payload, kind=why,
                                     reason=reason, ts=int(time.time() * 1000), keep=s.dead_letter_payload_bytes)
        job.refs += 1
        self._ready.append(Publication(s.dead_letter_topic, payload, [job], "deadletter", 1))
        self._wake.set()

    def stop_intake(self) -> None:
        """Shutdown: read no more, and close every open window (as not complete) for the last publish."""
        self.stopping = True
        if self.mqtt is not None:
            self.mqtt.pause_reading()
        for device, rules in self.rules.items():
            rules.flush()
            windows, events = rules.take()
            if windows or events:
                self._add(device, [], windows, events, None)
        self._wake.set()

    # -- output -----------------------------------------------------------------------------------------
    async def flush_loop(self, stop: asyncio.Event) -> None:
        """Publish dead letters at once and each device's buffer when due; after ``stop``, everything,
        and return once every output message is PUBACKed."""
        linger = self.settings.linger_ms / 1000
        full = self.settings.max_batch_points
        while True:
            self._wake.clear()  # before the work: a wake-up during an await below is not lost
            final = stop.is_set()
            now = time.monotonic()
            if self._retry:
                due = [r for r in self._retry if r[0] <= now]
                self._retry = [r for r in self._retry if r[0] > now]
                self._ready.extend(pub for _, pub in due)
            while self._ready:
                await self._publish(self._ready.popleft())
            for device in list(self._out):
                o = self._out[device]
                if final or len(o.points) >= full or now - o.since >= linger:
                    del self._out[device]
                    for pub in self.encoder.encode(o):
                        await self._publish(pub)
            if final and not self._out and not self._ready and not self._retry and not self.unsettled:
                return
            dues = [o.since + linger for o in self._out.values()] + [t for t, _ in self._retry]
            timeout = max(0.0, min(dues) - time.monotonic()) if dues else None
            await wait_first(self._wake.wait(), *([] if final else [stop.wait()]), timeout=timeout)

    async def _publish(self, pub: Publication) -> None:
        assert self.out is not None
        try:
            fut = await self.out.publish(pub.topic, pub.payload, qos=1)  # waits for room in the window
        except MqttError as exc:
            if exc.reason != "stopped":  # paho refused it (e.g. too large for the connection): try again later
                self._again(pub, exc)
            return  # stopped: its input stays unacknowledged, for redelivery
        self.unsettled += 1
        fut.add_done_callback(partial(self._settled, pub))

    def _settled(self, pub: Publication, fut: asyncio.Future[int]) -> None:
        self.unsettled -= 1
        if not self.unsettled:
            self._wake.set()
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            if not (isinstance(exc, MqttError) and exc.reason == "stopped"):
                self._again(pub, exc)
            return
        if fut.result() == NO_MATCHING_SUBSCRIBERS:
            m.UNHEARD.labels(pub.stream).inc()
            self.totals["unheard"] += 1
        m.MESSAGES_OUT.labels(pub.stream).inc()
        t = self.totals
        if pub.stream == "batch":
            m.POINTS_OUT.inc(pub.count)
            t["batches"] += 1
            t["points_out"] += pub.count
        elif pub.stream == "windows":
            m.WINDOWS_OUT.inc(pub.count)
            t["windows"] += pub.count
        elif pub.stream == "events":
            m.EVENTS_OUT.inc(pub.count)
            t["events"] += pub.count
        for job in pub.jobs:
            job.refs -= 1
        self._ack_ready()

    def _again(self, pub: Publication, exc: BaseException) -> None:
        """Publish ``pub`` again after a backoff: its input stays unacknowledged until it is PUBACKed."""
        m.PUBLISH_RETRIES.inc()
        self.totals["retries"] += 1
        ceiling = min(RETRY_CAP, RETRY_FIRST * 2 ** pub.attempts)
        pub.attempts += 1
        if self._budget.take() is not None:
            log.warning("%s message to %s refused (%s); again in up to %.1fs", pub.stream, bounded(pub.topic),
                        describe(exc), ceiling)
        self._retry.append((time.monotonic() + random.uniform(ceiling / 2, ceiling), pub))
        self._wake.set()

    # -- acknowledgement ----------------------------------------------------------------------------------
    def _ack_ready(self) -> None:
        """Acknowledge, in arrival order, every input message whose output is all PUBACKed."""
        jobs, mqtt = self._jobs, self.mqtt
        confirms: dict[tuple[str, int], list[int]] = {}
        done = 0
        while jobs and jobs[0].refs == 0:
            job = jobs.popleft()
            done += 1
            if mqtt is not None:
                mqtt.ack(job.msg)  # a message of an earlier connection is not acked: the broker redelivers it
            if job.delivery is not None:
                gw, run, seq = job.delivery
                confirms.setdefault((gw, run), []).append(seq)
        if not done:
            return
        m.ACKED.inc(done)
        self.totals["acked"] += done
        m.INFLIGHT.set(len(jobs))
        if (self._paused and not self.stopping and mqtt is not None
                and len(jobs) <= self.settings.max_pending // 2):
            mqtt.resume_reading()
            self._paused = False
        if confirms:
            self._confirm(confirms)

    def _confirm(self, runs: dict[tuple[str, int], list[int]]) -> None:
        """Confirm input batches that asked for it (``gw``) to their gateway, as ingestion would: never
        waits; a confirmation that cannot go now is counted, and the gateway re-sends (a duplicate)."""
        for (gateway, run), seqs in runs.items():
            try:
                topic = ack_topic(gateway, self.settings.in_root)
                payloads = encode_acks(run, seqs)
            except ContractError:  # the decoder validated the gateway id; defensive
                continue
            for payload in payloads:
                fut = None
                if self.out is not None:
                    try:
                        fut = self.out.publish_nowait(topic, payload, qos=1)
                    except MqttError:
                        fut = None
                m.CONFIRMS.labels("unsent" if fut is None else "sent").inc()
                if fut is not None:
                    fut.add_done_callback(_retrieve)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: a stopped client fails its futures


async def _finish(task: asyncio.Task[None], at: float) -> None:
    """Let ``task`` end by loop time ``at``; then cancel it."""
    loop = asyncio.get_running_loop()
    await asyncio.wait({task}, timeout=max(0.0, at - loop.time()))
    if not task.done():
        log.error("%s still running at the drain deadline: cancelled", task.get_name())
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> int:
    """Run one normalizer until ``stop`` (or SIGTERM/SIGINT)."""
    if stop is None:
        stop = asyncio.Event()
        install_stop_signals(stop)
    try:
        devices = load_devices(settings.devices_file) if settings.devices_file is not None else {}
    except DevicesError as exc:
        log.error("devices file %s refused: %s", settings.devices_file, exc, extra={"field": exc.field})
        return 2
    nid = settings.normalizer_id
    nz = Normalizer(settings, devices)
    log.info("%d devices with %d tags from %s; other tags pass through unchanged", len(devices),
             sum(len(d.tags) for d in devices.values()), settings.devices_file or "no devices file")
    subscriptions = [(f"$share/{settings.share_group}/{f}", 1) for f in settings.input_filters()]
    mqtt = MqttClient(settings.mqtt, client_id=settings.client_id, subscriptions=subscriptions,
                      on_message=nz.on_message, clean_start=settings.session_expiry == 0,
                      session_expiry=settings.session_expiry, manual_ack=True)
    # no session: what is not PUBACKed is in paho's memory and sent again on reconnect; at a crash, its
    # input is unacknowledged and comes back through the input session
    out = MqttClient(settings.mqtt, client_id=f"{settings.client_id}-out")
    nz.mqtt, nz.out = mqtt, out
    ops = OpsServer(settings.ops, checks={"mqtt": lambda: mqtt.connected, "mqtt_out": lambda: out.connected})
    await ops.start()
    mqtt_stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    drain_started: float | None = None
    try:
        async with asyncio.TaskGroup() as tg:
            mqtt_task = tg.create_task(mqtt.run_loop(mqtt_stop), name=f"normalizer[{nid}].mqtt_loop")
            out_task = tg.create_task(out.run_loop(mqtt_stop), name=f"normalizer[{nid}].publish_mqtt_loop")
            flush = tg.create_task(nz.flush_loop(stop), name=f"normalizer[{nid}].flush_loop")
            await stop.wait()
            drain_started = time.monotonic()
            deadline = loop.time() + settings.drain_deadline
            nz.stop_intake()  # flush_loop publishes what is buffered, waits for its PUBACKs, returns
            await _finish(flush, deadline - MQTT_CLOSE_RESERVE)
            mqtt_stop.set()  # owed PUBACKs to the broker go out before DISCONNECT (MqttClient._shutdown)
            await _finish(mqtt_task, deadline)
            await _finish(out_task, deadline)
    finally:
        await ops.close()
    t = nz.totals
    drain = time.monotonic() - drain_started if drain_started is not None else 0.0
    log.info("normalizer stopped after %.0fs (drain %.1fs): %d messages in (%d points), %d acknowledged; %d points "
             "out in %d batches, %d windows, %d alarm events; %d dead letters, %d publish retries, %d output "
             "messages nobody subscribed to; %d messages left unacknowledged for redelivery",
             time.monotonic() - started, drain, t["messages"], t["points_in"], t["acked"], t["points_out"],
             t["batches"], t["windows"], t["events"], t["dead_letters"], t["retries"], t["unheard"],
             nz.unacknowledged)
    return 0
