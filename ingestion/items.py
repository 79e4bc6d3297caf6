"""One received MQTT message, decoded on arrival: an :class:`Item` the daemon batches and the writer
stores, or a dead letter saying why not.

Three device streams arrive on one shared subscription each (``<root>/batch/v1/...``,
``<root>/windows/v1/...``, ``<root>/events/v1/...``): the topic's family picks the decoder
(:func:`proto.aggregates.parse_stream_topic`). All three are numbered ``(gw, run, seq)`` and
confirmed the same way once committed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from proto import Batch, ContractError, DevicePath, decode_batch
from proto.aggregates import EventBatch, WindowBatch, decode_events, decode_windows, parse_stream_topic
from proto.points import DeliveryId, delivery_id, peek_delivery_id

#: Bytes of an error text stored with a dead letter or logged: enough for the reason and a quoted prefix.
MAX_ERROR_BYTES = 400
#: Bytes kept of a message larger than ``max_message_bytes`` (its size and sha256 name the whole).
OVERSIZE_PREFIX_BYTES = 1024


def bounded_text(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes (marked with "..."), NUL-free (PostgreSQL text refuses NUL)."""
    text = text.replace("\x00", "\\x00")
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[:limit - 3].decode("utf-8", "ignore") + "..."


@dataclass(slots=True)
class Item:
    """One received MQTT message, decoded (or not) on arrival. A decoded item holds exactly one of
    ``batch`` (points), ``windows`` or ``events``."""

    topic: str
    payload: bytes  #: the message, or its first OVERSIZE_PREFIX_BYTES if it was larger than allowed
    digest: bytes = b""
    device: DevicePath | None = None
    batch: Batch | None = None
    windows: WindowBatch | None = None
    events: EventBatch | None = None
    error: str | None = None  #: why it is a dead letter (bounded, starts with the exception type)
    #: what the daemon needs to acknowledge it: a nexus.mqtt.Message of its own client, or a callable that acks
    #: on another client (ingestion.sparkplug.items.ClientAck); None: acknowledged with another item
    ack: object = None
    size: int = 0  #: bytes of the whole message as received
    sha256: bytes = b""  #: of the whole message, kept for an oversize one (others: computed when stored)
    delivery: DeliveryId | None = None  #: what to confirm to the sending gateway once committed

    @property
    def points(self) -> int:
        return len(self.batch.points) if self.batch else 0

    @property
    def rows(self) -> int:
        """Points, windows or alarm events the item holds (what backpressure counts)."""
        if self.batch is not None:
            return len(self.batch.points)
        if self.windows is not None:
            return len(self.windows.windows)
        return len(self.events.events) if self.events is not None else 0

    def decoded(self) -> tuple[DevicePath, Batch]:
        """Device and batch of a point item that decoded (``error`` is None)."""
        assert self.device is not None and self.batch is not None, self.error
        return self.device, self.batch

    def tag_refs(self) -> Iterator[tuple[str, str | None]]:
        """``(tag, unit)`` of every entry of a decoded item (windows and events carry no unit)."""
        if self.batch is not None:
            for p in self.batch.points:
                yield p.tag, p.unit
        elif self.windows is not None:
            for w in self.windows.windows:
                yield w.tag, None
        elif self.events is not None:
            for e in self.events.events:
                yield e.tag, None

    def fail(self, exc: BaseException, context: str = "") -> None:
        """Make this item a dead letter because of ``exc`` (type and bounded text)."""
        self.error = bounded_text(f"{context}{type(exc).__name__}: {exc}")


def decode_item(topic: str, payload: bytes, *, root: str, ack: object = None,
                max_bytes: int = 1024 * 1024) -> Item:
    """Decode on arrival; whatever goes wrong makes a dead-letter item, never an exception.

    A payload above ``max_bytes`` is not decoded: it becomes a dead letter keeping its first
    :data:`OVERSIZE_PREFIX_BYTES`, with its size and sha256 in the error text.
    """
    size = len(payload)
    item = Item(topic, payload, ack=ack, size=size)
    if size > max_bytes:
        item.payload = payload[:OVERSIZE_PREFIX_BYTES]
        item.sha256 = hashlib.sha256(payload).digest()
        item.error = (f"MessageTooLarge: {size} bytes > max_message_bytes {max_bytes}; "
                      f"sha256 {item.sha256.hex()}; first {len(item.payload)} bytes kept")
        item.delivery = peek_delivery_id(payload)  # confirmed once kept, or its gateway re-sends it for ever
        return item
    try:
        kind, item.device = _stream_of(topic, root)
        if kind == "windows":
            item.windows = decode_windows(payload)
            item.delivery = _delivery(item.windows.gateway, item.windows.run, item.windows.seq)
        elif kind == "events":
            item.events = decode_events(payload)
            item.delivery = _delivery(item.events.gateway, item.events.run, item.events.seq)
        else:
            item.batch = decode_batch(payload)
            item.delivery = item.batch.delivery
        item.digest = hashlib.blake2b(topic.encode() + b"\x00" + payload, digest_size=16).digest()
    except ContractError as exc:
        item.fail(exc)
    except Exception as exc:  # noqa: BLE001 - any failure on one message makes that message a dead letter
        item.fail(exc, "unexpected ")
    if item.error is not None:
        item.device = item.batch = item.windows = item.events = None
        item.digest = b""
        item.delivery = _delivery_of_bad(payload)
    return item


#: topics seen -> (stream, device): a device publishes on the same few topics for ever, and parsing one
#: (five levels validated) cost a quarter of decoding a 100-point batch (bench/ingest.py, cProfile)
_streams: dict[tuple[str, str], tuple[str, DevicePath]] = {}
_STREAMS_MAX = 100_000


def _stream_of(topic: str, root: str) -> tuple[str, DevicePath]:
    key = (topic, root)
    found = _streams.get(key)
    if found is None:
        found = parse_stream_topic(topic, root)  # a bad topic raises, and is never kept
        if len(_streams) >= _STREAMS_MAX:
            _streams.clear()
        _streams[key] = found
    return found


def _delivery(gateway: str | None, run: int | None, seq: int | None) -> DeliveryId | None:
    if gateway is None or run is None or seq is None:
        return None
    return gateway, run, seq


def _delivery_of_bad(payload: bytes) -> DeliveryId | None:
    """Best effort: the (gateway, run, seq) of a message that did not decode, so that it is confirmed
    once kept as a dead letter (its gateway would otherwise re-send it for ever)."""
    try:
        doc: Any = orjson.loads(payload)
        if not isinstance(doc, dict):
            return None
        gateway, run, seq = delivery_id(doc)
    except Exception:  # noqa: BLE001 - not addressable: no ack; the gateway gives up on it its own way
        return None
    return _delivery(gateway, run, seq)
