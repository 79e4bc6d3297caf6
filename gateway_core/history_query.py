"""What a history request asks of the historian, and the SQL that answers it.

Reads ``nexus.tags`` / ``nexus.points`` (ingestion/migrations/001_core.sql) through the history pool.
A request names one or more series (tags, or every tag under a UNS prefix, at most :data:`MAX_TAGS`),
a half-open range ``[from, to)`` and optionally a bucket width with the statistics wanted per bucket.

Two ways to read the answer: :meth:`History.fetch` returns it whole, at most ``history.max_rows``
rows over all series (for JSON, built in memory); :meth:`History.stream` reads it through a
server-side cursor, :data:`FETCH` rows per round trip, one series after the other, so a streamed
format never holds more than one batch.

Per bucket (``[b, b + width)``, only buckets with at least one point):

* ``count`` points (BAD ones included), ``min``/``max``/``avg``/``stddev`` (sample standard deviation,
  NULL for one value) of the points' numbers, ``first``/``last``: the number of the bucket's
  first/last point (NULL when that point has none, e.g. a BAD point); ``bad``/``uncertain``: how many
  of the bucket's points are of that quality (the StatusCode's top two bits);
* ``twa``, the time-weighted average: each point holds its value from its time until the next point
  of the tag (the last point in range until ``to``); a BAD point or one without a number holds
  "unknown", which has no weight. A bucket's ``twa`` is the integral of the held value over the
  known part of the bucket divided by that part's length; the value held when the bucket begins
  (the previous point's, when it lies in range) counts from the bucket's start. The time before the
  first point in range is unknown. NULL when nothing in the bucket is known. This is the rule of the
  gateways' edge windows (normalizer/windows.py).

A raw point carries its quality reason (``nexus.reasons.text``, NULL when it has none). Buckets whose
statistics the aggregate layers give exactly are read from them (:mod:`gateway_core.history_layers`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from gateway_core import history_layers
from gateway_core.errors import ApiError
from gateway_core.settings import HistorySettings
from gateway_core.store import Pool

#: statistics a bucket can carry, and those of a request that names none (the original answer's)
STATS = ("count", "min", "max", "avg", "stddev", "first", "last", "twa", "bad", "uncertain")
DEFAULT_STATS = ("min", "max", "avg", "last", "count")
#: most tags one request may name or match with a prefix
MAX_TAGS = 100
#: rows per round trip of the server-side cursor (streamed formats)
FETCH = 5000
POINT_COLUMNS = ("time", "value", "value_text", "status", "quality", "reason")
#: statistics that are counts (int64 in Parquet)
COUNTS = frozenset({"count", "bad", "uncertain"})

_BUCKET = re.compile(r"^([1-9][0-9]{0,6})(ms|s|m|h|d)$")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_NO_TABLES = "no historian tables (nexus.tags, nexus.points) in this database"
_BAD = 0x80000000

Row = tuple[Any, ...]


def parse_bucket(text: str, field: str = "bucket") -> timedelta:
    """``<n><ms|s|m|h|d>`` as a duration; a 422 naming ``field`` otherwise."""
    m = _BUCKET.match(text)
    if not m:
        raise ApiError(422, f"{field} {text[:32]!r} is not <n><ms|s|m|h|d>, e.g. 1m", field=field)
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


def parse_stats(text: str | None, bucket: timedelta | None) -> tuple[str, ...]:
    """``stats=min,max,...`` (or ``all``) in the order given; a 422 naming ``stats`` otherwise."""
    if text is None:
        return DEFAULT_STATS
    if bucket is None:
        raise ApiError(422, "stats are per bucket: give a bucket, e.g. bucket=1m", field="stats")
    names = STATS if text.strip() == "all" else tuple(s.strip() for s in text.split(","))
    out: list[str] = []
    for name in names:
        if name not in STATS:
            raise ApiError(
                422, f"stats: {name[:32]!r} is not one of {', '.join(STATS)} (or all)", field="stats"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def iso(t: datetime) -> str:
    """``t`` as ISO 8601 UTC with milliseconds and a Z, as every history answer spells times."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def time_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """``from``/``to`` of a query in UTC (naive times are UTC); default: the hour before now."""
    try:
        end_t = _utc(end) if end is not None else datetime.now(UTC)
        start_t = _utc(start) if start is not None else end_t - timedelta(hours=1)
    except (OverflowError, ValueError) as exc:
        raise ApiError(422, f"bad time: {exc}", field="from") from exc
    return start_t, end_t


def check_range(start: datetime, end: datetime, settings: HistorySettings) -> None:
    """A 422 naming the field unless ``from`` < ``to`` and the span is within ``max_range_days``."""
    if end <= start:
        raise ApiError(422, f"'from' ({iso(start)}) must be before 'to' ({iso(end)})", field="from")
    if end - start > timedelta(days=settings.max_range_days):
        raise ApiError(
            422,
            f"range {end - start} is longer than the limit of {settings.max_range_days:g} days",
            field="to",
        )


@dataclass(frozen=True, slots=True)
class Series:
    tag_id: int
    path: str
    unit: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    series: tuple[Series, ...]
    start: datetime
    end: datetime
    bucket: timedelta | None  #: None: raw points
    stats: tuple[str, ...]  #: per bucket, in this order
    multi: bool  #: several tags or a prefix: rows carry their tag, JSON has one entry per series
    layer: str = history_layers.RAW  #: what the buckets are read from: raw, 1m or 1h (history_layers)

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of a row in the flat formats (CSV, JSON lines, Parquet)."""
        cols = POINT_COLUMNS if self.bucket is None else ("time", *self.stats)
        return ("tag", *cols) if self.multi else cols


