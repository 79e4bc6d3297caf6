"""GET /api/v1/history/latest: the newest point of each tag, its age, and whether the tag is stale.

Reads ``nexus.tags``, ``nexus.points`` and ``nexus.reasons`` through the history pool. Per tag one index
probe on ``points_tag_time_idx`` ``(tag_id, time DESC)`` (a ``LEFT JOIN LATERAL ... ORDER BY time DESC
LIMIT 1``; the day partitions or chunks are read newest first and the first that has one answers), so the
cost grows with the tag count, not with the history: no scan of the raw points, whatever the range kept.

A tag is *stale* when its newest point (of any quality: a BAD point says the gateway is still reporting)
is older than ``stale_after_s`` seconds, or when it has none (a tag known from a window or an alarm only).
Ages are measured on the database's clock (``statement_timestamp()``), the clock the dashboards use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from gateway_core.errors import ApiError
from gateway_core.history_formats import quality
from gateway_core.history_query import iso
from gateway_core.store import Pool

#: most tags one request may name or match with a prefix
MAX_LATEST_TAGS = 10_000
COLUMNS = ("tag", "unit", "time", "value", "value_text", "status", "quality", "reason", "age_s", "stale")
_NO_TABLES = "no historian tables (nexus.tags, nexus.points, nexus.reasons) in this database"

_SQL = (
    "SELECT t.path, t.unit, l.time, l.value, l.value_text, l.status, r.text,"
    " extract(epoch FROM statement_timestamp() - l.time)::float8, statement_timestamp()"
    " FROM nexus.tags t"
    " LEFT JOIN LATERAL (SELECT p.time, p.value, p.value_text, p.status, p.reason_id FROM nexus.points p"
    " WHERE p.tag_id = t.id ORDER BY p.time DESC LIMIT 1) l ON true"
    " LEFT JOIN nexus.reasons r ON r.id = l.reason_id"
)
BY_TAGS = _SQL + " WHERE t.path = ANY(%(tags)s)"
BY_PREFIX = (_SQL + " WHERE (t.path = %(prefix)s OR starts_with(t.path, %(under)s)) ORDER BY t.path"
             " LIMIT %(limit)s")


@dataclass(frozen=True, slots=True)
class Latest:
    now: datetime  #: the database's time the ages are measured at
    stale_after_s: float
    tags: list[dict[str, Any]]  #: one per tag, in the order asked (tags) or by path (prefix)

    def body(self) -> dict[str, Any]:
        return {"now": iso(self.now), "stale_after_s": self.stale_after_s,
                "stale_tags": sum(1 for t in self.tags if t["stale"]), "tags": self.tags}


def _entry(row: tuple[Any, ...], stale_after_s: float) -> dict[str, Any]:
    path, unit, t, v, vt, status, reason, age, _ = row
    return {"tag": path, "unit": unit, "time": iso(t) if t is not None else None, "value": v, "value_text": vt,
            "status": status, "quality": quality(status) if status is not None else None, "reason": reason,
            "age_s": age, "stale": age is None or age > stale_after_s}


async def query_latest(pool: Pool, tags: list[str], prefix: str | None, stale_after_s: float,
                       stale: bool | None = None, limit: int = MAX_LATEST_TAGS) -> Latest:
    """The newest point of the named tags (404 naming one that is unknown) or of every tag under ``prefix``
    (404 when none, 422 over ``limit``); ``stale`` keeps only the stale (True) or fresh (False) ones."""
    try:
        async with pool.connection() as conn:
            if prefix is not None:
                rows = await (await conn.execute(BY_PREFIX, {
                    "prefix": prefix, "under": prefix + "/", "limit": limit + 1})).fetchall()
            else:
                rows = await (await conn.execute(BY_TAGS, {"tags": tags})).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise ApiError(404, _NO_TABLES, field="prefix" if prefix is not None else "tag") from exc
    if prefix is not None:
        if not rows:
            raise ApiError(404, f"no tag under {prefix[:256]!r} has history", field="prefix")
        if len(rows) > limit:
            raise ApiError(422, f"more than {limit} tags under {prefix[:256]!r}; give a longer prefix",
                           field="prefix")
    else:
        found = {r[0]: r for r in rows}
        for tag in tags:
            if tag not in found:
                raise ApiError(404, f"tag {tag[:256]!r} has no history", field="tag")
        rows = [found[t] for t in tags]
    entries = [_entry(r, stale_after_s) for r in rows]
    if stale is not None:
        entries = [e for e in entries if e["stale"] is stale]
    return Latest(rows[0][-1], stale_after_s, entries)  # rows: at least one tag was found
