"""What the host's answer to one Sparkplug message becomes in the worker's buffer: :class:`~ingestion.items.Item`s,
the very items the JSON batches become (same transaction, COPY, rows, dead-letter table).

- points of one UNS device → one item each (an NDEATH marks the node and each of its devices: several), the
  message's digest made per device so that the writer's redelivery check keeps them apart;
- a message the host could not read (``HostResult.error``), or larger than ``max_message_bytes`` → one dead
  letter item keeping the bytes;
- a message with nothing to store (a STATE, a command, an NBIRTH of only bdSeq and Node Control, a stale will)
  → no item: there is nothing to commit, so the caller acknowledges it at once.

The message is acknowledged once, after the commit of its items: its :class:`ClientAck` (which knows the
client the message came on, the host's own) rides on the last item, the others carry none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ingestion.items import Item, bounded_text, decode_item
from ingestion.sparkplug.host import HostResult
from nexus.mqtt import Message, MqttClient
from proto import Batch, Point


@dataclass(frozen=True, slots=True)
class ClientAck:
    """Acknowledges ``message`` on ``client`` (not the worker's main client): called after the commit."""

    client: MqttClient
    message: Message

    def __call__(self) -> None:
        self.client.ack(self.message)


def oversize(topic: str, payload: bytes, *, ack: object, max_bytes: int) -> Item | None:
    """The dead letter of a message too large to decode (the JSON path's rule and item), else None."""
    if len(payload) <= max_bytes:
        return None
    return decode_item(topic, payload, root="-", ack=ack, max_bytes=max_bytes)


def result_items(topic: str, payload: bytes, res: HostResult, *, ack: object) -> list[Item]:
    """The items of one message the host has read (see the module's docstring)."""
    size = len(payload)
    if res.error is not None:
        return [Item(topic, payload, ack=ack, size=size, error=bounded_text(res.error))]
    out = []
    head = topic.encode() + b"\x00" + payload
    for device, points in res.points:
        pts, duplicates = _last_of_each(points)
        digest = hashlib.blake2b(head + b"\x00" + device.path.encode(), digest_size=16).digest()
        out.append(Item(topic, payload, digest=digest, device=device, batch=Batch(pts, duplicates=duplicates),
                        size=size))
    if out:
        out[-1].ack = ack
    return out


def _last_of_each(points: list[Point]) -> tuple[list[Point], int]:
    """``points`` with one per (tag, ts), the last one (as :func:`proto.decode_batch` keeps them); how many went."""
    last = {(p.tag, p.ts): i for i, p in enumerate(points)}
    if len(last) == len(points):
        return points, 0
    return [points[i] for i in sorted(last.values())], len(points) - len(last)
