"""The gateway's disk buffer: batch messages that cannot go to the broker now wait here, in order.

While the broker is unreachable (or the buffer still holds older messages), the publisher appends
each batch message to the spool instead of holding it in memory; polling goes on. Once connected,
the replay loop sends the spooled messages oldest first and deletes a segment file when every
message in it is acknowledged. A gateway that stops or crashes with messages spooled sends them
after its restart. Replays can repeat a message the broker already had (acknowledged just before a
crash); ingestion stores each message once (digest of topic + payload), so that is harmless.

Files: ``<folder>/<seq>.seg``, each a run of records ``u32 length | u32 crc32 | u16 topic length |
topic | payload``. A torn record at the end of the last segment (power cut mid-write) fails its
length or CRC check and is dropped with a warning; everything before it is kept. The spool is
bounded (``max_bytes``): when full, :meth:`append` raises :class:`SpoolFull` and the publisher
stops taking batches, so pollers skip polls and count them: backpressure, never a silent drop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gateway.spool")

_HEAD = struct.Struct(">IIH")  # record length (after these 8 bytes), crc32 of the rest, topic length
SEGMENT_BYTES = 8 * 1024 * 1024


class SpoolFull(Exception):
    """The spool holds ``max_bytes``; the caller must wait (backpressure)."""


@dataclass(frozen=True, slots=True)
class Record:
    segment: int  #: sequence number of the segment file
    topic: str
    payload: bytes


class Spool:
    def __init__(self, folder: Path, *, max_bytes: int, segment_bytes: int = SEGMENT_BYTES, fsync: bool = True) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        folder.mkdir(parents=True, exist_ok=True)
        self._pending: deque[Record] = deque()  # not yet handed to the replay loop
        self._sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._open_records: dict[int, int] = {}  # segment -> records not yet acknowledged
        self._write_seq = 0
        self._write_file: int | None = None  # fd of the segment being appended to
        self.appended = 0
        self.acked = 0
        self._recover()

    # --- state ---------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes on disk."""
        return sum(self._sizes.values())

    @property
    def pending(self) -> int:
        """Records waiting to be sent."""
        return len(self._pending)

    @property
    def unacked(self) -> int:
        """Records written and not yet acknowledged by the broker (sent or not)."""
        return sum(self._open_records.values())

    # --- writing -------------------------------------------------------------------------------

    def append(self, topic: str, payload: bytes) -> None:
        body = _record(topic, payload)
        if self.size + len(body) > self.max_bytes:
            raise SpoolFull(f"spool holds {self.size} bytes, limit {self.max_bytes}")
        if self._write_file is None or self._sizes.get(self._write_seq, 0) + len(body) > self.segment_bytes:
            self._rotate()
        assert self._write_file is not None
        start = self._sizes[self._write_seq]
        try:
            _write_all(self._write_file, body)
            if self.fsync:
                os.fsync(self._write_file)
        except OSError:
            with contextlib.suppress(OSError):  # no torn record in the middle of a segment
                os.ftruncate(self._write_file, start)
            raise
        self._sizes[self._write_seq] += len(body)
        self._open_records[self._write_seq] += 1
        self._pending.append(Record(self._write_seq, topic, payload))
        self.appended += 1

    def _rotate(self) -> None:
        self._close_writer()
        self._write_seq = max(self._sizes, default=0) + 1
        path = self._path(self._write_seq)
        self._write_file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes[self._write_seq] = 0
        self._open_records[self._write_seq] = 0
        if self.fsync:  # the new file's name must survive a power cut too
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _close_writer(self) -> None:
        if self._write_file is not None:
            os.close(self._write_file)
            self._write_file = None

    # --- reading and acknowledging ----------------------------------------------------------------

    def next(self) -> Record | None:
        """The oldest record not yet handed out (the caller publishes it, then calls :meth:`ack`)."""
        return self._pending.popleft() if self._pending else None

    def requeue(self, record: Record) -> None:
        """A handed-out record whose publish failed goes back to the front."""
        self._pending.appendleft(record)

    def ack(self, record: Record) -> None:
        """The broker acknowledged ``record``; a segment whose records are all acknowledged is deleted."""
        seg = record.segment
        self._open_records[seg] -= 1
        self.acked += 1
        if self._open_records[seg] == 0 and seg != self._write_seq:
            self._delete(seg)
        elif self._open_records[seg] == 0 and not any(r.segment == seg for r in self._pending):
            self._close_writer()  # the current segment is fully sent: start afresh next time
            self._delete(seg)

    def reject(self, record: Record) -> Path:
        """The broker refused ``record`` for good: keep it in ``rejected.seg`` (same record format,
        for an operator to inspect) and acknowledge it, so its segment can go."""
        path = self.folder / "rejected.seg"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _write_all(fd, _record(record.topic, record.payload))
        finally:
            os.close(fd)
        self.ack(record)
        return path

    def _delete(self, seg: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(seg).unlink()
        self._sizes.pop(seg, None)
        self._open_records.pop(seg, None)

    def close(self) -> None:
        self._close_writer()

    # --- recovery ------------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.folder / f"{seq:012d}.seg"

    def _recover(self) -> None:
        for path in sorted(self.folder.glob("*.seg")):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            records, good_bytes = _read_segment(path)
            if good_bytes < path.stat().st_size:
                log.warning("spool segment %s: dropped a torn record at byte %d (power cut mid-write?)",
                            path.name, good_bytes)
                os.truncate(path, good_bytes)
            if not records:
                path.unlink()
                continue
            self._sizes[seq] = good_bytes
            self._open_records[seq] = len(records)
            self._pending.extend(Record(seq, t, p) for t, p in records)
        self._write_seq = max(self._sizes, default=0)
        if self._pending:
            log.info("spool: %d messages from before the restart will be sent", len(self._pending))


def _record(topic: str, payload: bytes) -> bytes:
    """One record, as :func:`_read_segment` reads it back."""
    t = topic.encode()
    return _HEAD.pack(len(t) + len(payload) + 2, zlib.crc32(t + payload), len(t)) + t + payload


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_segment(path: Path) -> tuple[list[tuple[str, bytes]], int]:
    data = path.read_bytes()
    out: list[tuple[str, bytes]] = []
    pos = 0
    while pos + 10 <= len(data):
        length, crc = struct.unpack_from(">II", data, pos)
        end = pos + 8 + length
        if end > len(data) or length < 2:
            break
        body = data[pos + 8:end]
        (tlen,) = struct.unpack_from(">H", body)
        rest = body[2:]
        if tlen > len(rest) or zlib.crc32(rest) != crc:
            break
        out.append((rest[:tlen].decode(errors="replace"), rest[tlen:]))
        pos = end
    return out, pos
