"""GET /api/v1/history/windows and /api/v1/history/alarms: the gateways' edge windows and alarms from
the historian, as JSON or CSV.

Reads ``nexus.tags``, ``nexus.windows`` and the view ``nexus.alarms`` (ingestion/migrations/
004_windows_alarms.sql) through the history pool, with the limits of /api/v1/history
(``history.max_range_days``, ``history.max_rows``) and its errors (a 4xx naming the field).

* windows of one tag whose ``start`` is in [from, to), of one width or of every width stored;
* alarms of one tag or of every tag under a path prefix (enterprise ... device) whose life overlaps
  [from, to): raised before ``to`` and not cleared before ``from`` (an alarm still active is in every
  range after its raise); a clear whose raise is not in the historian counts at its clear time.
  ``active`` means raised and not cleared as far as the historian knows now. Each raise carries its
  acknowledgement (``acked_at``, ``acked_by``, ``ack_comment``; null when not acknowledged) from
  :mod:`gateway_core.alarm_acks`; ``acked=false`` keeps the raises nobody has acknowledged.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway_core.alarm_acks import acks_of
from gateway_core.auth import Principal, require
from gateway_core.errors import ApiError
from gateway_core.history import check_range, iso, parse_bucket, time_range
from gateway_core.history_formats import to_csv
from gateway_core.settings import HistorySettings
from gateway_core.store import Pool
from proto.aggregates import ALARM_KINDS
from proto.errors import TopicError
from proto.points import Quality
from proto.uns import TagPath, validate_level

#: widest window the gateways send (proto.aggregates.decode_windows)
MAX_WIDTH = timedelta(days=1)
WINDOW_COLUMNS = ["start", "end", "width_ms", "count", "min", "max", "avg", "twa", "first", "last", "status",
                  "quality", "complete"]
ALARM_COLUMNS = ["tag", "alarm", "raised_at", "cleared_at", "active", "raised_value", "raised_limit", "severity",
                 "cleared_value", "acked_at", "acked_by", "ack_comment"]
_NO_TABLES = "no historian tables (nexus.tags, nexus.windows, nexus.alarms) in this database"


def _opt_iso(t: datetime | None) -> str | None:
    return iso(t) if t is not None else None


def parse_prefix(text: str) -> str:
    """A UNS path of 1 to 6 levels (enterprise ... tag); a 422 naming ``tag`` otherwise."""
    levels = text.split("/")
    try:
        if len(levels) > 6:
            raise TopicError(f"UNS path {text[:64]!r} has {len(levels)} levels, expected 1 to 6", topic=text)
        for name, level in zip(("enterprise", "site", "area", "line", "device", "tag"), levels, strict=False):
            validate_level(level, what=name)
    except TopicError as exc:
        raise ApiError(422, f"tag: {exc}", field="tag") from exc
    return text


async def query_windows(pool: Pool, settings: HistorySettings, tag: str, width: timedelta | None,
                        start: datetime, end: datetime) -> dict[str, Any]:
    check_range(start, end, settings)
    limit = settings.max_rows
    sql = ("SELECT start, width_ms, count, min, max, avg, twa, first, last, status, complete FROM nexus.windows"
           " WHERE tag_id = %s AND start >= %s AND start < %s")
    params: list[Any] = [start, end]
    if width is not None:
        sql += " AND width_ms = %s"
        params.append(width // timedelta(milliseconds=1))
    sql += " ORDER BY start, width_ms LIMIT %s"
    try:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT id, unit FROM nexus.tags WHERE path = %s", (tag,))).fetchone()
            if row is None:
                raise ApiError(404, f"tag {tag!r} has no history", field="tag")
            tag_id, unit = row
            rows = await (await conn.execute(sql, (tag_id, *params, limit + 1))).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise ApiError(404, _NO_TABLES, field="tag") from exc
    if len(rows) > limit:
        raise ApiError(422, f"more than {limit} windows in range; give a width or a shorter range", field="to")
    return {
        "tag": tag, "unit": unit, "from": iso(start), "to": iso(end),
        "width_ms": width // timedelta(milliseconds=1) if width is not None else None,
        "windows": [
            {"start": iso(s), "end": iso(s + timedelta(milliseconds=w)), "width_ms": w, "count": n, "min": lo,
             "max": hi, "avg": avg, "twa": twa, "first": first, "last": last, "status": q,
             "quality": Quality.of(q).name.lower(), "complete": ok}
            for s, w, n, lo, hi, avg, twa, first, last, q, ok in rows
        ],
    }


async def query_alarms(pool: Pool, settings: HistorySettings, prefix: str, start: datetime, end: datetime,
                       active: bool | None, alarm: str | None, *, store: Pool,
                       acked: bool | None = None) -> dict[str, Any]:
    check_range(start, end, settings)
    limit = settings.max_rows
    # Two selects on the view, so that each keeps one of its branches and its index conditions:
    # raises (raised before 'to', not cleared before 'from') and clears without their raise (in range).
    where = " AND a.tag_id = ANY(%(ids)s)"
    if alarm is not None:
        where += " AND a.alarm = %(alarm)s"
    raised = ("SELECT a.* FROM nexus.alarms a WHERE a.raised_at IS NOT NULL AND a.raised_at < %(to)s"
              " AND (a.cleared_at IS NULL OR a.cleared_at >= %(from)s)" + where)
    if active is not None:
        raised += " AND a.active = %(active)s"
    unmatched = ("SELECT a.* FROM nexus.alarms a WHERE a.raised_at IS NULL AND a.cleared_at >= %(from)s"
                 " AND a.cleared_at < %(to)s" + where)
    parts = [raised] if active else [raised, unmatched]
    sql = ("SELECT t.path, x.alarm, x.raised_at, x.cleared_at, x.active, x.raised_value, x.raised_limit,"
           " x.severity, x.cleared_value FROM (" + " UNION ALL ".join(parts) + ") x"
           " JOIN nexus.tags t ON t.id = x.tag_id"
           " ORDER BY coalesce(x.raised_at, x.cleared_at), t.path, x.alarm LIMIT %(limit)s")
    try:
        async with pool.connection() as conn:
            tags = await (await conn.execute(
                "SELECT id FROM nexus.tags WHERE path = %s OR starts_with(path, %s)", (prefix, prefix + "/")
            )).fetchall()
            if not tags:
                raise ApiError(404, f"no tag under {prefix!r} has history", field="tag")
            rows = await (await conn.execute(sql, {
                "ids": [r[0] for r in tags], "from": start, "to": end, "active": active, "alarm": alarm,
                "limit": limit + 1})).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise ApiError(404, _NO_TABLES, field="tag") from exc
    if len(rows) > limit:
        raise ApiError(422, f"more than {limit} alarms in range; use a longer path or a shorter range",
                       field="to")
    acks = await acks_of(store, [(path, kind, r) for path, kind, r, *_ in rows if r is not None])
    out = []
    for path, kind, r, c, on, rv, rl, sev, cv in rows:
        at, by, note = acks.get((path, kind, r), (None, None, None))
        if acked is not None and (r is None or (at is not None) != acked):
            continue
        out.append({"tag": path, "alarm": kind, "raised_at": _opt_iso(r), "cleared_at": _opt_iso(c), "active": on,
                    "raised_value": rv, "raised_limit": rl, "severity": sev, "cleared_value": cv,
                    "acked_at": _opt_iso(at), "acked_by": by, "ack_comment": note})
    return {"tag": prefix, "from": iso(start), "to": iso(end), "active": active, "alarm": alarm, "acked": acked,
            "alarms": out}


router = APIRouter(tags=["history"])

From = Annotated[datetime | None, Query(alias="from", description="ISO 8601; default: one hour before 'to'")]
To = Annotated[datetime | None, Query(alias="to", description="ISO 8601; default: now")]
Format = Annotated[Literal["json", "csv"], Query()]


@router.get(
    "/history/windows",
    summary="Edge windows (count, min, max, avg, twa, first, last) of one tag",
    responses={200: {"content": {"text/csv": {}}}},
)
async def windows(
    request: Request,
    *,
    tag: Annotated[str, Query(description="UNS path enterprise/site/area/line/device/tag", max_length=1024)],
    width: Annotated[
        str | None, Query(description="window width <n><ms|s|m|h|d>, e.g. 1m; absent: every width stored")
    ] = None,
    start: From = None,
    end: To = None,
    format: Format = "json",
    _: Annotated[Principal, Depends(require("viewer"))],
) -> Response:
    try:
        TagPath.parse(tag)
    except TopicError as exc:
        raise ApiError(422, f"tag: {exc}", field="tag") from exc
    w = parse_bucket(width, field="width") if width is not None else None
    if w is not None and (w > MAX_WIDTH or w % timedelta(milliseconds=1)):
        raise ApiError(422, f"width {width!r} is not a whole number of milliseconds up to 1d", field="width")
    start_t, end_t = time_range(start, end)
    core = request.app.state.core
    result = await query_windows(core.history.pool, core.history.settings, tag, w, start_t, end_t)
    if format == "csv":
        return Response(to_csv(result["windows"], WINDOW_COLUMNS), media_type="text/csv")
    return JSONResponse(result)


@router.get(
    "/history/alarms",
    summary="Alarms (raised, cleared) of one tag or of every tag under a path",
    responses={200: {"content": {"text/csv": {}}}},
)
async def alarms(
    request: Request,
    *,
    tag: Annotated[
        str,
        Query(description="UNS path of a tag, or a prefix of it (enterprise[/site[/area[/line[/device]]]])",
              max_length=1024),
    ],
    start: From = None,
    end: To = None,
    active: Annotated[
        bool | None, Query(description="true: only active alarms; false: only cleared ones; absent: both")
    ] = None,
    alarm: Annotated[str | None, Query(description=f"one of {', '.join(ALARM_KINDS)}; absent: all")] = None,
    acked: Annotated[
        bool | None, Query(description="true: only acknowledged raises; false: only raises not acknowledged")
    ] = None,
    format: Format = "json",
    _: Annotated[Principal, Depends(require("viewer"))],
) -> Response:
    prefix = parse_prefix(tag)
    if alarm is not None and alarm not in ALARM_KINDS:
        raise ApiError(422, f"alarm {alarm[:32]!r} is not one of {', '.join(ALARM_KINDS)}", field="alarm")
    start_t, end_t = time_range(start, end)
    core = request.app.state.core
    result = await query_alarms(core.history.pool, core.history.settings, prefix, start_t, end_t, active, alarm,
                                store=core.store.pool, acked=acked)
    if format == "csv":
        return Response(to_csv(result["alarms"], ALARM_COLUMNS), media_type="text/csv")
    return JSONResponse(result)
