"""GET /api/v1/history: raw points or per-bucket statistics of one or more tags from the historian,
as JSON, or streamed as CSV, JSON lines or Parquet; GET /api/v1/history/latest: the newest point of
each tag and whether it is stale (:mod:`gateway_core.history_latest`).

The request's parameters and errors are here; what is read and how is in
:mod:`gateway_core.history_query` (the statistics, the time-weighted average, the server-side
cursor), the encodings in :mod:`gateway_core.history_formats`. JSON is built in memory and bounded
by ``history.max_rows`` (a 422 before any byte is sent); the streamed formats read through a
server-side cursor and are bounded by the range (``history.max_range_days``) and the tag count
(:data:`MAX_TAGS`), not by ``max_rows``. Buckets are read from an aggregate layer where it answers
exactly (:mod:`gateway_core.history_layers`), which the answer names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway_core import history_layers
from gateway_core.auth import Principal, require
from gateway_core.errors import ApiError
from gateway_core.history_formats import (
    LAYER_HEADER,
    MEDIA_TYPES,
    ClosingStream,
    csv_chunks,
    json_body,
    jsonl_chunks,
    parquet_chunks,
    pyarrow,
    to_csv,
)
from gateway_core.history_latest import COLUMNS as LATEST_COLUMNS
from gateway_core.history_latest import MAX_LATEST_TAGS, query_latest
from gateway_core.history_query import (
    MAX_TAGS,
    STATS,
    History,
    check_range,
    iso,
    parse_bucket,
    parse_stats,
    time_range,
)
from gateway_core.history_query import Query as HistoryQuery
from proto.errors import TopicError
from proto.uns import TagPath, validate_level

__all__ = ["History", "check_range", "iso", "parse_bucket", "router", "single_values_but_tag", "time_range"]

_LEVELS = ("enterprise", "site", "area", "line", "device", "tag")


def single_values_but_tag(request: Request) -> None:
    """Like the API's rule (every query parameter once), except ``tag``, which may name several tags."""
    keys = [k for k, _ in request.query_params.multi_items()]
    for key in keys:
        if key != "tag" and keys.count(key) > 1:
            raise ApiError(
                400, f"query parameter {key!r} is given {keys.count(key)} times; give it once", field=key
            )


def parse_prefix(text: str) -> str:
    """A UNS path of 1 to 6 levels (enterprise ... tag); a 422 naming ``prefix`` otherwise."""
    levels = text.split("/")
    try:
        if len(levels) > 6:
            raise TopicError(f"UNS path {text[:64]!r} has {len(levels)} levels, expected 1 to 6", topic=text)
        for name, level in zip(_LEVELS, levels, strict=False):
            validate_level(level, what=name)
    except TopicError as exc:
        raise ApiError(422, f"prefix: {exc}", field="prefix") from exc
    return text


def parse_tags(tags: list[str], limit: int | None = None) -> list[str]:
    """Six-level UNS paths, duplicates dropped (first one kept), at most ``limit`` (:data:`MAX_TAGS`)."""
    out = list(dict.fromkeys(tags))
    limit = MAX_TAGS if limit is None else limit
    if len(out) > limit:
        raise ApiError(422, f"{len(out)} tags in one request; the limit is {limit}", field="tag")
    for tag in out:
        if len(tag) > 1024:
            raise ApiError(422, f"tag {tag[:64]!r}... is longer than 1024 characters", field="tag")
        try:
            TagPath.parse(tag)
        except TopicError as exc:
            raise ApiError(422, f"tag: {exc}", field="tag") from exc
    return out


router = APIRouter(tags=["history"])

Format = Literal["json", "csv", "jsonl", "parquet"]
Layer = Literal["auto", "raw"]


