"""The normalizer daemon's output before the broker has it: each device's normalized output not yet
published (:class:`Outgoing`), each output message until it is PUBACKed (:class:`Publication`), and
how a buffer becomes numbered messages of at most ``max_batch_points`` entries and below the batch
bound (:class:`Encoder`; the gateway's ``gateway/messages.py`` does the same for its batches).

Every buffer and message holds the input messages it carries something of (:class:`Held`): each one
counts what holds it, and is acknowledged when nothing does any more (:mod:`normalizer.daemon`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from proto.aggregates import AlarmEvent, Window, encode_events, encode_windows, events_topic, windows_topic
from proto.points import MAX_BATCH_BYTES, Point, encode_batch
from proto.uns import DevicePath, batch_topic

_T = TypeVar("_T")


class Held(Protocol):
    """An input message, as its output holds it."""

    refs: int  #: buffers and output messages holding something derived from it, not yet PUBACKed


class Outgoing:
    """One device's normalized output, not yet published."""

    __slots__ = ("device", "events", "jobs", "points", "since", "windows")

    def __init__(self, device: DevicePath, since: float) -> None:
        self.device = device
        self.since = since  #: monotonic time of the first addition
        self.points: list[Point] = []
        self.windows: list[Window] = []
        self.events: list[AlarmEvent] = []
        self.jobs: list[Held] = []  #: each input once; each holds one ref of this buffer

    def add(self, points: list[Point], windows: list[Window], events: list[AlarmEvent], job: Held | None) -> None:
        self.points += points
        self.windows += windows
        self.events += events
        if job is not None:
            self.jobs.append(job)
            job.refs += 1


class Publication:
    """One output message, until it is PUBACKed."""

    __slots__ = ("attempts", "count", "jobs", "payload", "stream", "topic")

    def __init__(self, topic: str, payload: bytes, jobs: Sequence[Held], stream: str, count: int) -> None:
        self.topic = topic
        self.payload = payload
        self.jobs = jobs  #: the input messages it holds
        self.stream = stream  #: batch, windows, events or deadletter
        self.count = count  #: points, windows or events in it
        self.attempts = 0  #: times the broker refused it


class Encoder:
    """Numbers the output messages of one run ``(gw, run, seq)``, seq from 1 over every stream."""

    def __init__(self, *, gateway: str, run: int, root: str, max_points: int) -> None:
        self.gateway, self.run, self.root, self.max_points = gateway, run, root, max_points
        self.seq = 0  #: the last seq given

    def encode(self, o: Outgoing) -> list[Publication]:
        """The messages of buffer ``o``; its inputs are then held by each of them instead of by ``o``."""
        gw, run, root, n = self.gateway, self.run, self.root, self.max_points
        pubs: list[Publication] = []
        for i in range(0, len(o.points), n):
            pubs += self._split(batch_topic(o.device, root), "batch", o.points[i:i + n], o.jobs,
                                lambda items, seq: encode_batch(items, seq=seq, gateway=gw, run=run))
        for i in range(0, len(o.windows), n):
            pubs += self._split(windows_topic(o.device, root), "windows", o.windows[i:i + n], o.jobs,
                                lambda items, seq: encode_windows(items, seq=seq, gateway=gw, run=run))
        for i in range(0, len(o.events), n):
            pubs += self._split(events_topic(o.device, root), "events", o.events[i:i + n], o.jobs,
                                lambda items, seq: encode_events(items, seq=seq, gateway=gw, run=run))
        for job in o.jobs:
            job.refs += len(pubs) - 1
        return pubs

    def _split(self, topic: str, stream: str, items: Sequence[_T], jobs: list[Held],
               encode: Callable[[list[_T], int], bytes]) -> list[Publication]:
        """``items`` in messages below MAX_BATCH_BYTES (a single larger item goes alone), numbered in order."""
        seq = self.seq + 1
        payload = encode(list(items), seq)
        if len(payload) > MAX_BATCH_BYTES and len(items) > 1:
            half = len(items) // 2
            return (self._split(topic, stream, items[:half], jobs, encode)
                    + self._split(topic, stream, items[half:], jobs, encode))
        self.seq = seq
        return [Publication(topic, payload, jobs, stream, len(items))]
