"""The devices a gateway polls now, changed in place: start, stop or restart one device's loops
without touching the others (hot reload from gateway_core, or a plant file at start)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway import metrics as m
from gateway.config import DeviceConfig
from gateway.poller import DevicePoller, PollPool

log = logging.getLogger("gateway.fleet")


@dataclass
class _Running:
    poller: DevicePoller
    stop: asyncio.Event
    task: asyncio.Task[None]


class Fleet:
    """Owns one task per device (``gateway[<device>].run``) and awaits each one it stops."""

    def __init__(self, queue: asyncio.Queue[Any], pool: PollPool) -> None:
        self.queue = queue
        self.pool = pool
        self._running: dict[str, _Running] = {}
        self._stopping: dict[str, int] = {}  # device id -> stops in progress: still polling until they end
        self.closed = False  # set by stop_all: a reload racing the shutdown starts nothing
        self.polls_done = 0  # of stopped pollers, so totals survive reloads
        self.skipped_done = 0

    def get(self, device_id: str) -> DevicePoller | None:
        r = self._running.get(device_id)
        return r.poller if r is not None else None

    @property
    def devices(self) -> list[str]:
        """Devices polled now, including ones still stopping (a status must not say a device is
        released while its last read or write may still be in progress)."""
        return sorted(set(self._running) | set(self._stopping))

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
        for dev_id, dev in wanted.items():
            r = self._running.get(dev_id)
            if r is not None and r.poller.device == dev:
                continue
            if r is not None:
                await self.stop(dev_id)
                changes["restarted"].append(dev_id)
            else:
                changes["started"].append(dev_id)
            self.start(dev, spread_s=min(dev.interval_ms / 1000, 5.0) if together else 0.0)
        if any(changes.values()):
            log.info("devices changed: %s", {k: v for k, v in changes.items() if v})
        return changes

    def start(self, device: DeviceConfig, *, spread_s: float = 0.0) -> DevicePoller | None:
        if self.closed:
            log.info("not starting %s: the gateway is stopping", device.id)
            return None
        poller = DevicePoller(device, self.queue, pool=self.pool, spread_s=spread_s)
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop), name=f"gateway[{device.id}].run")
        task.add_done_callback(self._crashed)
        self._running[device.id] = _Running(poller, stop, task)
        m.DEVICES.set(len(self._running))
        return poller

    def _crashed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("device task %s failed", task.get_name(), exc_info=task.exception())

    async def stop(self, device_id: str, *, deadline: float = 5.0) -> None:
        r = self._running.pop(device_id, None)
        if r is None:
            return
        self._stopping[device_id] = self._stopping.get(device_id, 0) + 1
        r.stop.set()
        try:
            async with asyncio.timeout(deadline + r.poller.device.timeout_ms / 1000):
                await asyncio.gather(r.task, return_exceptions=True)
        except TimeoutError:
            log.error("device %s did not stop within its deadline; cancelled", device_id)
            r.task.cancel()
            await asyncio.gather(r.task, return_exceptions=True)
        finally:
            self._stopping[device_id] -= 1
            if not self._stopping[device_id]:
                del self._stopping[device_id]
        self.polls_done += r.poller.polls
        self.skipped_done += r.poller.skipped
        m.DEVICES.set(len(self._running))

    async def stop_all(self) -> None:
        self.closed = True
        for r in self._running.values():  # signal all first so they stop in parallel
            r.stop.set()
        await asyncio.gather(*(self.stop(i) for i in list(self._running)))