@router.get(
    "/history",
    summary="Raw points or per-bucket statistics of one or more tags",
    responses={200: {"content": {MEDIA_TYPES[f]: {} for f in ("csv", "jsonl", "parquet")}},
               501: {"description": "format=parquet on a server without pyarrow"}},
)
async def history(
    request: Request,
    *,
    tag: Annotated[
        list[str] | None,
        Query(description="UNS path enterprise/site/area/line/device/tag; repeat for several tags "
              f"(at most {MAX_TAGS})"),
    ] = None,
    prefix: Annotated[
        str | None,
        Query(description=f"instead of tag: every tag under this UNS path (1 to 6 levels, at most {MAX_TAGS} tags)",
              max_length=1024),
    ] = None,
    start: Annotated[
        datetime | None, Query(alias="from", description="ISO 8601; default: one hour before 'to'")
    ] = None,
    end: Annotated[datetime | None, Query(alias="to", description="ISO 8601; default: now")] = None,
    bucket: Annotated[
        str | None, Query(description="bucket width <n><ms|s|m|h|d>, e.g. 1m; absent: raw points")
    ] = None,
    stats: Annotated[
        str | None,
        Query(description=f"per bucket, comma-separated, in this order: {', '.join(STATS)} or all; "
              "default min,max,avg,last,count", max_length=256),
    ] = None,
    format: Annotated[
        Format, Query(description="json (bounded by history.max_rows), or streamed: csv, jsonl, parquet")
    ] = "json",
    layer: Annotated[
        Layer, Query(description="auto: buckets of whole minutes / hours asking only count, min, max, avg, last "
                     "are read from nexus.points_1m / points_1h (named in 'layer' and X-Nexus-Layer); raw: "
                     "always from the raw points")
    ] = "auto",
    _: Annotated[Principal, Depends(require("viewer"))],
) -> Response:
    tags, pfx = _tags_or_prefix(tag, prefix)
    width = parse_bucket(bucket) if bucket is not None else None
    wanted = parse_stats(stats, width)
    start_t, end_t = time_range(start, end)
    core_history: History = request.app.state.core.history
    check_range(start_t, end_t, core_history.settings)
    pa = pyarrow() if format == "parquet" else None
    if format == "parquet" and pa is None:
        raise ApiError(
            501, "format=parquet needs pyarrow on the server (pip install 'nexus-edge[parquet]'); "
            "use csv or jsonl", field="format",
        )
    series = await core_history.resolve(tags, pfx)
    src = (history_layers.choose(width, wanted, start_t, end_t, await core_history.layers())
           if layer == "auto" else history_layers.RAW)
    q = HistoryQuery(series=tuple(series), start=start_t, end=end_t, bucket=width, stats=wanted,
                     multi=pfx is not None or len(tags) > 1, layer=src)
    headers = {LAYER_HEADER: q.layer}
    if format == "json":
        return JSONResponse(json_body(q, await core_history.fetch(q)), headers=headers)
    batches = core_history.stream(q)
    body = (csv_chunks(q, batches) if format == "csv" else jsonl_chunks(q, batches) if format == "jsonl"
            else parquet_chunks(q, batches, pa))
    return ClosingStream(body, media_type=MEDIA_TYPES[format], headers=headers)


def _tags_or_prefix(tag: list[str] | None, prefix: str | None,
                    limit: int | None = None) -> tuple[list[str], str | None]:
    if prefix is not None and tag:
        raise ApiError(422, "give tag (one or more) or prefix, not both", field="prefix")
    if prefix is None and not tag:
        raise ApiError(422, "tag: Field required (one or more tag=, or prefix=)", field="tag")
    return parse_tags(tag or [], limit), parse_prefix(prefix) if prefix is not None else None


@router.get(
    "/history/latest",
    summary="The newest point of each tag (value, quality, reason, age) and whether the tag is stale",
    responses={200: {"content": {"text/csv": {}}}},
)
async def latest(
    request: Request,
    *,
    tag: Annotated[
        list[str] | None,
        Query(description=f"UNS path of a tag; repeat for several (at most {MAX_LATEST_TAGS})"),
    ] = None,
    prefix: Annotated[
        str | None,
        Query(description=f"instead of tag: every tag under this UNS path (1 to 6 levels, at most "
              f"{MAX_LATEST_TAGS} tags), by path", max_length=1024),
    ] = None,
    stale_after_s: Annotated[
        float, Query(gt=0, le=366 * 86400, description="seconds without a point after which a tag is stale "
                     "(about three poll intervals)")
    ] = 300.0,
    stale: Annotated[
        bool | None, Query(description="true: only the stale tags; false: only the fresh ones; absent: all")
    ] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    _: Annotated[Principal, Depends(require("viewer"))],
) -> Response:
    tags, pfx = _tags_or_prefix(tag, prefix, MAX_LATEST_TAGS)
    core_history: History = request.app.state.core.history
    result = await query_latest(core_history.pool, tags, pfx, stale_after_s, stale, MAX_LATEST_TAGS)
    if format == "csv":
        return Response(to_csv(result.tags, LATEST_COLUMNS), media_type=MEDIA_TYPES["csv"])
    return JSONResponse(result.body())