_KNOWN = f"CASE WHEN status & {_BAD} = 0 THEN value END"
_STAT_SQL = {
    "count": "count(*)",
    "min": "min(value)",
    "max": "max(value)",
    "avg": "avg(value)",
    "stddev": "stddev_samp(value)",
    "first": "(array_agg(value ORDER BY time))[1]",
    "last": "(array_agg(value ORDER BY time DESC))[1]",
    "bad": "count(*) FILTER (WHERE (status >> 30) >= 2)",
    "uncertain": "count(*) FILTER (WHERE (status >> 30) = 1)",
    "twa": "(coalesce(sum(known * hold), 0) + coalesce(sum(carry_v * carry), 0))"
    " / nullif(coalesce(sum(hold) FILTER (WHERE known IS NOT NULL), 0)"
    " + coalesce(sum(carry) FILTER (WHERE carry_v IS NOT NULL), 0), 0)",
}
_WHERE = "WHERE tag_id = %(id)s AND time >= %(from)s AND time < %(to)s"
_RANGE = f"FROM nexus.points {_WHERE}"
# a nested loop over the points in index order, the few reasons memoized: about 10 % over the points alone
# when streaming 300k of them, where a correlated sub-select per point costs 50 %
_WITH_REASON = f"FROM nexus.points LEFT JOIN nexus.reasons r ON r.id = reason_id {_WHERE}"


def select(q: Query, timescale: bool) -> str:
    """The statement for one series (parameters ``id``, ``from``, ``to``, ``width``; from a layer also ``a``,
    ``b``: :meth:`History._params`), ordered by time."""
    if q.bucket is None:
        return f"SELECT time, value, value_text, status, r.text {_WITH_REASON} ORDER BY time"
    # the same origin on both: time_bucket's default (2000-01-03, a Monday) would shift 3d/7d buckets
    fn = (
        "time_bucket(%(width)s, {}, origin => TIMESTAMPTZ '2000-01-01')"
        if timescale
        else "date_bin(%(width)s, {}, TIMESTAMPTZ '2000-01-01')"
    )
    if q.layer != history_layers.RAW:
        return history_layers.select(q.layer, q.stats, fn.format("t"))
    fn = fn.format("time")
    stats = ", ".join(_STAT_SQL[s] for s in q.stats)
    if "twa" not in q.stats:
        return f"SELECT {fn} AS bucket, {stats} {_RANGE} GROUP BY 1 ORDER BY 1"
    # hold: how long the point's value lasts inside its own bucket; carry: how long the previous
    # point's value lasts at the start of this bucket (only on a bucket's first point)
    return (
        f"WITH p AS (SELECT time, value, status, {fn} AS bucket, lead(time) OVER w AS next_t,"
        f" lag(time) OVER w AS prev_t, lag({_KNOWN}) OVER w AS prev_known {_RANGE} WINDOW w AS (ORDER BY time)),"
        f" q AS (SELECT time, value, status, bucket, {_KNOWN} AS known,"
        " EXTRACT(EPOCH FROM least(coalesce(next_t, %(to)s), bucket + %(width)s) - time)::float8 AS hold,"
        " CASE WHEN prev_t < bucket THEN prev_known END AS carry_v,"
        " CASE WHEN prev_t < bucket THEN EXTRACT(EPOCH FROM time - bucket)::float8 END AS carry FROM p)"
        f" SELECT bucket, {stats} FROM q GROUP BY 1 ORDER BY 1"
    )


