"""One device's loops: poll it on schedule, and execute write commands, over one reused connection.

Scheduling: polls start every ``interval_ms`` plus a random 0..``jitter_pct`` % delay, so devices do not poll in
step. A poll needs a slot of the gateway's bounded :class:`PollPool`; a poll that cannot start within one interval,
or whose results could not be queued (publish queue full), is skipped and counted
(``nexus_gateway_skipped_polls_total{why}``), never queued up. Nothing already read is ever dropped.

Failures: every failed connect or read reports all tags BAD with the reason, and feeds the device's
:class:`CircuitBreaker`; while it is open the device is left alone, then probed once. Tags are GOOD again with the
first successful read. An unexpected exception from the driver (a bug, not a :class:`TemporaryError`) is handled the
same way, status BAD_INTERNAL_ERROR, reason ``driver error in <op>: <type>: <bounded message>``, its traceback logged
once per cause. A lost connection is logged once, with its cause, at WARNING; so is the first failed reconnect.
The device's loops never end before ``stop``: one that does (a bug outside these guards) raises, which ends
:meth:`DevicePoller.run` with the reason, for the fleet to report and restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway import metrics as m
from gateway.breaker import CircuitBreaker
from gateway.config import DeviceConfig, TagConfig
from gateway.drivers import make_driver
from gateway.drivers.base import Driver
from gateway.errors import GatewayError, PermanentError, TemporaryError
from gateway.pollstats import PollStats
from gateway.readings import DeviceBatch, Readings
from nexus.report import bounded_traceback, cause_of, describe
from nexus.runtime import sleep_or_stop, wait_first
from normalizer import DeviceRules
from proto.points import Point, Status, brief

log = logging.getLogger("gateway.poller")

TRACEBACK_CAUSES_MAX = 20  #: distinct unexpected causes logged with their traceback, per device

class PollPool:
    """At most ``size`` polls in flight across the gateway (the bounded worker pool)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._sem = asyncio.Semaphore(size)

    async def acquire(self, wait: float) -> bool:
        try:
            async with asyncio.timeout(wait):
                await self._sem.acquire()
            return True
        except TimeoutError:
            return False

    def release(self) -> None:
        self._sem.release()


@dataclass(slots=True)
class WriteCommand:
    """A validated write: ``raw`` is already in the device's units and type."""

    tag: TagConfig
    raw: Any
    reply: Callable[[str | None], None]  #: called once with None (written) or the error message
    queued_at: float = field(default_factory=time.monotonic)


