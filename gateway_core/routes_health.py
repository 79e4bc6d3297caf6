"""Device health (``gateway_core.health``): ``GET /health/devices`` (every device's newest report, filtered)
and ``GET /devices/{id}/health`` (one). The same views go out on the live stream (``{"type": "health"}``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gateway_core.auth import Principal, require
from gateway_core.deps import LEVEL_PATTERN, core, level_or_404
from gateway_core.errors import ApiError

router = APIRouter(tags=["health"])


class LatencyOut(BaseModel):
    p50: float = Field(description="median poll latency over the window, ms")
    p99: float = Field(description="99th percentile, ms")
    samples: int = Field(description="successful polls in the window")
    window_s: float = Field(description="the window, seconds")


class DeviceHealthOut(BaseModel):
    device_id: str
    gateway: str = Field(description="the gateway that sent the report (polls the device)")
    assigned_gateway: str | None = Field(description="the gateway this service assigned it to (null: none)")
    path: str | None = Field(description="the device's UNS path")
    state: Literal["polling", "failed", "offline"] = Field(
        description="polling; failed: its task ended and is restarted (see last_error); offline: the gateway stopped")
    connected: bool = Field(description="the device answered the newest attempt")
    breaker: Literal["closed", "open", "half_open"]
    consecutive_errors: int
    last_error: str | None = Field(description="the newest failure (at most 400 characters)")
    last_error_ts: int | None = Field(description="its time, Unix ms")
    last_good_ts: int | None = Field(description="the newest successful read, Unix ms")
    latency_ms: LatencyOut | None = Field(description="null: no successful poll in the window")
    polls: int = Field(description="successful polls since the device started on that gateway")
    errors: int = Field(description="failed connects and reads since then")
    ts: int = Field(description="when the gateway made the report, Unix ms (its clock)")
    heartbeat_ms: int = Field(description="the gateway reports at least this often")
    age_s: float = Field(description="seconds since the report was made")
    gateway_online: bool | None = Field(description="the reporting gateway is live (null: not known to this service)")
    stale: bool = Field(description="not offline, and its gateway is dead or 3 heartbeats went by without a report")


class HealthList(BaseModel):
    items: list[DeviceHealthOut]
    total: int
    limit: int
    offset: int


@router.get("/health/devices", response_model=HealthList, summary="Every device's health, by device id")
async def list_health(
    request: Request,
    *,
    gateway: Annotated[str | None, Query(pattern=LEVEL_PATTERN, description="reported by this gateway")] = None,
    stale: Annotated[bool | None, Query(description="only stale (true) or fresh (false) reports")] = None,
    connected: Annotated[bool | None, Query(description="only connected (true) or disconnected devices")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    _: Annotated[Principal, Depends(require("viewer"))],
) -> JSONResponse:
    views = core(request).control.health.views(gateway=gateway, stale=stale, connected=connected)
    return JSONResponse({"items": views[offset:offset + limit], "total": len(views), "limit": limit,
                         "offset": offset})


@router.get("/devices/{device_id}/health", response_model=DeviceHealthOut, summary="One device's health")
async def device_health(
    request: Request,
    *,
    device_id: Annotated[str, Path(description="device id", examples=["press-1"])],
    _: Annotated[Principal, Depends(require("viewer"))],
) -> JSONResponse:
    view = core(request).control.health.view(level_or_404(device_id, "device id"))
    if view is None:
        raise ApiError(404, f"no health report for device {device_id[:64]!r} (no gateway polls it, or it has "
                            "not reported yet)", field="device_id")
    return JSONResponse(view)