class History:
    """The historian as the history API reads it: a pool, the limits, and whether it is TimescaleDB."""

    def __init__(self, pool: Pool, settings: HistorySettings) -> None:
        self.pool = pool
        self.settings = settings
        self._timescale: bool | None = None
        self._layers: frozenset[str] | None = None

    async def resolve(self, tags: list[str], prefix: str | None) -> list[Series]:
        """The named tags in the order given, or those under ``prefix`` by path; 404/422 naming the field."""
        try:
            async with self.pool.connection() as conn:
                if prefix is not None:
                    rows = await (
                        await conn.execute(
                            "SELECT id, path, unit FROM nexus.tags WHERE path = %s OR starts_with(path, %s)"
                            " ORDER BY path LIMIT %s",
                            (prefix, prefix + "/", MAX_TAGS + 1),
                        )
                    ).fetchall()
                    if not rows:
                        raise ApiError(404, f"no tag under {prefix[:256]!r} has history", field="prefix")
                    if len(rows) > MAX_TAGS:
                        raise ApiError(
                            422,
                            f"more than {MAX_TAGS} tags under {prefix[:256]!r}; give a longer prefix or name"
                            " the tags with tag=",
                            field="prefix",
                        )
                    return [Series(*r) for r in rows]
                rows = await (
                    await conn.execute("SELECT id, path, unit FROM nexus.tags WHERE path = ANY(%s)", (tags,))
                ).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
            raise ApiError(404, _NO_TABLES, field="tag") from exc
        found = {r[1]: Series(*r) for r in rows}
        for tag in tags:
            if tag not in found:
                raise ApiError(404, f"tag {tag[:256]!r} has no history", field="tag")
        return [found[t] for t in tags]

    async def _is_timescale(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        if self._timescale is None:
            cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
            self._timescale = bool(await cur.fetchone())
        return self._timescale

    async def layers(self) -> frozenset[str]:
        """The aggregate layers this historian has (``1m``, ``1h``); remembered once both are there."""
        if self._layers is None:
            async with self.pool.connection() as conn:
                row = await (await conn.execute(
                    "SELECT to_regclass('nexus.points_1m') IS NOT NULL, to_regclass('nexus.points_1h') IS NOT NULL"
                )).fetchone()
            found = frozenset(n for n, there in zip(("1m", "1h"), row or (), strict=False) if there)
            if len(found) < len(history_layers.LAYERS):
                return found  # looked for again next time: the ingestion workers may migrate later
            self._layers = found
        return self._layers

    def _params(self, q: Query, s: Series) -> dict[str, Any]:
        params: dict[str, Any] = {"id": s.tag_id, "from": q.start, "to": q.end, "width": q.bucket}
        if q.layer != history_layers.RAW:
            params["a"], params["b"] = history_layers.edges(q.start, q.end, history_layers.LAYERS[q.layer][1])
        return params

    async def fetch(self, q: Query) -> list[tuple[Series, list[Row]]]:
        """Every row of every series; a 422 when more than ``max_rows`` would come back."""
        limit = self.settings.max_rows
        if q.bucket is not None and len(q.series) * ((q.end - q.start) / q.bucket) > limit:
            n = len(q.series) * ((q.end - q.start) // q.bucket)
            raise ApiError(
                422,
                f"{n} buckets exceed the limit of {limit}; use a larger bucket or a shorter range"
                + (", fewer tags or a streamed format (csv, jsonl, parquet)" if q.multi else ""),
                field="bucket",
            )
        out: list[tuple[Series, list[Row]]] = []
        left = limit
        async with self.pool.connection() as conn:
            sql = select(q, await self._is_timescale(conn)) + " LIMIT %(limit)s"
            for s in q.series:
                rows = await (await conn.execute(sql, {**self._params(q, s), "limit": left + 1})).fetchall()
                if len(rows) > left:
                    raise ApiError(
                        422,
                        f"more than {limit} points in range; use a bucket or a shorter range"
                        + (", fewer tags or a streamed format (csv, jsonl, parquet)" if q.multi else ""),
                        field="to",
                    )
                left -= len(rows)
                out.append((s, rows))
        return out

    async def stream(self, q: Query) -> AsyncGenerator[tuple[Series, list[Row]], None]:
        """Batches of at most :data:`FETCH` rows, series after series, from a server-side cursor."""
        async with self.pool.connection() as conn:
            sql = select(q, await self._is_timescale(conn))
            async with conn.transaction():  # a server-side cursor lives in a transaction
                for i, s in enumerate(q.series):
                    async with conn.cursor(name=f"nexus_history_{i}") as cur:
                        await cur.execute(sql, self._params(q, s))
                        while rows := await cur.fetchmany(FETCH):
                            yield s, rows
