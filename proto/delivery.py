"""End-to-end delivery: ingestion confirms to each gateway which of its batch messages are committed.

A gateway numbers its batch messages ``(gateway, run, seq)`` (:func:`proto.points.encode_batch`):
``run`` is one id per process start, ``seq`` counts the run's messages from 1. After every COMMIT an
ingestion worker publishes, per gateway and run, the seqs it committed (stored, already stored
before, or kept as dead letters) on the gateway's ack topic::

    <topic_root>/ack/v1/<gateway>      {"schema": 1, "run": 1764620000123, "seqs": [[1, 40], [43, 43]]}

``seqs`` are inclusive ranges, ascending and disjoint. A gateway keeps each message in its spool until
it is confirmed, and sends it again when no confirmation came in time: a broker's PUBACK only says the
broker took the message, not that anyone will store it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from proto.errors import PayloadError
from proto.points import SCHEMA_VERSION
from proto.uns import BATCH_ROOT, validate_level

_ACK_MARK = ("ack", "v1")
#: More ranges than this in one ack are split over several messages (bounded decode on both sides).
MAX_RANGES = 1000


@dataclass(frozen=True, slots=True)
class Ack:
    run: int
    seqs: tuple[tuple[int, int], ...]  #: inclusive (first, last) ranges (may be wide: do not expand blindly)


def ack_topic(gateway: str, root: str = BATCH_ROOT) -> str:
    """The topic a gateway's confirmations arrive on."""
    return f"{root}/{_ACK_MARK[0]}/{_ACK_MARK[1]}/{validate_level(gateway, what='gateway')}"


def ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges of ``seqs``."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def encode_acks(run: int, seqs: Iterable[int]) -> list[bytes]:
    """Payloads confirming ``seqs`` of ``run`` (one, or several for very scattered seqs)."""
    rs = ranges(seqs)
    return [orjson.dumps({"schema": SCHEMA_VERSION, "run": run, "seqs": rs[i:i + MAX_RANGES]})
            for i in range(0, len(rs), MAX_RANGES)]


def decode_ack(payload: bytes) -> Ack:
    """Decode an ack payload; :class:`PayloadError` says what is wrong."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"ack is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or type(doc.get("schema")) is not int or doc["schema"] != SCHEMA_VERSION:
        raise PayloadError("ack must be a JSON object with schema 1")
    run, raw = doc.get("run"), doc.get("seqs")
    if type(run) is not int or not isinstance(raw, list) or len(raw) > MAX_RANGES:
        raise PayloadError(f"ack needs an integer 'run' and at most {MAX_RANGES} 'seqs' ranges")
    out: list[tuple[int, int]] = []
    for r in raw:
        if (not isinstance(r, list) or len(r) != 2 or type(r[0]) is not int or type(r[1]) is not int
                or not 0 <= r[0] <= r[1] < 2**63):
            raise PayloadError("ack 'seqs' must be [first, last] integer ranges")
        out.append((r[0], r[1]))
    return Ack(run, tuple(out))


__all__ = ["MAX_RANGES", "Ack", "ack_topic", "decode_ack", "encode_acks", "ranges"]
