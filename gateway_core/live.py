"""Current values for the browser: the retained per-tag state topics, kept and fanned out to subscribers.

The service subscribes once to every per-tag UNS topic (``[<uns_prefix>/]+/+/+/+/+/+``, QoS 0: state, not
history; the broker sends what it retains on every (re)connect) and keeps each tag's newest state, decoded
by :func:`proto.points.decode_point`. A :class:`Watcher` (one WebSocket client, :mod:`gateway_core.live_ws`)
subscribes to subtrees of the UNS (``acme``, ``acme/berlin/stamping``, or one tag's whole path); a change is
put in the pending map of every watcher of one of its six ancestors (a dict lookup per level, whatever the
number of clients), where later changes of the same tag replace earlier ones, so a slow client costs memory
bounded by the tags it watches, never a growing queue. The watcher's sender takes the map every
``live.batch_interval``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from gateway_core import metrics as m
from gateway_core.settings import LiveSettings
from nexus.mqtt import Message
from proto.errors import ContractError
from proto.points import Quality, decode_point
from proto.types import DateTime
from proto.uns import validate_level

log = logging.getLogger("gateway_core.live")

LEVELS = 6  #: enterprise/site/area/line/device/tag
_QUALITY = {Quality.GOOD: "good", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}

_OK = m.LIVE_MESSAGES.labels("ok")  #: the child counter of every message, looked up once (~1 µs a message)

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
        self.states: dict[str, State] = {}  #: tag path -> its newest state
        self._index: dict[str, set[Watcher]] = {}  #: subscribed path -> its watchers
        self.watchers: set[Watcher] = set()
        self.bad_messages = 0
        self.overflow = 0  #: tags not kept because max_cached_tags were

    # -- the broker side -------------------------------------------------------------------------
    def subscriptions(self) -> list[tuple[str, int]]:
        return [(self._prefix + "/".join(["+"] * LEVELS), 0)]

    def handles(self, topic: str) -> bool:
        return (topic.startswith(self._prefix) and not topic.startswith("$")
                and topic.count("/") == self._skip + LEVELS - 1)

    def on_message(self, msg: Message) -> None:
        """A per-tag state message (the event loop's thread; must not block). An empty payload: the tag's
        retained state was cleared."""
        path = msg.topic[len(self._prefix):]
        if not msg.payload:
            if self.states.pop(path, None) is not None:
                m.LIVE_MESSAGES.labels("removed").inc()
                m.LIVE_TAGS.set(len(self.states))
                self._fan_out(path, {"path": path, "removed": True})
            return
        try:
            p = decode_point(msg.payload, path.rsplit("/", 1)[1])
        except ContractError as exc:
            self.bad_messages += 1
            m.LIVE_MESSAGES.labels("bad").inc()
            log.debug("live: not a tag state on %r: %s", msg.topic[:200], str(exc)[:200])
            return
        new = path not in self.states
        if new and len(self.states) >= self.settings.max_cached_tags:
            self.overflow += 1
            m.LIVE_MESSAGES.labels("overflow").inc()
            return
        state: State = {"path": path, "value": _json_value(p.value), "ts": p.ts, "q": p.status,
                        "quality": _QUALITY[p.quality]}
        if p.unit:
            state["unit"] = p.unit
        if p.reason:
            state["reason"] = p.reason
        self.states[path] = state
        _OK.inc()
        if new:
            m.LIVE_TAGS.set(len(self.states))
        self._fan_out(path, state)

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
