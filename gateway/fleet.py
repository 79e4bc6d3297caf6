"""The devices a gateway polls now, changed in place: start, stop or restart one device's loops
without touching the others (hot reload from gateway_core, or a plant file at start).

A device's task (``gateway[<device>].run``) never ends unseen. When its loops end before it was
stopped (a bug outside the poller's guards), the fleet logs it at ERROR with the reason, counts it
(``nexus_gateway_device_task_failures_total``), lists the device in :attr:`Fleet.failed` instead of
:attr:`Fleet.devices` (the gateway's status tells gateway_core), and starts it again after a capped
exponential backoff: a transient library fault heals by itself, a permanent one costs one ERROR per
``restart_max_s``. A task that ends outside that supervision (cancelled by someone else) is reported
the same way by its done callback and started again by the next :meth:`Fleet.apply`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway import metrics as m
from gateway.config import DeviceConfig
from gateway.drivers import make_driver
from gateway.drivers.base import Driver
from gateway.poller import DevicePoller, PollPool
from gateway.readings import Readings
from nexus.report import bounded_traceback, describe
from nexus.runtime import Backoff, sleep_or_stop

log = logging.getLogger("gateway.fleet")


@dataclass
class _Running:
    poller: DevicePoller
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None


class Fleet:
    """Owns one task per device (``gateway[<device>].run``) and awaits each one it stops.

    The tasks are the fleet's own, not a TaskGroup's: devices come and go one at a time for the
    daemon's whole life (hot reload), each is stopped and awaited alone by :meth:`stop`, all of them
    by :meth:`stop_all` at shutdown, and a TaskGroup would cancel every device when one failed.
    """

    def __init__(self, queue: Readings, pool: PollPool, *,
                 driver_factory: Callable[[DeviceConfig], Driver] = make_driver,
                 restart_first_s: float = 1.0, restart_max_s: float = 60.0) -> None:
        self.queue = queue
        self.pool = pool
        self.driver_factory = driver_factory  #: the protocol driver for a device (tests inject faults here)
        self.restart_first_s = restart_first_s  #: first wait before restarting a device whose task ended, s
        self.restart_max_s = restart_max_s  #: longest such wait (doubling per failure); also the healthy run, s
        self._running: dict[str, _Running] = {}
        self._stopping: dict[str, int] = {}  # device id -> stops in progress: still polling until they end
        #: device id -> why its task ended; not polled now (restarting, or until the next apply)
        self.failed: dict[str, str] = {}
        self.on_change: Callable[[], None] | None = None  #: called when :attr:`failed` changes (status due)
        #: called with (device id, its config) when a device starts polling (assigned, or its config changed)
        #: and (device id, None) when it is removed; not at the shutdown (the Sparkplug edge node's devices)
        self.on_assigned: Callable[[str, DeviceConfig | None], None] | None = None
        self.closed = False  # set by stop_all: a reload racing the shutdown starts nothing
        self.polls_done = 0  # of stopped pollers, so totals survive reloads
        self.skipped_done = 0

    def get(self, device_id: str) -> DevicePoller | None:
        r = self._running.get(device_id)
        return r.poller if r is not None else None

    @property
    def devices(self) -> list[str]:
        """Devices polled now, including ones still stopping (a status must not say a device is
        released while its last read or write may still be in progress); not the failed ones."""
        return sorted((set(self._running) - set(self.failed)) | set(self._stopping))

    @property
    def polls(self) -> int:
        return self.polls_done + sum(r.poller.polls for r in self._running.values())

    @property
    def skipped(self) -> int:
        return self.skipped_done + sum(r.poller.skipped for r in self._running.values())

    async def apply(self, devices: Iterable[DeviceConfig]) -> dict[str, list[str]]:
        """Make the running set equal to ``devices``; unchanged devices keep polling undisturbed."""
        wanted = {d.id: d for d in devices}
        changes: dict[str, list[str]] = {"started": [], "stopped": [], "restarted": []}
        starting = [d for d in wanted.values() if (r := self._running.get(d.id)) is None or r.poller.device != d]
        together = len(starting) > 1  # several devices at once: spread their first polls (capped at 5 s)
        for dev_id in [i for i in self._running if i not in wanted]:
            await self.stop(dev_id)
            changes["stopped"].append(dev_id)
            if self.on_assigned is not None:
                self.on_assigned(dev_id, None)
        for dev_id in [i for i in self.failed if i not in wanted]:  # ended outside supervision, now unassigned
            self._set_failed(dev_id, None)
        for dev_id, dev in wanted.items():
            r = self._running.get(dev_id)
            if r is not None and r.poller.device == dev:
                continue
            old_rules = old_stats = None
            if r is not None:
                old_rules, old_stats = r.poller.rules, r.poller.stats
                await self.stop(dev_id)
                changes["restarted"].append(dev_id)
            else:
                changes["started"].append(dev_id)
            poller = self.start(dev, spread_s=min(dev.interval_ms / 1000, 5.0) if together else 0.0)
            if poller is not None and old_rules is not None:  # tags whose rules did not change keep their state
                poller.rules.adopt(old_rules)
            if poller is not None and old_stats is not None:  # the device's health counts go on
                poller.stats = old_stats
        if any(changes.values()):
            log.info("devices changed: %s", {k: v for k, v in changes.items() if v})
        return changes

    def start(self, device: DeviceConfig, *, spread_s: float = 0.0) -> DevicePoller | None:
        if self.closed:
            log.info("not starting %s: the gateway is stopping", device.id)
            return None
        r = _Running(self._poller(device, spread_s), asyncio.Event())
        self._running[device.id] = r
        self._set_failed(device.id, None)
        r.task = asyncio.create_task(self._run_loop(device.id, r), name=f"gateway[{device.id}].run")
        r.task.add_done_callback(functools.partial(self._ended, device.id, r))
        self._gauges()
        if self.on_assigned is not None:
            self.on_assigned(device.id, device)
        return r.poller

    def _poller(self, device: DeviceConfig, spread_s: float) -> DevicePoller:
        return DevicePoller(device, self.queue, pool=self.pool, driver=self.driver_factory(device), spread_s=spread_s)

    async def _run_loop(self, dev_id: str, r: _Running) -> None:
        """The device's task: its poller until ``r.stop``; a poller that ends before is reported,
        then replaced by a new one after a backoff."""
        backoff = Backoff(first=self.restart_first_s, cap=self.restart_max_s)
        while True:
            started = time.monotonic()
            exc: BaseException | None = None
            try:
                await r.poller.run(r.stop)
            except asyncio.CancelledError as cancelled:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                exc = cancelled  # raised inside, not a cancel() of this task: the poller ended
            except Exception as error:  # noqa: BLE001 - reported below with its traceback; the device is restarted
                exc = error
            if r.stop.is_set():
                if exc is not None:
                    log.error("device task failed while stopping: %s", bounded_traceback(exc),
                              extra={"device": dev_id})
                return
            why = describe(exc) if exc is not None else "its loops returned before it was stopped"
            if time.monotonic() - started >= self.restart_max_s:
                backoff.reset()  # it ran well for a while: this is a new fault, not the same one again
            delay = backoff.next_delay()
            m.DEVICE_TASK_FAILURES.labels(dev_id).inc()
            log.error("device task ended while the device is assigned: %s; restarting it in %.1f s%s", why, delay,
                      f"\n{bounded_traceback(exc)}" if exc is not None else "", extra={"device": dev_id})
            r.poller.halted = f"device task ended: {why}"  # writes get this answer until the restart
            self._set_failed(dev_id, f"device task ended: {why} (restart {backoff.attempt} in {delay:.1f} s)")
            if await sleep_or_stop(delay, r.stop):
                return
            old = r.poller
            self.polls_done += old.polls
            self.skipped_done += old.skipped
            r.poller = self._poller(old.device, 0.0)
            r.poller.rules = old.rules  # the same config: every tag's rules keep their state
            r.poller.stats = old.stats
            self._set_failed(dev_id, None)
            log.info("device task restarted", extra={"device": dev_id})

    def _ended(self, dev_id: str, r: _Running, task: asyncio.Task[None]) -> None:
        """Done callback: the device's task ended. Expected after :meth:`stop`; otherwise reported."""
        exc = None if task.cancelled() else task.exception()
        if r.stop.is_set():
            if exc is not None:
                log.error("device task %s failed while stopping: %s", task.get_name(), describe(exc),
                          extra={"device": dev_id})
            return
        why = "cancelled" if task.cancelled() else describe(exc) if exc is not None else "returned"
        m.DEVICE_TASK_FAILURES.labels(dev_id).inc()
        log.error("device task %s ended while the device is assigned: %s; not polled until the next config change",
                  task.get_name(), why, extra={"device": dev_id})
        r.poller.halted = f"device task ended: {why}"
        if self._running.get(dev_id) is r:
            del self._running[dev_id]
            self.polls_done += r.poller.polls
            self.skipped_done += r.poller.skipped
        self._set_failed(dev_id, f"device task ended: {why}")

    def _set_failed(self, dev_id: str, reason: str | None) -> None:
        before = self.failed.get(dev_id)
        if reason is None:
            self.failed.pop(dev_id, None)
        else:
            self.failed[dev_id] = reason
        if before != reason:
            self._gauges()
            if self.on_change is not None:
                self.on_change()

    def _gauges(self) -> None:
        m.DEVICES.set(len(self.devices))
        m.DEVICES_FAILED.set(len(self.failed))

    async def stop(self, device_id: str, *, deadline: float = 5.0) -> None:
        r = self._running.pop(device_id, None)
        if r is None:
            return
        polling = device_id not in self.failed  # a failed device has no read or write in progress
        self._set_failed(device_id, None)
        if polling:
            self._stopping[device_id] = self._stopping.get(device_id, 0) + 1
        r.stop.set()
        assert r.task is not None
        try:
            async with asyncio.timeout(deadline + r.poller.device.timeout_ms / 1000):
                await asyncio.gather(r.task, return_exceptions=True)
        except TimeoutError:
            log.error("device %s did not stop within its deadline; cancelled", device_id)
            r.task.cancel()
            await asyncio.gather(r.task, return_exceptions=True)
        finally:
            if polling:
                self._stopping[device_id] -= 1
                if not self._stopping[device_id]:
                    del self._stopping[device_id]
        self.polls_done += r.poller.polls
        self.skipped_done += r.poller.skipped
        self._gauges()

    async def stop_all(self) -> None:
        self.closed = True
        for r in self._running.values():  # signal all first so they stop in parallel
            r.stop.set()
        async with asyncio.TaskGroup() as tg:
            for dev_id in list(self._running):
                tg.create_task(self.stop(dev_id), name=f"gateway[{dev_id}].stop")
        for dev_id in list(self.failed):
            self._set_failed(dev_id, None)
