"""The spool's files: segments of CRC'd records, and the segments of the earlier disk buffer.

A segment is ``MAGIC`` then records ``u32 length | u32 crc32 | u16 topic length | u64 run | u64 seq |
u32 points | topic | payload``; length and crc cover what follows them, so a torn or corrupt tail
fails its check and ends the readable part. The earlier format (before the write-ahead log) has no
``MAGIC`` and records ``u32 length | u32 crc32 | u16 topic length | topic | payload``, its crc over
topic + payload.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from pathlib import Path

log = logging.getLogger("gateway.spool")

MAGIC = b"NXSPOOL2"
_HEAD = struct.Struct(">IIHQQI")  # length (after 8 bytes), crc32 of the rest, topic length, run, seq, points
HEAD_BYTES = _HEAD.size  #: bytes of a record before its topic
_HEAD_AFTER_CRC = _HEAD.size - 8


def encode_record(topic: str, payload: bytes, run: int, seq: int, points: int) -> bytes:
    """One record, as :func:`read_segment` reads it back."""
    t = topic.encode()
    rest = struct.pack(">HQQI", len(t), run, seq, points) + t + payload
    return struct.pack(">II", len(rest), zlib.crc32(rest)) + rest


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_legacy_segment(path: Path) -> list[tuple[str, bytes]]:
    """``[(topic, payload)]`` of a segment written by the disk buffer before the write-ahead log
    (records ``u32 length | u32 crc32 | u16 topic length | topic | payload``, no header); a torn or
    corrupt tail ends the list."""
    data = path.read_bytes()
    out: list[tuple[str, bytes]] = []
    pos = 0
    while pos + 10 <= len(data):
        length, crc = struct.unpack_from(">II", data, pos)
        end = pos + 8 + length
        # that format's crc covers topic + payload, not the topic length before them
        if end > len(data) or length < 2 or zlib.crc32(data[pos + 10:end]) != crc:
            break
        (tlen,) = struct.unpack_from(">H", data, pos + 8)
        if 10 + tlen > 8 + length:
            break
        out.append((data[pos + 10:pos + 10 + tlen].decode(errors="replace"), data[pos + 10 + tlen:end]))
        pos = end
    return out


def read_segment(path: Path) -> tuple[list[tuple[str, int, int, int, int, int]] | None, int]:
    """``([(topic, run, seq, points, payload offset, payload length)], good bytes)`` of a segment file;
    ``(None, 0)`` when it does not start with :data:`MAGIC`."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        return (None, 0) if data else ([], 0)
    out: list[tuple[str, int, int, int, int, int]] = []
    pos = len(MAGIC)
    while pos + HEAD_BYTES <= len(data):
        length, crc = struct.unpack_from(">II", data, pos)
        end = pos + 8 + length
        if end > len(data) or length < _HEAD_AFTER_CRC or zlib.crc32(data[pos + 8:end]) != crc:
            break
        tlen, run, seq, points = struct.unpack_from(">HQQI", data, pos + 8)
        tstart = pos + HEAD_BYTES
        if tstart + tlen > end:
            break
        out.append((data[tstart:tstart + tlen].decode(errors="replace"), run, seq, points, tstart + tlen,
                    end - tstart - tlen))
        pos = end
    return out, pos


def recover_segment(path: Path) -> tuple[list[tuple[str, int, int, int, int, int]], int]:
    """:func:`read_segment` at a restart: a torn tail is cut off (with a warning), an empty segment
    deleted, and a segment of the earlier format renamed ``*.seg.legacy`` for the publisher to adopt
    (both return no records)."""
    records, good_bytes = read_segment(path)
    if records is None:  # written by a build before the write-ahead log
        path.rename(path.with_name(path.name + ".legacy"))
        return [], 0
    if good_bytes < path.stat().st_size:
        log.warning("spool segment %s: dropped a torn record at byte %d (power cut mid-write?)", path.name, good_bytes)
        os.truncate(path, good_bytes)
    if not records:
        path.unlink()
    return records, good_bytes


def append_record(path: Path, topic: str, payload: bytes, run: int, seq: int, points: int) -> None:
    """Append one record to the segment ``path`` (created with its ``MAGIC`` when new)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if os.fstat(fd).st_size == 0:
            write_all(fd, MAGIC)
        write_all(fd, encode_record(topic, payload, run, seq, points))
    finally:
        os.close(fd)


def lock_folder(folder: Path) -> int | None:
    """An exclusive lock on ``folder`` (its ``lock`` file) held while the returned fd is open; None
    when another process holds it."""
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
