"""A device's output as numbered messages on the three streams: points on ``<root>/batch/v1``,
closed windows on ``<root>/windows/v1``, alarm events on ``<root>/events/v1``.

Every message of a run gets the next ``seq``, whatever its stream, so one confirmation scheme
(:mod:`proto.delivery`) covers them all. Messages hold at most ``max_items`` entries and are halved
while larger than :data:`MAX_MESSAGE_BYTES` (a single larger entry still goes alone). The gateway's
publisher and the normalizer daemon both number their output with :class:`Numbering`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from proto.aggregates import AlarmEvent, Window, encode_events, encode_windows, events_topic, windows_topic
from proto.points import MAX_BATCH_BYTES, Point, encode_batch
from proto.uns import DevicePath, batch_topic

#: a message larger than this is split (ingestion dead-letters messages over its max_message_bytes,
#: 1 MiB by default and never below this)
MAX_MESSAGE_BYTES = MAX_BATCH_BYTES
T = TypeVar("T")


class Numbering:
    """The messages of one run of one publisher (``gw``), numbered 1, 2, 3, ..."""

    def __init__(self, *, gateway: str, run: int, root: str, max_items: int) -> None:
        self.gateway = gateway
        self.run = run
        self.root = root
        self.max_items = max_items
        self.seq = 0  #: the last number given

    def messages(self, device: DevicePath, points: Sequence[Point], windows: Sequence[Window] = (),
                 events: Sequence[AlarmEvent] = ()) -> Iterator[tuple[str, str, bytes, int]]:
        """``(stream, topic, payload, entries)`` of each message; :attr:`seq` is the message's number
        while it is handed out."""
        if points:
            yield from self._split("batch", batch_topic(device, self.root), points, encode_batch)
        if windows:
            yield from self._split("windows", windows_topic(device, self.root), windows, encode_windows)
        if events:
            yield from self._split("events", events_topic(device, self.root), events, encode_events)

    def _split(self, stream: str, topic: str, items: Sequence[T],
               encode: Callable[..., bytes]) -> Iterator[tuple[str, str, bytes, int]]:
        step = self.max_items
        todo: list[list[Any]] = [list(items[i:i + step]) for i in range(0, len(items), step)]
        while todo:
            chunk = todo.pop(0)
            payload = encode(chunk, seq=self.seq + 1, gateway=self.gateway, run=self.run)
            if len(payload) > MAX_MESSAGE_BYTES and len(chunk) > 1:  # long strings: halve it
                half = len(chunk) // 2
                todo[:0] = [chunk[:half], chunk[half:]]
                continue
            self.seq += 1
            yield stream, topic, payload, len(chunk)
