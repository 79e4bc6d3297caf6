"""Which gateway polls which device: weighted rendezvous hashing and the handoff state machine.

Every device goes to the live gateway with the highest score ``-capacity / ln(h)``, where ``h`` in
(0, 1) is a hash of (gateway, device): the weighted rendezvous (highest random weight) method. It is
stable: when a gateway joins, only devices that now score highest on it move to it; when one dies,
only its own devices move. Shares are proportional to capacity.

"A device is polled by exactly one gateway at a time": before a device moves away from a gateway
that is still live, the :class:`Assigner` publishes it with ``gateway: null`` (release) and assigns
it to the new gateway only once the old one's status no longer lists it, the old one died, or
``handoff_timeout`` passed. :meth:`Assigner.step` is pure bookkeeping and returns the messages to
publish, in order; the caller publishes them.

A gateway that stays offline longer than ``forget_after`` is dropped by :meth:`Assigner.forget` (the
caller clears its retained status); one that comes back later simply re-announces itself.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway_core import metrics as m
from proto.config import DeviceMessage, GatewayStatus

log = logging.getLogger("gateway_core.sharding")


def _unit(gateway: str, device_id: str) -> float:
    digest = hashlib.blake2b(f"{gateway}\x00{device_id}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64  # strictly inside (0, 1)


def score(gateway: str, device_id: str, weight: float) -> float:
    return -weight / math.log(_unit(gateway, device_id))


def choose(device_id: str, weights: Mapping[str, float]) -> str | None:
    """The gateway for ``device_id`` among ``weights`` (gateway -> capacity > 0); None if there is none."""
    best, best_score = None, -1.0
    for gw in sorted(weights):
        w = weights[gw]
        if w > 0:
            s = score(gw, device_id, w)
            if s > best_score:
                best, best_score = gw, s
    return best


@dataclass
class GatewayState:
    id: str
    online: bool
    capacity: int = 0
    applied_revision: int = 0
    devices: frozenset[str] = frozenset()  #: what it reports polling now
    errors: dict[str, str] = field(default_factory=dict)
    ts: int = 0  #: its clock at the last status (Unix ms)
    last_seen: float = 0.0  #: our monotonic clock at the last status
    offline_since: float | None = None  #: our monotonic clock when we last saw it go offline
    sent_revision: int = 0  #: revision of the newest config message that concerned it
    config_seq: int = 0  #: highest config message seq it reports having applied


class Assigner:
    def __init__(
        self, *, heartbeat_timeout: float, handoff_timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.heartbeat_timeout = heartbeat_timeout
        self.handoff_timeout = handoff_timeout
        self.clock = clock
        self.revision = 0
        self.gateways: dict[str, GatewayState] = {}
        self.devices: dict[str, tuple[dict[str, Any], int]] = {}  #: id -> (doc, revision of its last change)
        self.owner: dict[str, str | None] = {}  #: id -> gateway we last published for it
        #: id -> (gateways to leave, deadline, seq of the release message)
        self.releasing: dict[str, tuple[frozenset[str], float, int]] = {}
        self._seq = 0
        self.dirty: set[str] = set()  #: documents changed since last published
        self.tombstones: set[str] = set()
        self._orphans: dict[str, float] = {}  #: device id -> when its last tombstone was sent
        self._strays: dict[str, float] = {}  #: device id -> when its assignment was last re-sent to a stray
        self._targets: dict[str, str | None] = {}  #: device id -> its gateway for the live set below
        self._targets_for: tuple[tuple[str, int], ...] = ()
        self._hearing_since = -math.inf  #: our clock at the last grace(): statuses may still be arriving

    # -- inputs ------------------------------------------------------------------------------------
    def load(self, devices: Iterable[tuple[str, dict[str, Any], int]], revision: int) -> None:
        for device_id, doc, rev in devices:
            self.devices[device_id] = (doc, rev)
            self.dirty.add(device_id)
        self.revision = max(self.revision, revision)

    def device_changed(self, device_id: str, doc: dict[str, Any] | None, revision: int) -> None:
        """A committed change (``doc`` None: deleted). Older news than what we hold is ignored."""
        self.revision = max(self.revision, revision)
        known = self.devices.get(device_id)
        if known is not None and known[1] >= revision:
            return
        if doc is None:
            if known is not None or device_id in self.owner:
                self.devices.pop(device_id, None)
                self.dirty.discard(device_id)
                self.tombstones.add(device_id)
        else:
            self.devices[device_id] = (doc, revision)
            self.tombstones.discard(device_id)
            self.dirty.add(device_id)

    def on_status(self, status: GatewayStatus, *, wall_ms: int | None = None) -> None:
        """A gateway's status (retained or live) or its will."""
        now = self.clock()
        g = self.gateways.get(status.gateway) or GatewayState(
            id=status.gateway, online=False, offline_since=now
        )
        self.gateways[status.gateway] = g
        if not status.online:
            if g.online:
                log.warning("gateway %s went offline", status.gateway, extra={"gateway": status.gateway})
                g.offline_since = now
            g.online = False
            return
        stale = wall_ms is not None and status.ts and wall_ms - status.ts > self.heartbeat_timeout * 1000
        if not g.online and not stale:
            log.info(
                "gateway %s is live (capacity %s)",
                status.gateway,
                status.capacity,
                extra={"gateway": status.gateway},
            )
        g.online = not stale
        if g.online:
            g.offline_since = None
        elif g.offline_since is None:  # a retained status too old to count as live
            g.offline_since = now
        g.capacity, g.applied_revision, g.devices = (
            status.capacity,
            status.applied_revision,
            frozenset(status.devices),
        )
        g.errors, g.ts, g.last_seen = dict(status.errors), status.ts, now
        g.config_seq = status.config_seq

    # -- views -------------------------------------------------------------------------------------
    def live(self) -> dict[str, int]:
        return {g.id: g.capacity for g in self.gateways.values() if g.online}

    def assigned(self, gateway: str) -> list[str]:
        return sorted(d for d, g in self.owner.items() if g == gateway and d in self.devices)

    def sync_devices(self, gateway: str) -> list[dict[str, Any]]:
        if gateway in self.gateways:
            self.gateways[gateway].sent_revision = self.revision
        return [self.devices[d][0] for d in self.assigned(gateway)]

    def lag(self, gateway: str) -> int:
        g = self.gateways[gateway]
        return max(0, g.sent_revision - g.applied_revision)

    # -- the state machine -------------------------------------------------------------------------
    def grace(self) -> None:
        """We could not hear anyone (broker connection lost): restart every live gateway's heartbeat clock,
        and forget nobody until the statuses retained meanwhile had time to arrive."""
        now = self.clock()
        self._hearing_since = now
        for g in self.gateways.values():
            if g.online:
                g.last_seen = now

    def expire(self) -> None:
        now = self.clock()
        for g in self.gateways.values():
            if g.online and now - g.last_seen > self.heartbeat_timeout:
                log.warning(
                    "gateway %s missed its heartbeat for %.1f s: dead",
                    g.id,
                    now - g.last_seen,
                    extra={"gateway": g.id},
                )
                g.online = False
                g.offline_since = now
        m.GATEWAYS_LIVE.set(sum(g.online for g in self.gateways.values()))

    def forget(self, after: float) -> list[str]:
        """Drop the gateways offline for more than ``after`` seconds; returns their ids (the caller clears
        their retained statuses). Call it after :meth:`step`: that pass has already moved every device
        away from an offline gateway, so nothing refers to it any more and no assignment changes."""
        now = self.clock()
        if now - self._hearing_since <= self.heartbeat_timeout:
            return []  # just reconnected: a gateway's newer retained status may still be on its way
        gone = [
            g.id
            for g in self.gateways.values()
            if not g.online and g.offline_since is not None and now - g.offline_since > after
        ]
        for gw in sorted(gone):
            held = [d for d, owner in self.owner.items() if owner == gw]
            if held:  # cannot happen after step(); keep it rather than lose track of who polls what
                log.error("gateway %s is offline but still owns %s; not forgetting it", gw, held[:5])
                gone.remove(gw)
                continue
            del self.gateways[gw]
            log.info("gateway %s offline for more than %.0f s: forgotten", gw, after, extra={"gateway": gw})
        return sorted(gone)

    def step(self) -> list[DeviceMessage]:
        """One reconciliation pass: the messages to publish now, in order."""
        self.expire()
        now = self.clock()
        live = self.live()
        key = tuple(sorted(live.items()))
        if key != self._targets_for:  # hashing every device is the costly part: only when gateways change
            self._targets, self._targets_for = {}, key
        out: list[DeviceMessage] = []
        # a live gateway polling a device that does not exist (deleted while the service was down, or
        # its tombstone was lost): tell it again, at most once per handoff timeout
        for g in self.gateways.values():
            if g.online:
                for d in g.devices - self.devices.keys():
                    if now - self._orphans.get(d, -math.inf) > self.handoff_timeout:
                        self.tombstones.add(d)
        for d in sorted(self.tombstones):
            out.append(DeviceMessage(revision=self.revision, device_id=d, gateway=None, device=None))
            self._sent(self.owner.pop(d, None))
            self.releasing.pop(d, None)
            self._orphans[d] = now
            m.MESSAGES.labels("tombstone").inc()
        self.tombstones.clear()
        if len(self._orphans) > 100_000:  # forget old tombstones; a still-polling gateway gets another
            self._orphans = {d: t for d, t in self._orphans.items() if now - t <= self.handoff_timeout}
        for d in sorted(self.devices):
            doc = self.devices[d][0]
            if d not in self._targets:
                self._targets[d] = choose(d, live)
            target = self._targets[d]
            if d in self.releasing:
                leaving, deadline, seq = self.releasing[d]
                # still held: listed in its status, or its status predates the release (not yet applied)
                holding = {g for g in leaving if self._holds(g, d) or self._behind(g, seq)}
                if holding and now < deadline:
                    continue
                if holding:
                    m.HANDOFF_TIMEOUTS.inc()
                    log.warning(
                        "device %s: %s still polls it %.1f s after release; assigning anyway",
                        d,
                        sorted(holding),
                        self.handoff_timeout,
                        extra={"device": d},
                    )
                del self.releasing[d]
            else:
                if d in self.owner and self.owner[d] == target and d not in self.dirty:
                    if self._stray(d, target, now):  # another live gateway still polls it: tell it again
                        out.append(DeviceMessage(revision=self.revision, device_id=d, gateway=target, device=doc))
                        m.MESSAGES.labels("assign").inc()
                    continue
                cur = self.owner.get(d)
                leaving = frozenset(g for g in self.gateways if g != target and self._holds(g, d))
                if cur is not None and cur != target and self.gateways.get(cur) and self.gateways[cur].online:
                    leaving |= {cur}
                if target is not None and leaving:
                    release = DeviceMessage(revision=self.revision, device_id=d, gateway=None, device=doc,
                                            seq=self.next_seq())
                    out.append(release)
                    for gw in leaving:
                        self._sent(gw)
                    self.owner[d] = None
                    self.releasing[d] = (leaving, now + self.handoff_timeout, release.seq)
                    self.dirty.discard(d)
                    m.HANDOFFS.inc()
                    m.MESSAGES.labels("release").inc()
                    log.info(
                        "device %s: released from %s for %s", d, sorted(leaving), target, extra={"device": d}
                    )
                    continue
            if self.owner.get(d, "") == target and d not in self.dirty:
                continue
            out.append(DeviceMessage(revision=self.revision, device_id=d, gateway=target, device=doc))
            self._sent(self.owner.get(d))
            self._sent(target)
            self._strays[d] = now  # a gateway still listing it gets a handoff timeout before a repeat
            self.owner[d] = target
            self.dirty.discard(d)
            m.MESSAGES.labels("assign").inc()
        return out

    def _stray(self, device_id: str, owner: str | None, now: float) -> bool:
        """Whether a live gateway other than ``owner`` reports polling ``device_id`` (it missed its
        release, e.g. while disconnected, or kept it past a handoff timeout) and it is time to repeat
        the assignment to it (at most once per handoff timeout)."""
        strays = [g for g in self.gateways if g != owner and self._holds(g, device_id)]
        if not strays or now - self._strays.get(device_id, -math.inf) <= self.handoff_timeout:
            return False
        self._strays[device_id] = now
        log.warning("device %s: %s still polls it, but %s owns it; repeating the assignment", device_id,
                    sorted(strays), owner, extra={"device": device_id})
        return True

    def next_seq(self) -> int:
        """A message sequence number that grows across service restarts (wall-clock nanoseconds)."""
        self._seq = max(self._seq + 1, time.time_ns())
        return self._seq

    def _behind(self, gateway: str, seq: int) -> bool:
        """A live gateway whose status does not yet reflect config message ``seq``."""
        g = self.gateways.get(gateway)
        return g is not None and g.online and g.config_seq < seq

    def _holds(self, gateway: str, device_id: str) -> bool:
        g = self.gateways.get(gateway)
        return g is not None and g.online and device_id in g.devices

    def _sent(self, gateway: str | None) -> None:
        if gateway is not None and gateway in self.gateways:
            self.gateways[gateway].sent_revision = self.revision
