"""GET /api/v1/history: raw points or time buckets of one tag from the historian, as JSON or CSV.

Reads ``nexus.tags`` / ``nexus.points`` (ingestion/migrations/001_core.sql). Buckets use TimescaleDB's
``time_bucket`` where the extension is installed, ``date_bin`` on plain PostgreSQL (same result for
the intervals we accept).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway_core.auth import Principal, require
from gateway_core.errors import ApiError
from gateway_core.settings import HistorySettings
from gateway_core.store import Pool
from proto.errors import TopicError
from proto.points import Quality
from proto.uns import TagPath

_BUCKET = re.compile(r"^([1-9][0-9]{0,6})(ms|s|m|h|d)$")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_bucket(text: str, field: str = "bucket") -> timedelta:
    """``<n><ms|s|m|h|d>`` as a duration; a 422 naming ``field`` otherwise."""
    m = _BUCKET.match(text)
    if not m:
        raise ApiError(422, f"{field} {text!r} is not <n><ms|s|m|h|d>, e.g. 1m", field=field)
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})


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


class History:
    def __init__(self, pool: Pool, settings: HistorySettings) -> None:
        self.pool = pool
        self.settings = settings
        self._timescale: bool | None = None

    async def query(
        self, tag: str, start: datetime, end: datetime, bucket: timedelta | None
    ) -> dict[str, Any]:
        check_range(start, end, self.settings)
        limit = self.settings.max_rows
        if bucket is not None and (end - start) / bucket > limit:
            raise ApiError(
                422,
                f"{(end - start) // bucket} buckets exceed the limit of {limit}; "
                "use a larger bucket or a shorter range",
                field="bucket",
            )
        try:
            async with self.pool.connection() as conn:
                row = await (
                    await conn.execute("SELECT id, unit FROM nexus.tags WHERE path = %s", (tag,))
                ).fetchone()
                if row is None:
                    raise ApiError(404, f"tag {tag!r} has no history", field="tag")
                tag_id, unit = row
                out: dict[str, Any] = {"tag": tag, "unit": unit, "from": iso(start), "to": iso(end)}
                if bucket is None:
                    rows = await (
                        await conn.execute(
                            "SELECT time, value, value_text, status FROM nexus.points WHERE tag_id = %s"
                            " AND time >= %s AND time < %s ORDER BY time LIMIT %s",
                            (tag_id, start, end, limit + 1),
                        )
                    ).fetchall()
                    if len(rows) > limit:
                        raise ApiError(
                            422,
                            f"more than {limit} points in range; use a bucket or a shorter range",
                            field="to",
                        )
                    out["points"] = [
                        {
                            "time": iso(t),
                            "value": v,
                            "value_text": vt,
                            "status": s,
                            "quality": Quality.of(s).name.lower(),
                        }
                        for t, v, vt, s in rows
                    ]
                    return out
                if self._timescale is None:
                    self._timescale = bool(
                        await (
                            await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
                        ).fetchone()
                    )
                # the same origin on both: time_bucket's default (2000-01-03, a Monday) would shift 3d/7d buckets
                fn = (
                    "time_bucket(%s, time, origin => TIMESTAMPTZ '2000-01-01')"
                    if self._timescale
                    else "date_bin(%s, time, TIMESTAMPTZ '2000-01-01')"
                )
                rows = await (
                    await conn.execute(
                        f"SELECT {fn} AS bucket, min(value), max(value), avg(value),"
                        " (array_agg(value ORDER BY time DESC))[1], count(*) FROM nexus.points"
                        " WHERE tag_id = %s AND time >= %s AND time < %s GROUP BY 1 ORDER BY 1",
                        (bucket, tag_id, start, end),
                    )
                ).fetchall()
                out["buckets"] = [
                    {"time": iso(b), "min": lo, "max": hi, "avg": avg, "last": last, "count": n}
                    for b, lo, hi, avg, last, n in rows
                ]
                return out
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
            raise ApiError(
                404, "no historian tables (nexus.tags, nexus.points) in this database", field="tag"
            ) from exc


def to_csv(result: dict[str, Any]) -> str:
    buf = io.StringIO()
    if "points" in result:
        cols = ["time", "value", "value_text", "status", "quality"]
        rows = result["points"]
    else:
        cols = ["time", "min", "max", "avg", "last", "count"]
        rows = result["buckets"]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


router = APIRouter(tags=["history"])


@router.get(
    "/history", summary="Raw points or buckets of one tag", responses={200: {"content": {"text/csv": {}}}}
)
async def history(
    request: Request,
    *,
    tag: Annotated[str, Query(description="UNS path enterprise/site/area/line/device/tag", max_length=1024)],
    start: Annotated[
        datetime | None, Query(alias="from", description="ISO 8601; default: one hour before 'to'")
    ] = None,
    end: Annotated[datetime | None, Query(alias="to", description="ISO 8601; default: now")] = None,
    bucket: Annotated[
        str | None, Query(description="bucket width <n><ms|s|m|h|d>, e.g. 1m; absent: raw points")
    ] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    _: Annotated[Principal, Depends(require("viewer"))],
) -> Response:
    try:
        TagPath.parse(tag)
    except TopicError as exc:
        raise ApiError(422, f"tag: {exc}", field="tag") from exc
    width = parse_bucket(bucket) if bucket is not None else None
    start_t, end_t = time_range(start, end)
    result = await request.app.state.core.history.query(tag, start_t, end_t, width)
    if format == "csv":
        return Response(to_csv(result), media_type="text/csv")
    return JSONResponse(result)
