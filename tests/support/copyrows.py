"""Reading back one row of PostgreSQL's binary COPY format, as :mod:`ingestion.rows` writes it."""

from __future__ import annotations

import struct


def copy_fields(row: bytes) -> list[bytes | None]:
    """The fields of one binary COPY row (None for NULL); the row must hold nothing after them."""
    (n,) = struct.unpack_from(">h", row, 0)
    pos, out = 2, []
    for _ in range(n):
        (ln,) = struct.unpack_from(">i", row, pos)
        pos += 4
        out.append(None if ln == -1 else row[pos:pos + ln])
        pos += max(ln, 0)
    assert pos == len(row), "trailing bytes in row"
    return out