class DevicePoller:
    def __init__(self, device: DeviceConfig, queue: Readings, *, pool: PollPool | None = None,
                 driver: Driver | None = None, spread_s: float = 0.0) -> None:
        self.device = device
        self.queue = queue
        self.pool = pool or PollPool(1)
        self.driver = driver or make_driver(device)
        self.breaker = CircuitBreaker(device.id, failures=device.breaker_failures,
                                      open_s=device.breaker_open_ms / 1000)
        self.commands: asyncio.Queue[WriteCommand] = asyncio.Queue(maxsize=device.max_pending_writes)
        self.polls = self.skipped = self.writes = 0
        self._io = asyncio.Lock()  # one request at a time on the device's connection
        self._up = False
        self._generation = 0  # connections made so far
        self._failed_generation = -1  # the connection whose failure the breaker has counted
        self._connect_warned = False  # a failed connect was logged since the last success (once per outage)
        self._causes: set[tuple[str, str, int]] = set()  # unexpected errors whose traceback was logged
        self.halted: str | None = None  #: why this poller takes no more writes (its loops ended); None while it runs
        self.rules = DeviceRules(device.tags, device.derived)  #: the tags' value rules and the deadbands' state
        self.spread_s = spread_s  #: the first poll starts at a random point of this many seconds
        self.stats = PollStats()  #: what the device's health report says (gateway/health.py)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and execute writes until ``stop``; the device's own task group. Raises when a loop
        ended before ``stop`` (a bug): the caller must say so, never carry on as if polling."""
        d = self.device.id
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._until_stop(self.poll_loop(stop), stop, "poll_loop"),
                               name=f"gateway[{d}].poll_loop")
                tg.create_task(self._until_stop(self.command_loop(stop), stop, "command_loop"),
                               name=f"gateway[{d}].command_loop")
        finally:
            await self._close_driver()

    async def _until_stop(self, loop: Coroutine[Any, Any, None], stop: asyncio.Event, what: str) -> None:
        """Run one of the device's loops; raise if it ends before ``stop``, so that its task group
        ends too (a poll loop gone while the command loop lives on would be a device silently unpolled)."""
        try:
            await loop
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():  # cancelled from outside: the group or the fleet
                raise
            # a library raised CancelledError on its own: swallowing it would end the loop unseen
            raise GatewayError(f"{what} ended by a CancelledError raised inside it", device_id=self.device.id) \
                from None
        if not stop.is_set():
            raise GatewayError(f"{what} returned before the device was stopped", device_id=self.device.id)

    async def _close_driver(self) -> None:
        try:
            await self.driver.close()
        except Exception as exc:  # noqa: BLE001 - close() must never raise; a bug here is reported, not fatal
            self._unexpected("close", exc)

    # --- polling -------------------------------------------------------------------------------

    def groups(self) -> list[tuple[float, frozenset[str] | None]]:
        """(interval s, tag names) per poll group; names None = every tag (no poll groups in use)."""
        d = self.device
        used = {t.poll_group for t in d.tags}
        if used <= {None}:
            return [(d.interval_ms / 1000, None)]
        rates = dict(d.poll_groups)
        out: list[tuple[float, frozenset[str] | None]] = []
        for group in sorted(used, key=lambda g: g or ""):
            interval = (rates[group] if group is not None else d.interval_ms) / 1000
            out.append((interval, frozenset(t.name for t in d.tags if t.poll_group == group)))
        return out

    async def poll_loop(self, stop: asyncio.Event) -> None:
        """Poll on schedule until ``stop``: one schedule per poll group, over the one connection."""
        d = self.device
        m.DEVICE_UP.labels(d.id).set(0)
        try:
            groups = self.groups()
            if len(groups) == 1:
                await self._group_loop(stop, *groups[0])
            else:
                async with asyncio.TaskGroup() as tg:
                    for i, (interval, names) in enumerate(groups):
                        what = f"poll_loop[{interval * 1000:g}ms]"
                        tg.create_task(self._until_stop(self._group_loop(stop, interval, names, leader=i == 0),
                                                        stop, what), name=f"gateway[{d.id}].{what}")
        finally:
            await self._close_driver()
            m.DEVICE_UP.labels(d.id).set(0)

    async def _group_loop(self, stop: asyncio.Event, interval: float, names: frozenset[str] | None,
                          leader: bool = True) -> None:
        """One poll schedule. Only the ``leader`` group (re)connects: one attempt and one breaker count
        per try, BAD for every tag of the device; the other groups wait for the connection."""
        jitter = interval * self.device.jitter_pct / 100
        # devices started together (gateway start, a sync) spread their polls over the interval so they
        # do not hit the network in step; a device restarted alone by a hot reload polls at once
        slot = time.monotonic() + random.uniform(0, min(self.spread_s, interval))
        due = slot
        while not stop.is_set():
            if await sleep_or_stop(due - time.monotonic(), stop):
                return
            if not self.driver.connected:
                if self._up:  # dropped between polls, without a failed request: say why, once
                    self._lost(self.driver.lost_reason() or "the driver reports the connection closed")
                if not leader or not await self._connect(stop):
                    slot = due = time.monotonic() + min(interval, 0.5)
                    continue
            await self._poll_once(interval, names)
            slot = self._next_due(slot, interval)
            due = slot + random.uniform(0, jitter)  # jitter shifts each poll, it does not slow the rate

    async def _connect(self, stop: asyncio.Event) -> bool:
        if not self.breaker.allow():
            await sleep_or_stop(self.breaker.retry_in(), stop)
            return False
        try:
            async with self._io:
                if self.driver.connected:  # another poll group connected meanwhile
                    return True
                await self.driver.connect()
        except (TemporaryError, PermanentError) as exc:
            self._fail(exc, Status.BAD_NOT_CONNECTED)
            return False
        except Exception as exc:  # noqa: BLE001 - a driver or library bug: BAD with the reason, retried like any failure
            err = self._unexpected("connect", exc)
            await self._close_driver()
            self._fail(err, Status.BAD_INTERNAL_ERROR)
            return False
        self._generation += 1
        self._connect_warned = False
        self.breaker.success()
        self._set_up(True)
        return True

    async def _poll_once(self, interval: float, names: frozenset[str] | None = None) -> None:
        d = self.device
        if self.queue.full():
            self._skip("queue_full")
            return
        if not await self.pool.acquire(interval):
            self._skip("pool_busy")
            return
        t0 = time.perf_counter()
        try:
            async with self._io:
                points = await (self.driver.read() if names is None else self.driver.read_tags(names))
        except TemporaryError as exc:
            self._fail(exc, Status.BAD_TIMEOUT if "timed out" in str(exc) else Status.BAD_COMMUNICATION_ERROR, names)
            return
        except Exception as exc:  # noqa: BLE001 - a driver bug must not end the device's polling
            err = self._unexpected("read", exc)
            await self._close_driver()  # its state is unknown: the next poll connects afresh
            self._fail(err, Status.BAD_INTERNAL_ERROR, names)
            return
        finally:
            self.pool.release()
        try:
            if not isinstance(points, list):
                raise TypeError(f"read returned a {type(points).__name__}, not a list of points")
            self._emit(points)
        except Exception as exc:  # noqa: BLE001 - what the driver returned could not be normalized
            self._fail(self._unexpected("read", exc), Status.BAD_INTERNAL_ERROR, names)
            return
        self.breaker.success()
        self._set_up(True)
        m.POLL_SECONDS.labels(d.id).observe(self.stats.ok(time.perf_counter() - t0))
        m.POLLS.labels(d.id).inc()
        self.polls += 1

    def _next_due(self, due: float, interval: float) -> float:
        due += interval
        now = time.monotonic()
        if due < now:  # the poll overran its interval: skip the missed slots, count them
            missed = int((now - due) / interval) + 1
            self.skipped += missed
            m.SKIPPED_POLLS.labels(self.device.id, "overrun").inc(missed)
            due += missed * interval
        return due

    def _skip(self, why: str) -> None:
        self.skipped += 1
        m.SKIPPED_POLLS.labels(self.device.id, why).inc()

    def _set_up(self, up: bool) -> None:
        if up and not self._up:
            log.info("device connected", extra={"device": self.device.id})
        self._up = self.stats.connected = up
        m.DEVICE_UP.labels(self.device.id).set(1 if up else 0)

    def _lost(self, cause: str) -> None:
        """The connection that was up is gone: one WARNING with its cause per loss."""
        if self._up:
            log.warning("device connection lost: %s", cause, extra={"device": self.device.id})
            m.CONNECTIONS_LOST.labels(self.device.id).inc()
        self._set_up(False)

    def _unexpected(self, op: str, exc: BaseException) -> GatewayError:
        """An exception the driver contract does not allow (a driver or library bug), turned into the
        error reported for the device; its traceback is logged once per distinct cause, not per retry."""
        d = self.device.id
        m.DRIVER_ERRORS.labels(d, op).inc()
        err = GatewayError(f"driver error in {op}: {describe(exc)}", device_id=d)
        cause = cause_of(exc)
        if cause not in self._causes and len(self._causes) < TRACEBACK_CAUSES_MAX:
            self._causes.add(cause)
            log.error("unexpected error in the driver's %s (a driver or library bug; reported BAD and retried, "
                      "logged once per cause):\n%s", op, bounded_traceback(exc), extra={"device": d})
        return err

    def _fail(self, exc: GatewayError, status: int, names: frozenset[str] | None = None) -> None:
        m.READ_ERRORS.labels(self.device.id).inc()
        self.stats.failed(str(exc))
        if self._up:
            self._lost(str(exc))
        elif not self._connect_warned:  # the first failure since the last success: later retries are quiet
            self._connect_warned = True
            log.warning("device not connected: %s (retried with backoff)", exc, extra={"device": self.device.id})
        # one breaker count per connection: poll groups sharing a connection that broke fail together
        if names is None or self._failed_generation != self._generation:
            self._failed_generation = self._generation
            self.breaker.failure()
        reason = str(exc)
        if self.breaker.state == "open":
            reason = f"{reason} (circuit open after {self.breaker.consecutive} consecutive failures)"
        bad = self.driver.bad_points(status, reason)
        self._emit(bad if names is None else [p for p in bad if p.tag in names])

    def _emit(self, points: list[Point]) -> None:
        """Normalize (the normalizer's rules), then queue what is left with the windows and alarm
        events produced (those stay with the rules until a batch takes them: never lost to a full queue)."""
        rules = self.rules
        out = rules.apply(points)
        if not out and not rules.windows and not rules.events:
            return
        try:
            self.queue.put_nowait(DeviceBatch(self.device, out, rules.windows, rules.events))
        except asyncio.QueueFull:  # only bad-quality reports can race here; count them, never drop silently
            self._skip("queue_full")
        else:
            rules.take()
        m.QUEUE_DEPTH.set(self.queue.qsize())

    # --- writes --------------------------------------------------------------------------------

    def submit(self, cmd: WriteCommand) -> bool:
        """Queue a write; False when the device's command queue is full (the caller answers busy) or
        the poller has stopped (:attr:`halted` says why)."""
        if self.halted is not None:
            return False
        try:
            self.commands.put_nowait(cmd)
            return True
        except asyncio.QueueFull:
            return False

    async def command_loop(self, stop: asyncio.Event) -> None:
        try:
            while (cmd := await self._next_command(stop)) is not None:
                try:
                    error = await self._write(cmd)
                except BaseException:  # cancelled mid-write (the device's task ends): still answered
                    cmd.reply("device task stopped during the write; it may or may not have been written")
                    raise
                cmd.reply(error)
        finally:  # answer what is left, however the loop ended; no command goes unanswered
            self.halted = self.halted or "device polling stopped"
            while not self.commands.empty():
                self.commands.get_nowait().reply(self.halted)

    async def _next_command(self, stop: asyncio.Event) -> WriteCommand | None:
        if stop.is_set():
            return None
        d = self.device.id
        getter: asyncio.Task[WriteCommand] | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                getter = tg.create_task(self.commands.get(), name=f"gateway[{d}].command_loop.get")
                stopper = tg.create_task(stop.wait(), name=f"gateway[{d}].command_loop.stop_wait")
                await wait_first(getter, stopper)
                stopper.cancel()
                getter.cancel()  # no-op when it already took a command (Queue.get gives it back otherwise)
        except asyncio.CancelledError:  # the device's task ends: a command already taken is answered
            if getter is not None and getter.done() and not getter.cancelled():
                getter.result().reply("device polling stopped")
            raise
        if getter.cancelled():
            return None
        cmd: WriteCommand = getter.result()
        if stop.is_set():  # taken just as we stopped: it is answered, not lost
            cmd.reply("device polling stopped")
            return None
        return cmd

    async def read_back(self, tag: TagConfig) -> Point | None:
        """``tag`` read again (raw) after a write where the driver reads single tags (a read_tags of its own, no
        subscription buffer to drain); None otherwise or if that fails (the next poll reads it)."""
        if type(self.driver).read_tags is Driver.read_tags or getattr(self.device.conn, "mode", "") == "subscribe":
            return None
        with contextlib.suppress(Exception):  # a failed read-back is no failed write
            async with self._io, asyncio.timeout(self.device.timeout_ms / 1000 + 1):
                return next((p for p in await self.driver.read_tags(frozenset({tag.name})) if p.tag == tag.name), None)
        return None

    async def _write(self, cmd: WriteCommand) -> str | None:
        d = self.device
        if not self.driver.connected:
            return "device not connected"
        try:
            async with self._io:
                async with asyncio.timeout(d.timeout_ms / 1000 + 1):
                    await self.driver.write(cmd.tag, cmd.raw)
        except TimeoutError:
            m.WRITES.labels(d.id, "error").inc()
            return f"write timed out after {d.timeout_ms} ms"
        except (TemporaryError, PermanentError) as exc:
            m.WRITES.labels(d.id, "error").inc()
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - a driver bug: answered, and the connection (state unknown) dropped
            m.WRITES.labels(d.id, "error").inc()
            err = self._unexpected("write", exc)
            await self._close_driver()
            self._lost(str(err))
            return str(err)
        self.writes += 1
        m.WRITES.labels(d.id, "ok").inc()
        log.info("wrote %s = %s", cmd.tag.name, brief(cmd.raw), extra={"device": d.id, "tag": cmd.tag.name})
        return None
