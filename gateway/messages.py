"""Device batches → numbered messages: points on the batch stream, closed windows on the windows
stream, alarm events on the events stream (topics and payloads from :mod:`proto`).

Every message gets the next ``seq`` of this run, whatever its stream, so one confirmation scheme
(:mod:`proto.delivery`) covers them all. Point messages are split at ``max_points`` and in halves
while larger than :data:`MAX_MESSAGE_BYTES`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from gateway.readings import DeviceBatch
from proto import batch_topic, encode_batch
from proto.aggregates import encode_events, encode_windows, events_topic, windows_topic
from proto.points import MAX_BATCH_BYTES

#: a batch message larger than this is split (ingestion dead-letters messages over its max_message_bytes,
#: 1 MiB by default and never below this; a single point larger than this still goes alone)
MAX_MESSAGE_BYTES = MAX_BATCH_BYTES
T = TypeVar("T")


class Numbering:
    """The messages of one gateway run, numbered 1, 2, 3, ..."""

    def __init__(self, *, gateway: str, run: int, root: str, max_points: int) -> None:
        self.gateway = gateway
        self.run = run
        self.root = root
        self.max_points = max_points
        self.seq = 0  #: the last number given

    def messages(self, batch: DeviceBatch) -> Iterator[tuple[str, bytes, int]]:
        """``(topic, payload, points)`` of each message of ``batch``; :attr:`seq` is the message's
        number while it is handed out."""
        path = batch.device.path
        if batch.points:
            topic = batch_topic(path, self.root)
            step = self.max_points
            todo = [batch.points[i:i + step] for i in range(0, len(batch.points), step)]
            while todo:
                chunk = todo.pop(0)
                payload = encode_batch(chunk, seq=self.seq + 1, gateway=self.gateway, run=self.run)
                if len(payload) > MAX_MESSAGE_BYTES and len(chunk) > 1:  # long strings: halve it
                    half = len(chunk) // 2
                    todo[:0] = [chunk[:half], chunk[half:]]
                    continue
                self.seq += 1
                yield topic, payload, len(chunk)
        if batch.windows:
            yield from self._split(windows_topic(path, self.root), batch.windows, encode_windows)
        if batch.events:
            yield from self._split(events_topic(path, self.root), batch.events, encode_events)

    def _split(self, topic: str, items: list[T], encode: Callable[..., bytes]) -> Iterator[tuple[str, bytes, int]]:
        """Windows or events in messages of at most ``max_points`` entries and :data:`MAX_MESSAGE_BYTES`
        (halved while larger; one entry alone always goes)."""
        todo = [items[i:i + self.max_points] for i in range(0, len(items), self.max_points)]
        while todo:
            chunk = todo.pop(0)
            payload = encode(chunk, seq=self.seq + 1, gateway=self.gateway, run=self.run)
            if len(payload) > MAX_MESSAGE_BYTES and len(chunk) > 1:
                half = len(chunk) // 2
                todo[:0] = [chunk[:half], chunk[half:]]
                continue
            self.seq += 1
            yield topic, payload, 0
