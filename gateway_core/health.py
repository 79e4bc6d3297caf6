"""The newest health report of every device (``proto.health``, retained on ``<root>/status/devices/+``), as
the REST API (``routes_health``) and the live stream (``live_ws``) show it.

A report says what its gateway saw; the service adds what only it knows: whether that gateway is live
(``gateway_online``, from the :class:`~gateway_core.sharding.Assigner`'s heartbeat tracking), which gateway
the device is assigned to, the report's age, and ``stale``: the report is not ``offline`` and its gateway
is dead, or it is older than :data:`proto.health.STALE_HEARTBEATS` of its heartbeats. A dead gateway's last
reports keep saying "connected" on the broker; here they are stale within the gateway's heartbeat timeout.
:meth:`HealthStore.sweep` (once a second, from the assignment loop) tells the live stream when a device's
``stale`` or ``gateway_online`` changed without a message. A zero-length retained message removes the device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway_core import metrics as m
from gateway_core.live import State, Watcher
from gateway_core.sharding import Assigner
from nexus.mqtt import Message
from proto.errors import ContractError
from proto.health import STALE_HEARTBEATS, DeviceHealth, decode_health, health_device, health_filter
from proto.uns import validate_level

log = logging.getLogger("gateway_core.health")

ALL = "*"  #: a subscription to every device's health
SWEEP_INTERVAL = 1.0  #: seconds between two looks for reports gone stale


@dataclass(slots=True)
class _Entry:
    report: DeviceHealth
    received: float  #: our monotonic clock when the report was made (a retained one: from its ts)
    shown: tuple[bool, bool | None] = (False, None)  #: (stale, gateway_online) the watchers were last told


class HealthStore:
    def __init__(self, root: str, assigner: Assigner, *, max_devices: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self._topic_head = f"{root}/status/devices/"  #: what handles() looks for, on every message
        self.assigner = assigner
        self.max_devices = max_devices
        self.clock = clock
        self.entries: dict[str, _Entry] = {}
        self._index: dict[str, set[Watcher]] = {}  #: device id or ALL -> its watchers
        self._swept = 0.0
        self.bad_messages = 0
        self.overflow = 0  #: reports not kept because max_devices were

    # -- the broker side -------------------------------------------------------------------------
    def subscriptions(self) -> list[tuple[str, int]]:
        return [(health_filter(self.root), 1)]

    def handles(self, topic: str) -> bool:
        return topic.startswith(self._topic_head)

    def on_message(self, msg: Message) -> None:
        """A health report (the event loop's thread: never raises, never blocks)."""
        try:
            device_id = health_device(self.root, msg.topic)
            if not msg.payload:
                if self.entries.pop(device_id, None) is not None:
                    m.HEALTH_MESSAGES.labels("removed").inc()
                    m.HEALTH_DEVICES.set(len(self.entries))
                    self._fan_out(device_id, {"device_id": device_id, "removed": True})
                return
            report = decode_health(msg.payload)
            if report.device_id != device_id:
                raise ContractError(f"device_id {report.device_id[:64]!r} published on the topic of {device_id!r}")
        except ContractError as exc:
            self.bad_messages += 1
            m.HEALTH_MESSAGES.labels("bad").inc()
            log.warning("bad device health message: %s", str(exc)[:300], extra={"topic": msg.topic[:200]})
            return
        if device_id not in self.entries and len(self.entries) >= self.max_devices:
            self.overflow += 1
            m.HEALTH_MESSAGES.labels("overflow").inc()
            return
        now = self.clock()
        received = now
        if msg.retain:  # kept by the broker since: its age counts from when it was made (gateway clock)
            received -= max(0.0, time.time() - report.ts / 1000)
        entry = self.entries[device_id] = _Entry(report, received)
        m.HEALTH_MESSAGES.labels("ok").inc()
        m.HEALTH_DEVICES.set(len(self.entries))
        self._show(device_id, entry, now)

    # -- what is shown ---------------------------------------------------------------------------
    def _flags(self, entry: _Entry, now: float) -> tuple[bool, bool | None, float]:
        """(stale, gateway_online, age in seconds) of a report now."""
        h = entry.report
        g = self.assigner.gateways.get(h.gateway)
        online = None if g is None else g.online
        age = max(0.0, now - entry.received)
        return h.state != "offline" and (online is False or age > STALE_HEARTBEATS * h.heartbeat_ms / 1000), \
            online, age

    def _view(self, entry: _Entry, now: float) -> State:
        h = entry.report
        stale, online, age = self._flags(entry, now)
        lat = h.latency
        return {
            "device_id": h.device_id, "gateway": h.gateway, "assigned_gateway": self.assigner.owner.get(h.device_id),
            "path": h.path, "state": h.state, "connected": h.connected, "breaker": h.breaker,
            "consecutive_errors": h.consecutive_errors, "last_error": h.last_error,
            "last_error_ts": h.last_error_ts, "last_good_ts": h.last_good_ts,
            "latency_ms": None if lat is None else {"p50": lat.p50, "p99": lat.p99, "samples": lat.samples,
                                                    "window_s": lat.window_s},
            "polls": h.polls, "errors": h.errors, "ts": h.ts, "heartbeat_ms": h.heartbeat_ms,
            "age_s": round(age, 3), "gateway_online": online, "stale": stale,
        }

    def view(self, device_id: str) -> State | None:
        entry = self.entries.get(device_id)
        return None if entry is None else self._view(entry, self.clock())

    def views(self, *, gateway: str | None = None, stale: bool | None = None,
              connected: bool | None = None) -> list[State]:
        now = self.clock()
        out = []
        for device_id in sorted(self.entries):
            entry = self.entries[device_id]
            if gateway is not None and entry.report.gateway != gateway:
                continue
            v = self._view(entry, now)
            if (stale is None or v["stale"] == stale) and (connected is None or v["connected"] == connected):
                out.append(v)
        return out

    def sweep(self) -> None:
        """Tell the watchers of devices whose ``stale`` or ``gateway_online`` changed since they were shown
        (a gateway died, a heartbeat is overdue); at most every :data:`SWEEP_INTERVAL`."""
        now = self.clock()
        if now - self._swept < SWEEP_INTERVAL:
            return
        self._swept = now
        for device_id, entry in self.entries.items():
            stale, online, _ = self._flags(entry, now)
            if (stale, online) != entry.shown:
                self._show(device_id, entry, now)

    # -- the live stream's side ------------------------------------------------------------------
    def _show(self, device_id: str, entry: _Entry, now: float) -> None:
        """Send the device's view to its watchers; what they were told is kept for :meth:`sweep` (only here:
        a REST read of the same view must not keep a change from them)."""
        view = self._view(entry, now)
        entry.shown = (view["stale"], view["gateway_online"])
        self._fan_out(device_id, view)

    def _fan_out(self, device_id: str, state: State) -> None:
        for key in (device_id, ALL):
            for w in self._index.get(key, ()):
                w.changed(device_id, state)

    def subscribe(self, w: Watcher, devices: list[str]) -> None:
        now = self.clock()
        for device_id in devices:
            if device_id in w.paths:
                continue
            w.paths.add(device_id)
            self._index.setdefault(device_id, set()).add(w)
            ids = self.entries if device_id == ALL else [device_id] if device_id in self.entries else []
            for d in ids:
                w.changed(d, self._view(self.entries[d], now))

    def unsubscribe(self, w: Watcher, devices: list[str]) -> None:
        for device_id in devices:
            w.paths.discard(device_id)
            subs = self._index.get(device_id)
            if subs is not None:
                subs.discard(w)
                if not subs:
                    del self._index[device_id]


def parse_device_id(value: object) -> str:
    """A health subscription: a device id (one UNS level) or ``*``; ``ValueError`` saying what is wrong."""
    if value == ALL:
        return ALL
    if not isinstance(value, str) or not value:
        raise ValueError("a device is a non-empty string: its id, or '*' for every device")
    return validate_level(value, what="device id")
