"""Whole-plant import/export, revisions and rollback, audit, gateways (read-only) and API keys."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
import yaml
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway_core.auth import BOOTSTRAP_NAME, Principal, hash_key, new_key, require, shown
from gateway_core.deps import LevelFilter, core, etag, level_or_404, level_or_422, parse_if_match
from gateway_core.errors import ApiError
from gateway_core.models import (
    AuditList,
    CommitOut,
    GatewayList,
    GatewayOut,
    KeyCreated,
    KeyIn,
    KeyOut,
    RevisionList,
)
from gateway_core.sharding import GatewayState
from gateway_core.store import Commit
from gateway_core.validate import parse_plant_doc, plant_doc

router = APIRouter()

MAX_IMPORT_BYTES = 64 * 1024 * 1024  #: largest plant document accepted by POST /import
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_PLANT_SCHEMA = {
    "type": "object",
    "required": ["devices"],
    "properties": {
        "plant": {
            "type": "object",
            "description": "UNS levels shared by the devices",
            "properties": {k: {"type": "string"} for k in ("enterprise", "site", "area", "line")},
        },
        "devices": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceIn"}},
    },
}
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description='the global revision you based this on, e.g. "12"')
]


def commit_out(commit: Commit) -> dict[str, Any]:
    return {
        "revision": commit.revision,
        "created": [c.device_id for c in commit.changes if c.before is None],
        "updated": [c.device_id for c in commit.changes if c.before is not None and c.after is not None],
        "deleted": [c.device_id for c in commit.changes if c.after is None],
    }


# -- import / export -------------------------------------------------------------------------------
@router.get(
    "/export",
    tags=["plant"],
    summary="The whole configuration as a plant document (JSON or YAML)",
    responses={
        200: {
            "content": {
                "application/json": {"schema": _PLANT_SCHEMA},
                "application/yaml": {"schema": _PLANT_SCHEMA},
            }
        }
    },
)
async def export(
    request: Request,
    *,
    format: Annotated[Literal["json", "yaml"], Query()] = "json",
    revision: Annotated[int | None, Query(ge=0, le=2**62, description="as it was at this revision")] = None,
    who: Annotated[Principal, Depends(require("viewer"))],
) -> Response:
    store = core(request).store
    current = await store.revision()
    docs = await store.snapshot(current if revision is None else revision)
    doc = shown(who, plant_doc(docs))
    headers = {"ETag": etag(current if revision is None else revision)}
    if format == "yaml":
        return Response(
            yaml.safe_dump(doc, sort_keys=False, allow_unicode=True),
            media_type="application/yaml",
            headers=headers,
        )
    return Response(orjson.dumps(doc), media_type="application/json", headers=headers)


@router.post(
    "/import",
    tags=["plant"],
    response_model=CommitOut,
    summary="Load a whole plant document (JSON or YAML by Content-Type) as one revision",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _PLANT_SCHEMA},
                "application/yaml": {"schema": _PLANT_SCHEMA},
            },
        }
    },
)
async def import_plant(
    request: Request,
    *,
    mode: Annotated[
        Literal["replace", "merge"],
        Query(description="replace: devices not in the document are deleted; merge: kept"),
    ] = "replace",
    if_match: IfMatch = None,
    who: Annotated[Principal, Depends(require("engineer"))],
) -> dict[str, Any]:
    c = core(request)
    raw = await request.body()
    if len(raw) > MAX_IMPORT_BYTES:
        raise ApiError(413, f"body of {len(raw)} bytes is larger than {MAX_IMPORT_BYTES}", field="body")
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        if ctype in YAML_TYPES:
            doc = yaml.safe_load(raw)
        elif ctype in ("application/json", ""):
            doc = orjson.loads(raw)
        else:
            raise ApiError(
                400,
                f"Content-Type {ctype!r}: send application/json or application/yaml",
                field="Content-Type",
            )
    except (yaml.YAMLError, orjson.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(
            400, f"body is not valid {'YAML' if ctype in YAML_TYPES else 'JSON'}: {exc}", field="body"
        ) from exc
    docs = parse_plant_doc(doc)
    commit = await c.store.replace_all(
        docs,
        actor=who.name,
        action="import",
        summary=f"import {len(docs)} devices ({mode})",
        delete_missing=mode == "replace",
        if_match=parse_if_match(if_match),
    )
    c.control.committed(commit)
    return commit_out(commit)


# -- revisions, rollback, audit --------------------------------------------------------------------
@router.get("/revisions", tags=["revisions"], response_model=RevisionList, summary="Revisions, newest first")
async def revisions(
    request: Request,
    *,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    _: Annotated[Principal, Depends(require("viewer"))],
) -> dict[str, Any]:
    items, total = await core(request).store.revisions(limit=limit, offset=offset)
    return {"items": items, "total": total, "current": total - 1}


@router.post(
    "/revisions/{revision}/rollback",
    tags=["revisions"],
    response_model=CommitOut,
    summary="Restore the whole configuration as it was at a revision (as a new revision)",
)
async def rollback(
    request: Request,
    *,
    revision: Annotated[int, Path(ge=0, le=2**62)],
    if_match: IfMatch = None,
    who: Annotated[Principal, Depends(require("engineer"))],
) -> dict[str, Any]:
    c = core(request)
    docs = await c.store.snapshot(revision)
    commit = await c.store.replace_all(
        docs,
        actor=who.name,
        action="rollback",
        summary=f"rollback to {revision}",
        delete_missing=True,
        if_match=parse_if_match(if_match),
        rollback_of=revision,
    )
    c.control.committed(commit)
    return commit_out(commit)


@router.get("/audit", tags=["revisions"], response_model=AuditList, summary="Audit rows, newest first")
async def audit(
    request: Request,
    *,
    device: LevelFilter = None,
    revision: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    who: Annotated[Principal, Depends(require("viewer"))],
) -> dict[str, Any]:
    target = f"device:{level_or_422(device, 'device')}" if device is not None else None
    items, total = await core(request).store.audit(
        target=target, revision=revision, limit=limit, offset=offset
    )
    return {"items": shown(who, items), "total": total}


# -- gateways --------------------------------------------------------------------------------------
def _gateway(request: Request, g: GatewayState) -> dict[str, Any]:
    a = core(request).assigner
    return {
        "id": g.id,
        "online": g.online,
        "capacity": g.capacity,
        "applied_revision": g.applied_revision,
        "lag": a.lag(g.id),
        "assigned": a.assigned(g.id),
        "polling": sorted(g.devices),
        "errors": g.errors,
        "last_status_ts": g.ts,
    }


@router.get("/gateways", tags=["gateways"], response_model=GatewayList, summary="Known gateways")
async def gateways(
    request: Request,
    *,
    online: Annotated[bool | None, Query(description="only live (true) or dead")] = None,
    _: Annotated[Principal, Depends(require("viewer"))],
) -> dict[str, Any]:
    a = core(request).assigner
    a.expire()
    items = [
        _gateway(request, g) for _, g in sorted(a.gateways.items()) if online is None or g.online == online
    ]
    return {"items": items, "revision": a.revision}


@router.get("/gateways/{gateway_id}", tags=["gateways"], response_model=GatewayOut, summary="One gateway")
async def gateway(
    request: Request, *, gateway_id: str, _: Annotated[Principal, Depends(require("viewer"))]
) -> dict[str, Any]:
    a = core(request).assigner
    a.expire()
    g = a.gateways.get(level_or_404(gateway_id, "gateway id"))
    if g is None:
        raise ApiError(404, f"gateway {gateway_id!r} not known", field="gateway_id")
    return _gateway(request, g)


# -- API keys --------------------------------------------------------------------------------------
@router.get("/keys", tags=["keys"], response_model=list[KeyOut], summary="API keys (names and roles)")
async def list_keys(
    request: Request, *, _: Annotated[Principal, Depends(require("admin"))]
) -> list[dict[str, Any]]:
    return await core(request).store.list_keys()


@router.post(
    "/keys",
    tags=["keys"],
    status_code=201,
    response_model=KeyCreated,
    summary="Create an API key; the secret is in the response, once",
)
async def create_key(
    request: Request, *, body: KeyIn, who: Annotated[Principal, Depends(require("admin"))]
) -> JSONResponse:
    if body.name == BOOTSTRAP_NAME:
        raise ApiError(409, f"{BOOTSTRAP_NAME!r} is the settings' key", field="name")
    key = new_key()
    await core(request).store.create_key(body.name, body.role, hash_key(key), actor=who.name)
    return JSONResponse(
        {"name": body.name, "role": body.role, "key": key, "created_by": who.name}, status_code=201
    )


@router.delete("/keys/{name}", tags=["keys"], status_code=204, summary="Revoke an API key")
async def delete_key(
    request: Request, *, name: str, who: Annotated[Principal, Depends(require("admin"))]
) -> Response:
    await core(request).store.delete_key(level_or_404(name, "key name"), actor=who.name)
    return Response(status_code=204)
