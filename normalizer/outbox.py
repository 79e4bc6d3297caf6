"""The normalizer daemon's output before the broker has it: each device's normalized output not yet
published (:class:`Outgoing`), each output message until it is PUBACKed (:class:`Publication`), and
how a buffer becomes numbered messages (:class:`Encoder`, over :class:`proto.streams.Numbering`,
as the gateway's publisher numbers its own).

Every buffer and message holds the input messages it carries something of (:class:`Held`): each one
counts what holds it, and is acknowledged when nothing does any more (:mod:`normalizer.daemon`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from proto.aggregates import AlarmEvent, Window
from proto.points import Point
from proto.streams import Numbering
from proto.uns import DevicePath


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
        self.numbering = Numbering(gateway=gateway, run=run, root=root, max_items=max_points)

    @property
    def seq(self) -> int:
        """The last seq given."""
        return self.numbering.seq

    def encode(self, o: Outgoing) -> list[Publication]:
        """The messages of buffer ``o``; its inputs are then held by each of them instead of by ``o``."""
        pubs = [Publication(topic, payload, o.jobs, stream, n)
                for stream, topic, payload, n in self.numbering.messages(o.device, o.points, o.windows, o.events)]
        for job in o.jobs:
            job.refs += len(pubs) - 1
        return pubs
