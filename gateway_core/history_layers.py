"""Buckets of /api/v1/history from the historian's aggregate layers instead of the raw points.

``nexus.points_1m`` and ``nexus.points_1h`` (ingestion/migrations/007 on TimescaleDB, 009 on plain
PostgreSQL: the same names and columns, real time on both) hold per tag and minute / hour ``min``,
``max``, ``last``, ``samples``, ``value_sum`` and ``value_count``. From those a bucket that is a whole
number of layer buckets gets exactly what the raw points give for ``count`` (sum of ``samples``),
``min``, ``max``, ``avg`` (sum of ``value_sum`` / sum of ``value_count``: the raw average up to float
rounding) and ``last`` (the newest layer bucket's). Nothing else (``stddev``, ``first``, ``twa``, the
quality counts) can be had from them; a request naming any of those reads the raw points.

A range whose ends are not on the layer's grid is read in three parts: the raw points of
``[from, a)`` and ``[b, to)``, and the layer's buckets of ``[a, b)`` (``a``/``b``: ``from`` rounded
up / ``to`` rounded down to the layer width), put in one shape and grouped by the request's buckets,
so the answer is the raw one whatever the ends. A range shorter than one layer bucket reads raw.

The layers are as fresh as their last refresh for data that arrived late (a spool replay, a backfill
into a minute already rolled up): such points are in the raw answer at once and in the layer's after
the next refresh (docs/historian.md). ``layer=raw`` asks for the raw computation whatever the request.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

#: layer name -> (relation, bucket width), widest first: the first one that fits serves the request
LAYERS = {"1h": ("nexus.points_1h", timedelta(hours=1)), "1m": ("nexus.points_1m", timedelta(minutes=1))}
RAW = "raw"
#: the statistics a layer gives exactly
EXACT = frozenset({"count", "min", "max", "avg", "last"})

_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # the buckets' origin, the layers' and the requests'

_STAT_SQL = {
    "count": "sum(samples)::bigint",
    "min": "min(min)",
    "max": "max(max)",
    "avg": "sum(value_sum) / nullif(sum(value_count), 0)::float8",
    "last": "(array_agg(last ORDER BY t DESC))[1]",
}


def edges(start: datetime, end: datetime, width: timedelta) -> tuple[datetime, datetime]:
    """``start`` rounded up and ``end`` rounded down to the grid of ``width`` (from 2000-01-01)."""
    a = _ORIGIN + -((_ORIGIN - start) // width) * width
    b = _ORIGIN + (end - _ORIGIN) // width * width
    return a, b


def choose(bucket: timedelta | None, stats: tuple[str, ...], start: datetime, end: datetime,
           available: Collection[str]) -> str:
    """The layer that answers exactly (``1h``, ``1m``), or ``raw``."""
    if bucket is None or not set(stats) <= EXACT:
        return RAW
    for name, (_, width) in LAYERS.items():
        if name in available and bucket % width == timedelta(0):
            a, b = edges(start, end, width)
            if a < b:
                return name
    return RAW


def select(layer: str, stats: tuple[str, ...], bucket_fn: str) -> str:
    """The statement for one series from ``layer`` (parameters ``id``, ``from``, ``to``, ``a``, ``b``,
    ``width``); ``bucket_fn`` is the request's bucket expression over a column ``t``."""
    relation, _ = LAYERS[layer]
    cols = ", ".join(_STAT_SQL[s] for s in stats)
    # the raw points at the ends in the layer's shape: a point is a bucket of one sample
    raw = ("SELECT time AS t, value AS min, value AS max, value AS last, 1::bigint AS samples, value AS value_sum,"
           " (value IS NOT NULL)::int::bigint AS value_count FROM nexus.points WHERE tag_id = %(id)s")
    return (
        "WITH src AS ("
        f"SELECT bucket AS t, min, max, last, samples, value_sum, value_count FROM {relation}"
        " WHERE tag_id = %(id)s AND bucket >= %(a)s AND bucket < %(b)s"
        f" UNION ALL {raw} AND time >= %(from)s AND time < %(a)s"
        f" UNION ALL {raw} AND time >= %(b)s AND time < %(to)s)"
        f" SELECT {bucket_fn} AS bucket, {cols} FROM src GROUP BY 1 ORDER BY 1"
    )
