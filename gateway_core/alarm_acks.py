"""Acknowledging alarms: ``POST /api/v1/alarms/ack``, and the acknowledgements ``GET /history/alarms`` shows.

An alarm here is one raise in the historian's view ``nexus.alarms``, named by its tag's UNS path, its kind and
the raise's source time (``raised_at`` as /history/alarms spells it). Acknowledging says "someone has seen
it"; it changes nothing in the gateways' alarm state (a cleared alarm can be acknowledged too, as ISA-18.2's
"returned to normal, unacknowledged" state wants). The rules:

* operator role and up (whoever may write values may acknowledge); every acknowledgement is an audit row
  (``alarm.ack``) in the same transaction;
* the raise must be in the historian: a name that matches none is a 404 naming the item;
* the first acknowledgement stays: acknowledging again answers it (``already: true``) and changes nothing, so
  two operators acknowledging at once get one answer;
* a clear whose raise is not in the historian has nothing raised to acknowledge.

The acknowledgements live in the configuration store (``core.alarm_acks``, migration 004), since the
historian may be another database and its schema is ingestion's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field, field_validator

from gateway_core.auth import Principal, require
from gateway_core.errors import ApiError
from gateway_core.history_query import iso
from gateway_core.store import Pool
from proto.errors import TopicError
from proto.uns import TagPath

MAX_ACKS = 500  #: alarms in one request
AlarmKey = tuple[str, str, datetime]  #: (tag path, alarm kind, raised_at)
Ack = tuple[datetime, str, str]  #: (acked_at, acked_by, comment)
_NO_HISTORIAN = "no historian tables (nexus.tags, nexus.alarm_events) in this database"
# the rows of an array of keys, to join on: one round trip for any number of alarms
_KEYS = "unnest(%(tags)s::text[], %(kinds)s::text[], %(raised)s::timestamptz[]) AS k(tag, alarm, raised_at)"


class AlarmRef(BaseModel):
    tag: str = Field(description="the tag's UNS path enterprise/site/area/line/device/tag", max_length=1024)
    alarm: Literal["high", "low", "rate", "stuck"]
    raised_at: datetime = Field(description="the raise's time, as GET /history/alarms gives it")

    @field_validator("tag")
    @classmethod
    def _path(cls, v: str) -> str:
        try:
            TagPath.parse(v)
        except TopicError as exc:
            raise ValueError(str(exc)) from exc
        return v

    @field_validator("raised_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("give the time zone (e.g. a trailing Z), as GET /history/alarms does")
        return v


class AckIn(BaseModel):
    alarms: list[AlarmRef] = Field(min_length=1, max_length=MAX_ACKS)
    comment: str = Field("", max_length=500, description="why, what was done; kept with the acknowledgement")


class AckOut(BaseModel):
    tag: str
    alarm: str
    raised_at: str
    acked_at: str
    acked_by: str = Field(description="user:<name>, or the API key's name")
    comment: str
    already: bool = Field(description="it had been acknowledged before: this is that acknowledgement")


class AcksOut(BaseModel):
    acknowledged: list[AckOut]


def _arrays(keys: list[AlarmKey]) -> dict[str, list[Any]]:
    return {"tags": [k[0] for k in keys], "kinds": [k[1] for k in keys], "raised": [k[2] for k in keys]}


async def _select(conn: psycopg.AsyncConnection[Any], keys: list[AlarmKey]) -> dict[AlarmKey, Ack]:
    rows = await (await conn.execute(
        "SELECT a.tag, a.alarm, a.raised_at, a.acked_at, a.acked_by, a.comment FROM core.alarm_acks a"
        f" JOIN {_KEYS} USING (tag, alarm, raised_at)", _arrays(keys))).fetchall()
    return {(t, k, r): (at, by, c) for t, k, r, at, by, c in rows}


async def acks_of(pool: Pool, keys: list[AlarmKey]) -> dict[AlarmKey, Ack]:
    """The acknowledgements of these alarms: key -> (acked_at, acked_by, comment)."""
    if not keys:
        return {}
    async with pool.connection() as conn:
        return await _select(conn, keys)


async def _missing_raises(history: Pool, keys: list[AlarmKey]) -> list[int]:
    """The indexes of ``keys`` that name no raise in the historian."""
    try:
        async with history.connection() as conn:
            found = await (await conn.execute(
                "SELECT k.tag, k.alarm, k.raised_at FROM " + _KEYS +
                " JOIN nexus.tags t ON t.path = k.tag"
                " JOIN nexus.alarm_events e ON e.tag_id = t.id AND e.alarm = k.alarm AND e.ts = k.raised_at"
                " AND e.active", _arrays(keys))).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise ApiError(404, _NO_HISTORIAN, field="alarms") from exc
    there = {(t, k, r) for t, k, r in found}
    return [i for i, key in enumerate(keys) if key not in there]


async def acknowledge(store: Pool, history: Pool, refs: list[AlarmRef], comment: str,
                      actor: str) -> list[dict[str, Any]]:
    asked: list[AlarmKey] = [(r.tag, r.alarm, r.raised_at.astimezone(UTC)) for r in refs]
    keys = list(dict.fromkeys(asked))
    missing = await _missing_raises(history, keys)
    if missing:
        i = missing[0]
        tag, kind, raised = keys[i]
        raise ApiError(404, f"no {kind} alarm of {tag!r} raised at {iso(raised)} in the historian"
                            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}",
                       field=f"alarms[{asked.index(keys[i])}]")
    async with store.connection() as conn, conn.transaction():
        new = await (await conn.execute(
            "INSERT INTO core.alarm_acks (tag, alarm, raised_at, acked_by, comment)"
            f" SELECT k.tag, k.alarm, k.raised_at, %(by)s, %(comment)s FROM {_KEYS}"
            " ON CONFLICT DO NOTHING RETURNING tag, alarm, raised_at",
            {**_arrays(keys), "by": actor, "comment": comment})).fetchall()
        fresh = {(t, k, r) for t, k, r in new}
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO core.audit (actor, action, target, after) VALUES (%s, 'alarm.ack', %s, %s)",
                [(actor, f"alarm:{t}|{k}|{iso(r)}", Jsonb({"tag": t, "alarm": k, "raised_at": iso(r),
                                                           "comment": comment}))
                 for t, k, r in keys if (t, k, r) in fresh])
        got = await _select(conn, keys)
    return [
        {"tag": t, "alarm": k, "raised_at": iso(r), "acked_at": iso(got[t, k, r][0]), "acked_by": got[t, k, r][1],
         "comment": got[t, k, r][2], "already": (t, k, r) not in fresh}
        for t, k, r in keys
    ]


router = APIRouter(tags=["history"])


@router.post("/alarms/ack", response_model=AcksOut, summary="Acknowledge alarms (operator and up)")
async def ack(
    request: Request,
    body: AckIn,
    principal: Annotated[Principal, Depends(require("operator"))],
) -> JSONResponse:
    core = request.app.state.core
    done = await acknowledge(core.store.pool, core.history.pool, body.alarms, body.comment, principal.name)
    return JSONResponse({"acknowledged": done})
