"""The gateway's write-ahead log of batch messages: every message waits here until ingestion has
committed it.

The publisher appends each batch message (numbered ``(run, seq)``), group-commits the appends with
one fsync, and the send loop publishes them oldest first. A message leaves the spool only when an
ingestion worker confirms its COMMIT (:mod:`proto.delivery`), not on the broker's PUBACK: a broker
that restarts without persistence, a shared subscription nobody holds yet, or a worker stopped for
good with messages queued for it all lose messages the broker had acknowledged. A message not
confirmed in time is handed out again (:meth:`Spool.due`), and every sent-but-unconfirmed message
again after a reconnect (:meth:`Spool.resend_all`); ingestion stores each message once (digest of
topic + payload: a re-send is byte for byte the same), so re-sends are harmless. A segment file is
deleted when every message in it is confirmed. A gateway that stops or crashes sends what is left
after its restart, under the old run's ids.

Files: ``<folder>/<n>.seg`` in the record format of :mod:`gateway.segments`. A torn record at the end
of the last segment (power cut mid-write) fails its length or CRC check and is dropped with a
warning; everything before it is kept. Without a folder the spool is memory only (same
rules, nothing survives a restart). The spool is bounded (``max_bytes``): when full, :meth:`append`
raises :class:`SpoolFull`, the publisher stops taking batches and pollers skip polls, counted:
backpressure, never a silent drop. Payloads stay in memory up to ``cache_bytes``; beyond that they
are read back from the segment file when sent.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import SpoolFull, SpoolLocked
from gateway.segments import (
    HEAD_BYTES,
    MAGIC,
    append_record,
    encode_record,
    lock_folder,
    recover_segment,
    write_all,
)

log = logging.getLogger("gateway.spool")

SEGMENT_BYTES = 8 * 1024 * 1024
CACHE_BYTES = 64 * 1024 * 1024
RESEND_CAP_S = 120.0  #: a message unconfirmed for long is re-sent at most this often
#: memory one record costs besides its payload (index entries, the Record object), counted toward
#: ``max_bytes`` so that a spool of many small messages stays within its bound in RAM too
RECORD_OVERHEAD = 512
#: run id of messages adopted from the earlier disk buffer: sent as they were, done at the broker's PUBACK
LEGACY_RUN = 0


@dataclass(slots=True, eq=False)
class Record:
    segment: int  #: segment file number (0 in a memory-only spool)
    run: int
    seq: int
    points: int
    topic: str
    payload: bytes | None  #: None: not cached, read back from ``offset`` in the segment file
    offset: int = 0  #: where the payload starts in its segment file
    length: int = 0  #: payload bytes
    timeouts: int = 0  #: times it was not confirmed in time (the next timeout doubles)
    sent_at: float = 0.0  #: monotonic time its confirmation timer last started
    deadline: float = 0.0  #: when it is due again unless confirmed (-1: at the next due(), not a timeout)
    sent_order: int = 0  #: order of the first hand-out (re-sends keep the original order)

    @property
    def key(self) -> tuple[int, int]:
        return self.run, self.seq


class Spool:
    def __init__(self, folder: Path | None, *, max_bytes: int, segment_bytes: int = SEGMENT_BYTES,
                 fsync: bool = True, cache_bytes: int = CACHE_BYTES) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.cache_bytes = cache_bytes
        self._pending: deque[Record] = deque()  # waiting to be sent, oldest first
        self._sent: OrderedDict[tuple[int, int], Record] = OrderedDict()  # sent, not confirmed; oldest send first
        self._all: dict[tuple[int, int], Record] = {}  # every unconfirmed record
        self._sizes: dict[int, int] = {}  # segment -> bytes (on disk; in memory for segment 0)
        self._open_records: dict[int, int] = {}  # segment -> records not yet confirmed
        self._cached = 0  # payload bytes held in memory
        self._write_seq = 0
        self._write_file: int | None = None  # fd of the segment being appended to
        self._dirty = False  # appended since the last sync
        self._read_fds: dict[int, int] = {}
        self._deadlines: list[tuple[float, int, tuple[int, int]]] = []  # heap of (due at, tiebreak, key)
        self._timeout = 10.0  # confirmation timeout (s) before doubling; the last one due() was given
        self._tiebreak = 0
        self._lock_fd: int | None = None
        #: ``*.seg.legacy`` files of the earlier format (no ``MAGIC``): see :func:`read_legacy_segment`
        self.legacy: list[Path] = []
        self.max_run = 0  #: highest run id among the recovered records
        self.points_waiting = 0
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self._lock()
            self._recover()

    # --- state ---------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes held (on disk, or in memory without a folder)."""
        return sum(self._sizes.values())

    @property
    def held(self) -> int:
        """What counts toward ``max_bytes``: :attr:`size` plus :data:`RECORD_OVERHEAD` per record."""
        return self.size + RECORD_OVERHEAD * len(self._all)

    @property
    def pending(self) -> int:
        """Records waiting to be sent (new, or due again)."""
        return len(self._pending)

    @property
    def sent(self) -> int:
        """Records sent and not yet confirmed."""
        return len(self._sent)

    @property
    def unconfirmed(self) -> int:
        """Records not yet confirmed by ingestion (sent or not)."""
        return len(self._all)

    def record_keys(self) -> list[tuple[int, int]]:
        """(run, seq) of every unconfirmed record."""
        return list(self._all)

    def holds(self, rec: Record) -> bool:
        """``rec`` is still unconfirmed."""
        return rec.key in self._all

    # --- writing -------------------------------------------------------------------------------

    def append(self, topic: str, payload: bytes, *, run: int, seq: int, points: int) -> Record:
        """Add a message; durable after the next :meth:`sync`. Raises :class:`SpoolFull`."""
        body = encode_record(topic, payload, run, seq, points)
        if self.held + len(body) + RECORD_OVERHEAD > self.max_bytes:
            raise SpoolFull(f"spool holds {self.held} bytes, limit {self.max_bytes}")
        if (run, seq) in self._all:
            raise ValueError(f"record ({run}, {seq}) is already in the spool")
        seg, offset = 0, 0
        if self.folder is not None:
            if self._write_file is None or self._sizes.get(self._write_seq, 0) + len(body) > self.segment_bytes:
                self._rotate()
            assert self._write_file is not None
            seg = self._write_seq
            start = self._sizes[seg]
            try:
                write_all(self._write_file, body)
            except OSError:
                with contextlib.suppress(OSError):  # no torn record in the middle of a segment
                    os.ftruncate(self._write_file, start)
                # and nothing after it if the truncate failed too: the next record goes to a new segment
                self.sync_quietly()
                self._close_writer()
                raise
            self._dirty = True
            offset = start + len(body) - len(payload)
        self._sizes[seg] = self._sizes.get(seg, 0) + len(body)
        self._open_records[seg] = self._open_records.get(seg, 0) + 1
        cache = self.folder is None or self._cached + len(payload) <= self.cache_bytes
        rec = Record(seg, run, seq, points, topic, payload if cache else None, offset, len(payload))
        if cache:
            self._cached += len(payload)
        self._all[rec.key] = rec
        self._pending.append(rec)
        self.points_waiting += points
        return rec

    def sync(self) -> None:
        """Group commit: one fsync for everything appended since the last one."""
        fd = self.take_sync()
        if fd is not None:
            os.fsync(fd)

    def take_sync(self) -> int | None:
        """The file descriptor to fsync for everything appended since the last call (None: nothing to
        do). The publisher fsyncs it in a thread, so the event loop keeps polling meanwhile; the fd stays
        open until the next :meth:`append` or :meth:`close`, which the publisher does not call before the
        fsync returned."""
        fd = self._write_file if self._dirty and self.fsync else None
        self._dirty = False
        return fd

    def sync_quietly(self) -> None:
        with contextlib.suppress(OSError):
            self.sync()

    def _rotate(self) -> None:
        assert self.folder is not None
        self.sync()
        self._close_writer()
        seg = max(self._sizes, default=0) + 1
        path = self._path(seg)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            write_all(fd, MAGIC)
        except OSError:  # disk full or failing: no half-made segment left behind; the append is retried
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._write_seq, self._write_file = seg, fd
        self._sizes[seg] = len(MAGIC)
        self._open_records[seg] = 0
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

    # --- sending and confirming ---------------------------------------------------------------

    def next(self) -> Record | None:
        """The oldest record waiting to be sent; it counts as sent from now (see :meth:`due`)."""
        while self._pending:
            rec = self._pending.popleft()
            if rec.key not in self._all:
                continue  # confirmed while it waited for a re-send
            if not rec.sent_order:
                self._tiebreak += 1
                rec.sent_order = self._tiebreak
            self._sent[rec.key] = rec
            self._sent.move_to_end(rec.key)
            self.started(rec)
            return rec
        return None

    def started(self, rec: Record) -> None:
        """(Re)start ``rec``'s confirmation timer: at hand-out, and again when the broker has taken it
        (with the timeout of the last :meth:`due`)."""
        rec.sent_at = time.monotonic()
        self._schedule(rec, rec.sent_at + min(self._timeout * 2 ** min(rec.timeouts, 16),
                                              max(self._timeout, RESEND_CAP_S)))

    def _schedule(self, rec: Record, at: float) -> None:
        rec.deadline = at  # an older heap entry of the record no longer matches: skipped as stale
        self._tiebreak += 1
        heapq.heappush(self._deadlines, (at, self._tiebreak, rec.key))

    def payload(self, rec: Record) -> bytes:
        """The record's payload (from memory, or read back from its segment file)."""
        if rec.payload is not None:
            return rec.payload
        assert self.folder is not None
        fd = self._read_fds.get(rec.segment)
        if fd is None:
            fd = self._read_fds[rec.segment] = os.open(self._path(rec.segment), os.O_RDONLY)
        return os.pread(fd, rec.length, rec.offset)

    def retry(self, rec: Record) -> None:
        """A handed-out record could not be sent (or the broker said nobody subscribed): send it again
        next, before newer ones."""
        if rec.key in self._all:
            self._sent.pop(rec.key, None)
            self._pending.appendleft(rec)

    def resend_all(self, skip: Container[tuple[int, int]] = ()) -> int:
        """After a reconnect: every sent, unconfirmed record is sent again, oldest first (but those in
        ``skip``: keys whose PUBACK is outstanding, which the MQTT client re-sends itself)."""
        recs = [r for r in self._sent.values() if r.key not in skip]
        return self._back(recs)

    def due(self, timeout: float, now: float | None = None, skip: Container[tuple[int, int]] = ()) -> int:
        """Records sent longer than their timeout ago without a confirmation go back to be sent again
        (the timeout doubles with every miss, up to :data:`RESEND_CAP_S`), and those marked due at once
        (:meth:`due_now`); returns how many. Cost: the records due, not all those sent (a heap)."""
        now = time.monotonic() if now is None else now
        self._timeout = timeout
        late: list[Record] = []
        held: list[Record] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            at, _, key = heapq.heappop(self._deadlines)
            rec = self._sent.get(key)
            if rec is None or at != rec.deadline:
                continue  # confirmed, back in the queue, or its timer restarted since: a stale entry
            if key in skip:  # its PUBACK is outstanding (the MQTT client re-sends it): look again later
                held.append(rec)
                continue
            if at >= 0:  # a timeout (not asked for by due_now)
                rec.timeouts += 1
            late.append(rec)
        for rec in held:
            self._schedule(rec, now + self._timeout)
        late.sort(key=lambda r: r.sent_order)
        return self._back(late)

    def due_now(self, rec: Record) -> None:
        """``rec`` must go again at the next :meth:`due` (the broker said nobody subscribed)."""
        if rec.key in self._sent:
            self._schedule(rec, -1.0)

    def _back(self, recs: list[Record]) -> int:
        for r in recs:
            del self._sent[r.key]
        self._pending.extendleft(reversed(recs))
        return len(recs)

    def confirm(self, run: int, ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> list[Record]:
        """Ingestion committed these seqs of ``run``: drop their records (segment files go when all
        their records are confirmed); returns the records confirmed now (not before)."""
        done: list[Record] = []
        for first, last in ranges:
            if last - first < len(self._all):
                keys = [(run, s) for s in range(first, last + 1)]
            else:  # a wide range: look at what we hold instead of every number in it
                keys = [k for k in self._all if k[0] == run and first <= k[1] <= last]
            for k in keys:
                rec = self._all.pop(k, None)
                if rec is not None:
                    self._sent.pop(k, None)  # a record still in _pending is skipped by next()
                    self._done(rec)
                    done.append(rec)
        return done

    def reject(self, rec: Record) -> Path | None:
        """The broker refused ``rec`` for good: keep it in ``rejected.seg`` (same record format, for an
        operator to inspect) and drop it from the log, so its segment can go. Nothing for a record
        confirmed meanwhile (an earlier send of it was stored; its file space may be reused)."""
        if rec.key not in self._all:
            return None
        path = self.reject_raw(rec.topic, self.payload(rec), rec.run, rec.seq, rec.points)
        del self._all[rec.key]
        self._sent.pop(rec.key, None)
        self._done(rec)
        return path

    def reject_raw(self, topic: str, payload: bytes, run: int = 0, seq: int = 0, points: int = 0) -> Path | None:
        """Append one record to ``rejected.seg`` (nothing without a folder); returns its path."""
        if self.folder is None:
            return None
        path = self.folder / "rejected.seg"
        append_record(path, topic, payload, run, seq, points)
        return path

    def _done(self, rec: Record) -> None:
        self.points_waiting -= rec.points
        if rec.payload is not None:
            self._cached -= rec.length
        seg = rec.segment
        self._open_records[seg] -= 1
        if self.folder is None:
            self._sizes[0] -= HEAD_BYTES + len(rec.topic.encode()) + rec.length
            return
        if self._open_records[seg] == 0:
            if seg == self._write_seq and self._write_file is not None:
                # the current segment is fully confirmed: empty it in place (no new file, no directory
                # fsync each time the spool drains, which is most of the time while all is well)
                try:
                    os.ftruncate(self._write_file, len(MAGIC))
                    self._sizes[seg] = len(MAGIC)
                    return
                except OSError as exc:
                    log.warning("spool segment %d not emptied (%s); starting a new one", seg, exc)
                    self.sync_quietly()
                    self._close_writer()
            self._delete(seg)

    def _delete(self, seg: int) -> None:
        fd = self._read_fds.pop(seg, None)
        if fd is not None:
            os.close(fd)
        try:
            self._path(seg).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # its records are all confirmed: a leftover file is re-sent once at most
            log.warning("spool segment %d not deleted: %s", seg, exc)
        self._sizes.pop(seg, None)
        self._open_records.pop(seg, None)

    def close(self) -> None:
        if self._write_file is not None and self.fsync:
            self._dirty = True  # a group whose fsync was cut short at shutdown is synced here
        self.sync_quietly()
        self._close_writer()
        if self.folder is not None and self._open_records.get(self._write_seq) == 0:
            self._delete(self._write_seq)  # emptied in place: nothing to keep
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock(self) -> None:
        """One process per spool folder: two would delete each other's segments."""
        assert self.folder is not None
        fd = lock_folder(self.folder)
        if fd is None:
            raise SpoolLocked(f"spool folder {self.folder} is in use by another process")
        self._lock_fd = fd

    # --- recovery ------------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        assert self.folder is not None
        return self.folder / f"{seq:012d}.seg"

    def _recover(self) -> None:
        assert self.folder is not None
        for path in sorted(self.folder.glob("*.seg")):
            try:
                seg = int(path.stem)
            except ValueError:
                continue
            records, good_bytes = recover_segment(path)
            if not records:
                continue
            self._sizes[seg] = good_bytes
            self._open_records[seg] = 0
            for topic, run, seq, points, offset, length in records:
                self.max_run = max(self.max_run, run)
                rec = Record(seg, run, seq, points, topic, None, offset, length)
                if rec.key in self._all:  # written twice (a re-send never appends; defensive)
                    continue
                self._open_records[seg] += 1
                self._all[rec.key] = rec
                self._pending.append(rec)
                self.points_waiting += points
        self._write_seq = max(self._sizes, default=0)
        self.legacy = sorted(self.folder.glob("*.seg.legacy"))
        if self._pending:
            log.info("spool: %d messages (%d points) from before the restart will be sent", len(self._pending),
                     self.points_waiting)
