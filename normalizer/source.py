"""The normalizer daemon's input: which topic is which, the two formats it reads, the checks against
the devices file, and the dead letter of a message it refuses.

Two inputs:

* our batch messages (:func:`proto.points.decode_batch`) on
  ``<in_root>/batch/v1/<enterprise>/<site>/<area>/<line>/<device>``;
* per-tag messages from third parties on ``<in_prefix>/<enterprise>/<site>/<area>/<line>/<device>/<tag>``:
  a JSON object ``{"value": 21.5, "ts": 1732370000123, "q": 0, "unit": "degF"}`` (read as a per-tag UNS
  payload, :func:`proto.points.decode_point`; ``schema`` may be left out, ``ts`` too: the arrival time
  is taken, ``q`` too: GOOD), or a bare JSON number, bool or string (``21.5``, ``true``, ``"MOLD-42"``):
  that value, GOOD, at the arrival time. Anything else (``null``, a list, text that is not JSON, ``ts``
  as a float or a string) is refused.

A refused message raises :class:`InputError`; the daemon publishes its dead letter
(:func:`encode_dead_letter`) and acknowledges it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import orjson

from nexus.report import bounded, describe
from normalizer.devices import DeviceDef
from proto.errors import ContractError
from proto.points import SCHEMA_VERSION, DeliveryId, Point, brief, decode_batch, decode_point
from proto.types import DateTime
from proto.uns import DevicePath, TagPath, parse_batch_topic

#: why a message was refused (the ``kind`` of its dead letter and the label of its metric)
KINDS = ("oversize", "topic", "payload", "type", "unit", "unexpected")
_NUMBERS = (int, float)
_SCALARS = (int, float, bool, str)


class InputError(ValueError):
    """An input message the normalizer refuses; ``kind`` is one of :data:`KINDS`."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Decoded:
    """The points of one input message, and where they come from."""

    device: DevicePath
    points: list[Point]
    delivery: DeliveryId | None = None  #: (gw, run, seq) of an input batch that asks for a confirmation
    duplicates: int = 0  #: points dropped by decode_batch: a later point of the message had the same (tag, ts)


class Source:
    """Tells the two inputs apart by topic and decodes them."""

    def __init__(self, *, in_root: str, in_prefix: str, batches: bool, tags: bool, max_bytes: int) -> None:
        self.in_root = in_root
        self._batch_head = f"{in_root}/batch/v1/" if batches else None
        self._tag_head = (f"{in_prefix}/" if in_prefix else "") if tags else None
        self.max_bytes = max_bytes

    def kind(self, topic: str) -> str:
        """``batch``, ``tag`` or ``other``: which input a topic belongs to (a batch topic wins)."""
        if self._batch_head is not None and topic.startswith(self._batch_head):
            return "batch"
        if self._tag_head is not None and topic.startswith(self._tag_head):
            return "tag"
        return "other"

    def decode(self, topic: str, payload: bytes, now_ms: int) -> Decoded:
        """The points of the message; :class:`InputError` says why not."""
        if len(payload) > self.max_bytes:
            raise InputError(f"message of {len(payload)} bytes is larger than max_message_bytes {self.max_bytes}",
                             kind="oversize")
        kind = self.kind(topic)
        if kind == "batch":
            try:
                device = parse_batch_topic(topic, self.in_root)
            except ContractError as exc:
                raise InputError(describe(exc), kind="topic") from exc
            try:
                batch = decode_batch(payload)
            except ContractError as exc:
                raise InputError(describe(exc), kind="payload") from exc
            return Decoded(device, batch.points, batch.delivery, batch.duplicates)
        if kind == "tag":
            assert self._tag_head is not None
            try:
                tag = TagPath.parse(topic[len(self._tag_head):])
            except ContractError as exc:
                raise InputError(describe(exc), kind="topic") from exc
            return Decoded(tag.device, [decode_tag_payload(payload, tag.tag, now_ms)])
        raise InputError(f"topic {bounded(topic)} is under neither input", kind="topic")


def decode_tag_payload(payload: bytes, tag: str, now_ms: int) -> Point:
    """A third party's per-tag payload (see the module's docstring) as a point of ``tag``; a reading
    without ``ts`` is taken at ``now_ms``."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"not JSON: {bounded(str(exc))}", kind="payload") from exc
    if doc.__class__ is dict:
        doc.setdefault("schema", SCHEMA_VERSION)
        if doc.get("ts") is None:
            doc["ts"] = now_ms
    elif doc.__class__ in _SCALARS:
        doc = {"schema": SCHEMA_VERSION, "value": doc, "ts": now_ms}
    else:
        raise InputError(f"a per-tag payload is a JSON object or a bare number, bool or string, got {brief(doc)}",
                         kind="payload")
    try:  # through proto's decoder, so a third party's point is checked exactly like ours
        return decode_point(orjson.dumps(doc), tag)
    except ContractError as exc:
        raise InputError(describe(exc), kind="payload") from exc


def _fits(dtype: str, value: object) -> bool:
    cls = value.__class__
    if dtype == "bool":
        return cls is bool
    if dtype == "string":
        return cls is str
    if dtype == "datetime":
        return cls is DateTime  # {"datetime": <ms>} on the wire; a bare number is no date
    return cls in _NUMBERS  # every numeric type takes an integer or a float (not a bool)


def prepare(device: DeviceDef | None, points: list[Point]) -> list[Point]:
    """The points of a configured device checked against its tags' types and units, each carrying its
    tag's unit (the unit the rules convert to); a tag not in the devices file passes unchanged.

    The unit a point may carry is its tag's ``from_unit`` when the tag converts, else its ``unit``: a
    value in another unit would be converted wrongly (or not at all), so the message is refused.
    """
    if device is None:
        return points
    tags = device.tags
    out = []
    for p in points:
        t = tags.get(p.tag)
        if t is None:
            out.append(p)
            continue
        value = p.value
        if value is not None and not _fits(t.type, value):
            raise InputError(f"tag {p.tag!r} is {t.type}, got {brief(value)}", kind="type")
        expected = t.rules.transform.from_unit or t.unit
        if p.unit is not None and expected is not None and p.unit != expected:
            raise InputError(f"tag {p.tag!r}: unit {brief(p.unit)} is not the unit its values are expected in "
                             f"({expected!r})", kind="unit")
        out.append(p if t.unit is None or p.unit == t.unit else Point(p.tag, value, p.ts, p.status, t.unit, p.reason))
    return out


def encode_dead_letter(*, normalizer: str, topic: str, payload: bytes, kind: str, reason: str, ts: int,
                       keep: int) -> bytes:
    """The dead letter of a refused input: why, where it came from, and its first ``keep`` bytes
    (base64), with the whole message's size and sha256."""
    kept = payload[:keep]
    return orjson.dumps({
        "schema": SCHEMA_VERSION, "normalizer": normalizer, "ts": ts, "kind": kind, "reason": bounded(reason, 400),
        "topic": bounded(topic, 1024), "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": base64.b64encode(kept).decode(), "truncated": len(kept) < len(payload)})
