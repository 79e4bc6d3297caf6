"""Devices and their tags: CRUD with ETag/If-Match, filtering and pagination, tag value writes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway.errors import WriteRefused
from gateway.values import check_write
from gateway_core.auth import Principal, require, shown
from gateway_core.deps import (
    LEVEL_PATTERN,
    LevelFilter,
    core,
    etag,
    level_or_404,
    level_or_422,
    parse_if_match,
)
from gateway_core.errors import ApiError
from gateway_core.models import DeviceIn, DeviceList, DeviceOut, TagIn, TagOut, WriteIn
from gateway_core.store import DeviceRow
from gateway_core.validate import check_device, json_clean, normalize_device
from normalizer import DeviceRules, ValueRefused

router = APIRouter(tags=["devices"])

DeviceId = Annotated[str, Path(description="device id", examples=["press-1"])]
TagName = Annotated[str, Path(description="tag name", examples=["setpoint"])]

IfMatch = Annotated[
    str | None, Header(alias="If-Match", description='ETag of the version you changed, e.g. "12"')
]
#: who manages the device besides the API's users (e.g. the Kubernetes operator, docs/operator.md): stored beside the
#: document, never sent to a gateway; absent: unchanged, empty: cleared
OwnerHeader = Annotated[
    str | None,
    Header(
        alias="X-Nexus-Owner",
        max_length=253,
        pattern=r"^[\x21-\x7e]*$",
        description="mark the device as managed by this owner (e.g. nexus-operator:plant-a/press-1); empty clears it",
    ),
]


def _out(request: Request, row: DeviceRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "revision": row.revision,
        "gateway": core(request).assigner.owner.get(row.id),
        "owner": row.owner,
        "device": row.doc,
    }


def _response(request: Request, row: DeviceRow, status: int = 200) -> JSONResponse:
    headers = {"ETag": etag(row.revision)}
    if status == 201:
        headers["Location"] = f"/api/v1/devices/{row.id}"
    return JSONResponse(_out(request, row), status_code=status, headers=headers)


def _body(device: DeviceIn) -> dict[str, Any]:
    return device.model_dump(exclude_unset=True)


@router.get("/devices", response_model=DeviceList, summary="List devices (filter, paginate)")
async def list_devices(
    request: Request,
    *,
    protocol: LevelFilter = None,
    enterprise: LevelFilter = None,
    site: LevelFilter = None,
    area: LevelFilter = None,
    line: LevelFilter = None,
    gateway: Annotated[
        str | None, Query(pattern=LEVEL_PATTERN, description="devices assigned to this gateway")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    after: Annotated[
        str | None, Query(pattern=LEVEL_PATTERN, description="cursor: the 'next' of the previous page")
    ] = None,
    who: Annotated[Principal, Depends(require("viewer"))],
) -> dict[str, Any]:
    c = core(request)
    filters = {
        k: level_or_422(v, k)
        for k, v in (
            ("protocol", protocol),
            ("enterprise", enterprise),
            ("site", site),
            ("area", area),
            ("line", line),
        )
    }
    ids = set(c.assigner.assigned(level_or_422(gateway, "gateway") or "")) if gateway is not None else None
    revision = await c.store.revision()
    rows, total = await c.store.list_devices(
        filters=filters, ids=ids, limit=limit + 1, offset=offset, after=after
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [{**_out(request, DeviceRow(r.id, shown(who, r.doc), r.revision, r.owner)),
                   "health": c.control.health.view(r.id)} for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "next": rows[-1].id if more else None,
        "revision": revision,
    }


@router.post("/devices", status_code=201, response_model=DeviceOut, summary="Create a device")
async def create_device(
    request: Request,
    *,
    device: DeviceIn,
    owner: OwnerHeader = None,
    who: Annotated[Principal, Depends(require("engineer"))],
) -> JSONResponse:
    c = core(request)
    doc = normalize_device(_body(device), {})
    commit = await c.store.create_device(doc, actor=who.name, owner=owner)
    c.control.committed(commit)
    return _response(request, DeviceRow(doc["id"], doc, commit.revision, owner or None), 201)


@router.get("/devices/{device_id}", response_model=DeviceOut, summary="One device")
async def get_device(
    request: Request, *, device_id: DeviceId, who: Annotated[Principal, Depends(require("viewer"))]
) -> JSONResponse:
    row = await core(request).store.get_device(level_or_404(device_id, "device id"))
    if row is None:
        raise ApiError(404, f"device {device_id!r} not found", field="device_id")
    return _response(request, DeviceRow(row.id, shown(who, row.doc), row.revision, row.owner))


@router.put("/devices/{device_id}", response_model=DeviceOut, summary="Replace a device")
async def put_device(
    request: Request,
    *,
    device: DeviceIn,
    device_id: DeviceId,
    if_match: IfMatch = None,
    owner: OwnerHeader = None,
    who: Annotated[Principal, Depends(require("engineer"))],
) -> JSONResponse:
    c = core(request)
    level_or_404(device_id, "device id")
    body = _body(device)
    if body.setdefault("id", device_id) != device_id:
        raise ApiError(
            422,
            f"device.id {body['id']!r} differs from the URL's {device_id!r} (ids cannot change)",
            field="device.id",
        )
    doc = normalize_device(body, {})
    commit, row = await c.store.update_device(
        device_id,
        lambda _old: doc,
        actor=who.name,
        action="device.update",
        if_match=parse_if_match(if_match),
        owner=owner,
    )
    c.control.committed(commit)
    assert row is not None
    return _response(request, row)


@router.delete("/devices/{device_id}", status_code=204, summary="Delete a device")
async def delete_device(
    request: Request,
    *,
    device_id: DeviceId,
    if_match: IfMatch = None,
    who: Annotated[Principal, Depends(require("engineer"))],
) -> Response:
    c = core(request)
    commit, _ = await c.store.update_device(
        level_or_404(device_id, "device id"),
        lambda _old: None,
        actor=who.name,
        action="device.delete",
        if_match=parse_if_match(if_match),
    )
    c.control.committed(commit)
    return Response(status_code=204)


# -- tags ------------------------------------------------------------------------------------------
async def _device(request: Request, device_id: str) -> DeviceRow:
    row = await core(request).store.get_device(level_or_404(device_id, "device id"))
    if row is None:
        raise ApiError(404, f"device {device_id!r} not found", field="device_id")
    return row


def _find(doc: dict[str, Any], name: str) -> int | None:
    for i, t in enumerate(doc.get("tags", [])):
        if isinstance(t, dict) and t.get("name") == name:
            return i
    return None


@router.get(
    "/devices/{device_id}/tags",
    response_model=list[dict[str, Any]],
    tags=["tags"],
    summary="Tags of a device",
)
async def list_tags(
    request: Request, *, device_id: DeviceId, _: Annotated[Principal, Depends(require("viewer"))]
) -> JSONResponse:
    row = await _device(request, device_id)
    return JSONResponse(row.doc.get("tags", []), headers={"ETag": etag(row.revision)})


@router.get("/devices/{device_id}/tags/{name}", response_model=TagOut, tags=["tags"], summary="One tag")
async def get_tag(
    request: Request,
    *,
    device_id: DeviceId,
    name: TagName,
    _: Annotated[Principal, Depends(require("viewer"))],
) -> JSONResponse:
    row = await _device(request, device_id)
    i = _find(row.doc, name)
    if i is None:
        raise ApiError(404, f"tag {name!r} not found on device {device_id!r}", field="name")
    return JSONResponse(
        {"device_id": row.id, "revision": row.revision, "tag": row.doc["tags"][i]},
        headers={"ETag": etag(row.revision)},
    )


@router.put(
    "/devices/{device_id}/tags/{name}",
    response_model=TagOut,
    tags=["tags"],
    responses={201: {"model": TagOut, "description": "Tag created"}},
    summary="Create or replace a tag (If-Match: the device's ETag)",
)
async def put_tag(
    request: Request,
    *,
    tag: TagIn,
    device_id: DeviceId,
    name: TagName,
    if_match: IfMatch = None,
    who: Annotated[Principal, Depends(require("engineer"))],
) -> JSONResponse:
    c = core(request)
    level_or_404(device_id, "device id")
    body = json_clean(tag.model_dump(exclude_unset=True))
    if body.setdefault("name", name) != name:
        raise ApiError(422, f"tag.name {body['name']!r} differs from the URL's {name!r}", field="tag.name")
    created = False

    def change(old: dict[str, Any]) -> dict[str, Any]:
        nonlocal created
        tags = list(old.get("tags", []))
        i = _find(old, name)
        created = i is None
        if i is None:
            tags.append(body)
        else:
            tags[i] = body
        return normalize_device({**old, "tags": tags}, {})

    commit, row = await c.store.update_device(
        device_id, change, actor=who.name, action="tag.put", if_match=parse_if_match(if_match)
    )
    c.control.committed(commit)
    assert row is not None
    return JSONResponse(
        {"device_id": device_id, "revision": row.revision, "tag": body},
        status_code=201 if created else 200,
        headers={"ETag": etag(row.revision)},
    )


@router.delete("/devices/{device_id}/tags/{name}", status_code=204, tags=["tags"], summary="Delete a tag")
async def delete_tag(
    request: Request,
    *,
    device_id: DeviceId,
    name: TagName,
    if_match: IfMatch = None,
    who: Annotated[Principal, Depends(require("engineer"))],
) -> Response:
    c = core(request)

    def change(old: dict[str, Any]) -> dict[str, Any]:
        i = _find(old, name)
        if i is None:
            raise ApiError(404, f"tag {name!r} not found on device {device_id!r}", field="name")
        return {**old, "tags": [t for j, t in enumerate(old["tags"]) if j != i]}

    commit, _ = await c.store.update_device(
        level_or_404(device_id, "device id"),
        change,
        actor=who.name,
        action="tag.delete",
        if_match=parse_if_match(if_match),
    )
    c.control.committed(commit)
    return Response(status_code=204)


@router.post(
    "/devices/{device_id}/tags/{name}/write",
    response_model=dict[str, Any],
    tags=["tags"],
    responses={
        503: {"description": "No broker or no gateway polls the device"},
        504: {"description": "The gateway did not answer in time"},
    },
    summary="Write a value to a writable tag (operator); returns the gateway's response",
)
async def write_tag(
    request: Request,
    *,
    body: WriteIn,
    device_id: DeviceId,
    name: TagName,
    _: Annotated[Principal, Depends(require("operator"))],
) -> dict[str, Any]:
    c = core(request)
    row = await _device(request, device_id)
    tag = check_device(row.doc).tag(name)
    if tag is None:
        raise ApiError(404, f"tag {name!r} not found on device {device_id!r}", field="name")
    if not tag.writable:
        raise ApiError(403, f"tag {device_id}/{name} is not writable", field="name")
    value = body.value
    try:  # the gateway's own checks: the normalizer's inverse (range), then the type's
        raw = check_write(tag.type, DeviceRules([tag]).to_raw(name, value), length=tag.length)
    except (ValueRefused, WriteRefused) as exc:
        raise ApiError(422, f"value: {exc}", field="value") from exc
    if tag.transform.identity:  # the value as the gateway will write it (e.g. 1 -> true for a bool)
        value = raw
    if c.assigner.owner.get(device_id) is None:
        raise ApiError(503, f"no gateway polls device {device_id!r} now", field="device_id")
    return await c.control.write(device_id, name, value)
