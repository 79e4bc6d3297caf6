"""Per-device poll loop: connect, read every interval, hand a batch to the publish queue.

Backpressure: if the publish queue is full when a poll is due, the poll is skipped and counted
(``nexus_gateway_skipped_polls_total{why="queue_full"}``); nothing already read is ever dropped.
A device that is down gets all its tags published with BAD quality and the reason, at every
reconnect attempt; they are GOOD again with the first successful read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from gateway import metrics as m
from gateway.config import DeviceConfig
from gateway.errors import TemporaryError
from gateway.modbus import ModbusDriver
from nexus.runtime import Backoff, sleep_or_stop
from proto.points import Point, Status

log = logging.getLogger("gateway.poller")


@dataclass(frozen=True, slots=True)
class DeviceBatch:
    device: DeviceConfig
    points: list[Point]


class DevicePoller:
    def __init__(self, device: DeviceConfig, queue: asyncio.Queue[DeviceBatch]) -> None:
        self.device = device
        self.queue = queue
        self.driver = ModbusDriver(device)
        self.polls = 0
        self.skipped = 0
        self._up = False
        self._last: dict[str, tuple[object, int]] = {}  # tag -> (value, status) last reported, for deadbands
        self._transforms = {t.name: t.transform for t in device.tags}

    async def poll_loop(self, stop: asyncio.Event) -> None:
        d = self.device
        interval = d.interval_ms / 1000
        backoff = Backoff(first=min(0.5, interval), cap=max(interval, 5.0))
        next_due = time.monotonic()
        m.DEVICE_UP.labels(d.id).set(0)
        try:
            while not stop.is_set():
                if not self.driver.connected:
                    try:
                        await self.driver.connect()
                        backoff.reset()
                        self._set_up(True)
                    except TemporaryError as exc:
                        self._fail(exc, Status.BAD_NOT_CONNECTED)
                        if await backoff.wait(stop):
                            return
                        next_due = time.monotonic()
                        continue
                if self.queue.full():
                    self.skipped += 1
                    m.SKIPPED_POLLS.labels(d.id, "queue_full").inc()
                else:
                    t0 = time.perf_counter()
                    try:
                        points = await self.driver.read()
                    except TemporaryError as exc:
                        self._fail(exc, Status.BAD_TIMEOUT if "timed out" in str(exc) else Status.BAD_COMMUNICATION_ERROR)
                        continue
                    m.POLL_SECONDS.labels(d.id).observe(time.perf_counter() - t0)
                    m.POLLS.labels(d.id).inc()
                    self.polls += 1
                    self._emit(points)
                next_due += interval
                now = time.monotonic()
                if next_due < now:  # the poll overran its interval: skip the missed slots, count them
                    missed = int((now - next_due) / interval) + 1
                    self.skipped += missed
                    m.SKIPPED_POLLS.labels(d.id, "overrun").inc(missed)
                    next_due += missed * interval
                if await sleep_or_stop(next_due - now, stop):
                    return
        finally:
            self.driver.close()
            m.DEVICE_UP.labels(d.id).set(0)

    def _set_up(self, up: bool) -> None:
        if up != self._up:
            log.info("device %s", "connected" if up else "disconnected", extra={"device": self.device.id})
        self._up = up
        m.DEVICE_UP.labels(self.device.id).set(1 if up else 0)

    def _fail(self, exc: Exception, status: int) -> None:
        m.READ_ERRORS.labels(self.device.id).inc()
        if self._up:
            log.warning("device read failed: %s", exc, extra={"device": self.device.id})
        self._set_up(False)
        self._emit(self.driver.bad_points(status, str(exc)))

    def _emit(self, points: list[Point]) -> None:
        """Queue the points that changed beyond their deadband (all of them without deadbands)."""
        out = []
        last = self._last
        for p in points:
            prev = last.get(p.tag)
            if prev is not None and prev[1] == p.status:
                tr = self._transforms.get(p.tag)
                if tr is not None and tr.deadband and isinstance(p.value, (int, float)) and \
                        isinstance(prev[0], (int, float)) and not tr.changed(prev[0], p.value):  # type: ignore[arg-type]
                    continue
            last[p.tag] = (p.value, p.status)
            out.append(p)
        if not out:
            return
        try:
            self.queue.put_nowait(DeviceBatch(self.device, out))
        except asyncio.QueueFull:  # only bad-quality reports can race here; count them, never drop silently
            self.skipped += 1
            m.SKIPPED_POLLS.labels(self.device.id, "queue_full").inc()
        m.QUEUE_DEPTH.set(self.queue.qsize())
