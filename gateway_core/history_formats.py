"""The history API's answer as JSON (whole, in memory) or streamed as CSV, JSON lines or Parquet.

Rows come from :mod:`gateway_core.history_query`: raw points ``(time, value, value_text, status,
reason)`` (written with their quality between status and reason) or buckets ``(time, <stats...>)``. Times
are ISO 8601 UTC strings with milliseconds in JSON, CSV and JSON lines, ``timestamp[us, UTC]`` in
Parquet. A request for several tags (or a prefix) puts the tag in every row (``tag`` column) of the flat
formats, and one ``series`` entry per tag in JSON. What the buckets were read from (``raw``, ``1m``,
``1h``) is the JSON's ``layer``, the ``X-Nexus-Layer`` header (:data:`LAYER_HEADER`) of every format and
Parquet's ``nexus.layer`` metadata.

Parquet needs pyarrow (``pip install 'nexus-edge[parquet]'``); it is imported only when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import importlib
import io
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import anyio
import orjson
from fastapi.responses import StreamingResponse
from starlette.types import Send

from gateway_core.history_query import COUNTS, Query, Row, Series, iso
from proto.points import Quality

Batches = AsyncGenerator[tuple[Series, list[Row]], None]

MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/jsonl",
    "parquet": "application/vnd.apache.parquet",
}
#: the response header naming the layer the answer was read from
LAYER_HEADER = "X-Nexus-Layer"
#: rows per Parquet row group (what the encoder holds at most)
ROW_GROUP = 65_536
_MS = timedelta(milliseconds=1)


class ClosingStream(StreamingResponse):
    """A streamed answer that closes its body (and so the server-side cursor and its connection) when
    the response ends for any reason, the client going away included, instead of leaving that to the
    garbage collector."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.move_on_after(10, shield=True):  # also when the request is being cancelled
                    await close()


def quality(status: int) -> str:
    """``good``, ``uncertain`` or ``bad``: the quality class of an OPC UA StatusCode."""
    return _QUALITY[(status >> 30) & 0b11]


_QUALITY = tuple(Quality.of(top << 30).name.lower() for top in range(4))


def record(q: Query, row: Row) -> dict[str, Any]:
    """One point or bucket as the JSON answer spells it (without its tag)."""
    if q.bucket is None:
        t, v, vt, s, why = row
        return {"time": iso(t), "value": v, "value_text": vt, "status": s, "quality": quality(s), "reason": why}
    return {"time": iso(row[0]), **dict(zip(q.stats, row[1:], strict=True))}


def json_body(q: Query, fetched: list[tuple[Series, list[Row]]]) -> dict[str, Any]:
    """One tag: ``{"tag", "unit", "from", "to", "points"|"buckets"}``; several: ``{..., "series": [...]}``."""
    key = "points" if q.bucket is None else "buckets"
    span = {"from": iso(q.start), "to": iso(q.end), "layer": q.layer}
    if not q.multi:
        ((s, rows),) = fetched
        return {"tag": s.path, "unit": s.unit, **span, key: [record(q, r) for r in rows]}
    return {
        **span,
        "bucket_ms": None if q.bucket is None else q.bucket // _MS,
        "stats": None if q.bucket is None else list(q.stats),
        "series": [{"tag": s.path, "unit": s.unit, key: [record(q, r) for r in rows]} for s, rows in fetched],
    }


def _flat(q: Query, s: Series, row: Row) -> list[Any]:
    """One row's cells in the order of ``q.columns``."""
    if q.bucket is None:
        t, v, vt, st, why = row
        cells = [iso(t), v, vt, st, quality(st), why]
    else:
        cells = [iso(row[0]), *row[1:]]
    return [s.path, *cells] if q.multi else cells


async def csv_chunks(q: Query, batches: Batches) -> AsyncIterator[bytes]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(q.columns)
    yield buf.getvalue().encode()
    async with contextlib.aclosing(batches):
        async for s, rows in batches:
            buf.seek(0)
            buf.truncate()
            w.writerows(_flat(q, s, r) for r in rows)
            yield buf.getvalue().encode()


async def jsonl_chunks(q: Query, batches: Batches) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(batches):
        async for s, rows in batches:
            if q.multi:
                yield b"".join(orjson.dumps({"tag": s.path, **record(q, r)}) + b"\n" for r in rows)
            else:
                yield b"".join(orjson.dumps(record(q, r)) + b"\n" for r in rows)


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows already built in memory (the small answers: windows, alarms, latest) as CSV with a header."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def pyarrow() -> Any | None:
    """The pyarrow module, or None when it is not installed (format=parquet answers 501)."""
    try:
        return importlib.import_module("pyarrow")
    except ImportError:
        return None


class _Sink:
    """A write-only file for pyarrow that hands out what was written since the last :meth:`take`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        b = bytes(data)
        self._parts.append(b)
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos  # the writer records row group offsets from this: it counts every byte ever written

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _schema(pa: Any, q: Query) -> Any:
    ts = pa.timestamp("us", tz="UTC")
    if q.bucket is None:
        fields = [("time", ts), ("value", pa.float64()), ("value_text", pa.string()), ("status", pa.int64()),
                  ("quality", pa.string()), ("reason", pa.string())]
    else:
        fields = [("time", ts), *((s, pa.int64() if s in COUNTS else pa.float64()) for s in q.stats)]
    if q.multi:
        fields.insert(0, ("tag", pa.string()))
    units = orjson.dumps({s.path: s.unit for s in q.series}).decode()
    meta = {"nexus.from": iso(q.start), "nexus.to": iso(q.end), "nexus.units": units, "nexus.layer": q.layer}
    if q.bucket is not None:
        meta["nexus.bucket_ms"] = str(q.bucket // _MS)
    return pa.schema(fields, metadata=meta)


async def parquet_chunks(q: Query, batches: Batches, pa: Any) -> AsyncIterator[bytes]:
    pq = importlib.import_module("pyarrow.parquet")
    schema = _schema(pa, q)
    sink = _Sink()
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, compression="zstd")
    columns: list[list[Any]] = [[] for _ in schema.names]

    def write() -> None:
        writer.write_table(pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema))
        for c in columns:
            c.clear()

    try:
        async with contextlib.aclosing(batches):
            async for s, rows in batches:
                for row in rows:
                    if q.bucket is None:  # quality between status and reason
                        row = (*row[:4], quality(row[3]), row[4])
                    for c, v in zip(columns, [s.path, *row] if q.multi else row, strict=True):
                        c.append(v)
                if len(columns[0]) >= ROW_GROUP:
                    await asyncio.to_thread(write)
                    yield sink.take()
        if columns[0]:
            await asyncio.to_thread(write)
    finally:
        writer.close()  # the footer
    yield sink.take()

