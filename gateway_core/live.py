"""Current values for the browser: every tag's newest state, kept and fanned out to subscribers.

Where the states come from (``live.changes``):

- ``batches`` (the default): changes from the batch stream (``<topic_root>/batch/v1/#``, QoS 0, not shared: a
  copy of what ingestion stores, up to a thousand points a message, decoded by :func:`proto.points.decode_batch`),
  and first values from the retained per-tag UNS topics (``[<uns_prefix>/]+/+/+/+/+/+``), which the broker sends
  on subscribing: :meth:`LiveHub.snapshot_loop` reads them at each connect and every ``snapshot_interval``
  with a client of its own, which takes what is retained until ``snapshot_quiet`` passes without more and
  disconnects, so a change costs one point in a batch, not an MQTT message of its own (the per-message cost that
  dominates: docs/gateway_core.md, "Live values"). A read removes nothing: a tag missing from it may just not be
  retained (a broker restarted without persistence, a gateway without per-tag topics); a tag goes when an empty
  retained message clears its topic while we are subscribed to it (during a read, or with ``tags``).
- ``tags``: every per-tag state message (subscribed for good), for publishers that send no batches.

Either way a state changes when its (value, quality code, unit, reason) does, and a point older than the
newest one seen of its tag (a gateway's backlog replayed while its newer points were already seen, a retained
value older than a batch's) changes nothing; a backlog of points newer than any seen is shown as it arrives.
A :class:`Watcher` (one WebSocket client, :mod:`gateway_core.live_ws`) subscribes to subtrees
of the UNS (``acme``, ``acme/berlin/stamping``, or one tag's whole path); a change is put in the pending map of
every watcher of one of its six ancestors (a dict lookup per level, whatever the number of clients), where later
changes of the same tag replace earlier ones, so a slow client costs memory bounded by the tags it watches,
never a growing queue. The watcher's sender takes the map every ``live.batch_interval``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

from gateway_core import metrics as m
from gateway_core.settings import LiveSettings
from nexus.common import MqttSettings
from nexus.mqtt import Message, MqttClient
from nexus.runtime import sleep_or_stop, wait_first
from proto.errors import ContractError
from proto.points import Point, Quality, decode_batch, decode_point
from proto.types import DateTime
from proto.uns import batch_filter, parse_batch_topic, validate_level

log = logging.getLogger("gateway_core.live")

LEVELS = 6  #: enterprise/site/area/line/device/tag
_QUALITY = {Quality.GOOD: "good", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}

_OK = m.LIVE_MESSAGES.labels("ok")  #: the child counter of every message, looked up once (~1 µs a message)
_BATCH = m.LIVE_MESSAGES.labels("batch")
FUTURE_MS = 5_000  #: a point's ts counts as newest at most this far ahead of our clock

State = dict[str, Any]  #: one tag's current state as the client gets it: path, value, ts, q, quality, unit, reason


def parse_path(path: object) -> str:
    """A subscription: one to six UNS levels joined by '/'; ``ValueError`` naming what is wrong."""
    if not isinstance(path, str) or not path:
        raise ValueError("a path is a non-empty string of 1..6 UNS levels, e.g. 'acme/berlin'")
    levels = path.split("/")
    if len(levels) > LEVELS:
        raise ValueError(f"path {path[:128]!r} has {len(levels)} levels, at most {LEVELS}")
    for level in levels:
        validate_level(level, what="path level")
    return path


def _ceiling() -> int:
    """The newest ``ts`` (ms) a point may count as now: our clock plus FUTURE_MS."""
    return time.time_ns() // 1_000_000 + FUTURE_MS


def _json_value(value: object) -> object:
    return {"datetime": value.ms} if isinstance(value, DateTime) else value


class Watcher:
    """What one client watches and what is waiting to be sent to it."""

    def __init__(self, max_tags: int) -> None:
        self.paths: set[str] = set()
        self.max_tags = max_tags
        self.pending: dict[str, State] = {}
        self.dropped = 0  #: changes not queued because max_tags other tags were already pending
        self.wake = asyncio.Event()

    def changed(self, path: str, state: State) -> None:
        if path not in self.pending and len(self.pending) >= self.max_tags:
            self.dropped += 1
            m.LIVE_DROPPED.inc()
            return
        self.pending[path] = state
        self.wake.set()

    def take(self) -> list[State]:
        out = list(self.pending.values())
        self.pending = {}
        self.wake.clear()
        return out


class LiveHub:
    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        self._prefix = f"{settings.uns_prefix}/" if settings.uns_prefix else ""
        self._skip = settings.uns_prefix.count("/") + 1 if settings.uns_prefix else 0
        self._tag_filter = self._prefix + "/".join(["+"] * LEVELS)
        self._batch_head = batch_filter(settings.topic_root)[:-1]  # "<root>/batch/v1/"
        self._batch_levels = self._batch_head.count("/") + 4  # and enterprise/site/area/line/device
        self.states: dict[str, State] = {}  #: tag path -> its newest state
        self._newest: dict[str, int] = {}  #: tag path -> the ts of the newest point seen (a state's ts: its change)
        self._index: dict[str, set[Watcher]] = {}  #: subscribed path -> its watchers
        self.watchers: set[Watcher] = set()
        self.bad_messages = 0
        self.overflow = 0  #: tags not kept because max_cached_tags were
        self.snapshots = 0  #: reads of the retained per-tag topics completed
        self._last_retained = 0.0  #: monotonic time of the last retained per-tag message

    # -- the broker side -------------------------------------------------------------------------
    def subscriptions(self) -> list[tuple[str, int]]:
        """Kept for every connection; with changes = batches the per-tag topics are the snapshot loop's."""
        if self.settings.changes == "tags":
            return [(self._tag_filter, 0)]
        return [(self._batch_head + "#", 0)]

    def handles(self, topic: str) -> bool:
        return self._is_batch(topic) or (topic.startswith(self._prefix) and not topic.startswith("$")
                                         and topic.count("/") == self._skip + LEVELS - 1)

    def _is_batch(self, topic: str) -> bool:
        return topic.startswith(self._batch_head) and topic.count("/") == self._batch_levels

    def on_message(self, msg: Message) -> None:
        """A batch message or a per-tag state message (the event loop's thread; must not block). An empty
        per-tag payload: the tag's retained state was cleared."""
        if self._is_batch(msg.topic):
            self._on_batch(msg)
            return
        path = msg.topic[len(self._prefix):]
        if not msg.payload:
            self._remove(path)
            return
        try:
            p = decode_point(msg.payload, path.rsplit("/", 1)[1])
        except ContractError as exc:
            self._bad(msg, exc)
            return
        if msg.retain:
            self._last_retained = time.monotonic()
        _OK.inc()
        self._apply(path, p, _ceiling())

    def _on_batch(self, msg: Message) -> None:
        try:
            head = parse_batch_topic(msg.topic, self.settings.topic_root).path + "/"
            points = decode_batch(msg.payload).points
        except ContractError as exc:
            self._bad(msg, exc)
            return
        _BATCH.inc()
        ceiling = _ceiling()
        for p in points:
            self._apply(head + p.tag, p, ceiling)

    def _bad(self, msg: Message, exc: ContractError) -> None:
        self.bad_messages += 1
        m.LIVE_MESSAGES.labels("bad").inc()
        log.debug("live: not a tag state or batch on %r: %s", msg.topic[:200], str(exc)[:200])

    def _apply(self, path: str, p: Point, ceiling: int) -> None:
        value = _json_value(p.value)
        newest = self._newest.get(path)
        # what counts as newest is never more than FUTURE_MS ahead of our clock (``ceiling``): a device clock
        # that ran ahead and was set back holds its tag for at most that long
        seen = p.ts if p.ts < ceiling else ceiling
        if newest is not None:
            if p.ts < newest:  # older than what we have: a replayed spool, a retained value behind a batch
                return
            self._newest[path] = seen
            old = self.states[path]
            if (old["q"] == p.status and old["value"] == value and type(old["value"]) is type(value)
                    and old.get("unit") == p.unit and old.get("reason") == p.reason):
                return  # the same state read again (its ts stays that of the change)
        elif len(self.states) >= self.settings.max_cached_tags:
            self.overflow += 1
            m.LIVE_MESSAGES.labels("overflow").inc()
            return
        else:
            self._newest[path] = seen
            m.LIVE_TAGS.set(len(self.states) + 1)
        state: State = {"path": path, "value": value, "ts": p.ts, "q": p.status, "quality": _QUALITY[p.quality]}
        if p.unit:
            state["unit"] = p.unit
        if p.reason:
            state["reason"] = p.reason
        self.states[path] = state
        self._fan_out(path, state)

    def _remove(self, path: str) -> None:
        self._newest.pop(path, None)
        if self.states.pop(path, None) is not None:
            m.LIVE_MESSAGES.labels("removed").inc()
            m.LIVE_TAGS.set(len(self.states))
            self._fan_out(path, {"path": path, "removed": True})

    async def snapshot_loop(self, mqtt: MqttClient, stop: asyncio.Event) -> None:
        """changes = batches: read the retained per-tag topics each time ``mqtt`` (the service's client, which
        takes the batches) has connected anew, and every ``snapshot_interval`` (task ``core.live_snapshot``)."""
        s = self.settings
        if s.changes != "batches":
            return
        generation, due = -1, 0.0
        while not stop.is_set():
            if mqtt.connected and (mqtt.generation != generation or time.monotonic() >= due):
                generation = mqtt.generation
                await self.read_retained(mqtt.settings, f"{mqtt.client_id}-live", stop)
                due = time.monotonic() + s.snapshot_interval
            await sleep_or_stop(0.1, stop)

    async def read_retained(self, settings: MqttSettings, client_id: str, stop: asyncio.Event) -> bool:
        """One read: a client of its own subscribes to the per-tag topics, takes what the broker hands it until
        ``snapshot_quiet`` passes without a retained message (or ``snapshot_timeout``, or ``stop``), and
        disconnects: its own session, so nothing of it outlives the read, whatever the connection does. True
        when the read was complete."""
        s = self.settings
        subscribed, done = asyncio.Event(), asyncio.Event()
        reader = MqttClient(settings, client_id=client_id, subscriptions=[(self._tag_filter, 0)],
                            on_message=self.on_message, on_subscribed=subscribed.set)
        run = asyncio.create_task(reader.run_loop(done), name="core.live_snapshot.reader")
        complete = False
        try:
            async with asyncio.timeout(s.snapshot_timeout):
                await wait_first(subscribed.wait(), stop.wait())
                self._last_retained = time.monotonic()
                while not stop.is_set() and reader.connected:
                    if time.monotonic() - self._last_retained >= s.snapshot_quiet:
                        complete = True
                        break
                    await sleep_or_stop(min(0.05, s.snapshot_quiet / 4), stop)
        except TimeoutError:
            log.warning("live: the retained per-tag states were not all read within %gs (live.snapshot_timeout);"
                        " tags not read yet show with their next change", s.snapshot_timeout)
        finally:
            done.set()
            await run
        if complete:
            self.snapshots += 1
        return complete

    def _fan_out(self, path: str, state: State) -> None:
        if not self._index:
            return
        end = -1
        while True:
            end = path.find("/", end + 1)
            ancestor = path if end < 0 else path[:end]
            for w in self._index.get(ancestor, ()):
                w.changed(path, state)
            if end < 0:
                return

    # -- the clients' side -----------------------------------------------------------------------
    def under(self, path: str) -> Iterator[State]:
        """The current states of the tags under ``path`` (or of the tag itself)."""
        head = path + "/"
        for p, state in self.states.items():
            if p == path or p.startswith(head):
                yield state

    def count_under(self, paths: set[str]) -> int:
        """Distinct tags under any of ``paths``."""
        heads = tuple(p + "/" for p in paths)
        return sum(1 for p in self.states if p in paths or p.startswith(heads))

    def subscribe(self, w: Watcher, paths: list[str]) -> None:
        for path in paths:
            if path in w.paths:
                continue
            w.paths.add(path)
            self._index.setdefault(path, set()).add(w)
            for state in self.under(path):
                w.changed(state["path"], state)

    def unsubscribe(self, w: Watcher, paths: list[str]) -> None:
        for path in paths:
            w.paths.discard(path)
            subs = self._index.get(path)
            if subs is not None:
                subs.discard(w)
                if not subs:
                    del self._index[path]

    def join(self, w: Watcher) -> bool:
        if len(self.watchers) >= self.settings.max_clients:
            return False
        self.watchers.add(w)
        m.LIVE_CLIENTS.set(len(self.watchers))
        return True

    def leave(self, w: Watcher) -> None:
        self.unsubscribe(w, list(w.paths))
        self.watchers.discard(w)
        m.LIVE_CLIENTS.set(len(self.watchers))
