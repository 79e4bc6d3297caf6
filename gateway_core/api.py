"""The REST application: FastAPI app factory, the service context, error mapping, health endpoints.

Every route lives under ``/api/v1`` (``routes_devices``, ``routes_config``, ``history``); OpenAPI at
``/openapi.json``, Swagger UI at ``/docs``. Errors are ``{"detail": <message>, "field": <name>}`` with
a precise status: 400 bad request, 401/403 auth, 404, 409 duplicate, 412 stale If-Match, 422 invalid.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway_core import (
    alarm_acks,
    history,
    history_aggregates,
    live_ws,
    routes_auth,
    routes_config,
    routes_devices,
    routes_health,
)
from gateway_core import metrics as m
from gateway_core.auth import Auth
from gateway_core.console import mount as mount_console
from gateway_core.control import Control
from gateway_core.errors import ApiError
from gateway_core.history import History
from gateway_core.live import LiveHub
from gateway_core.models import ErrorOut, ReadyOut
from gateway_core.sessions import Sessions
from gateway_core.settings import Settings
from gateway_core.sharding import Assigner
from gateway_core.store import Pool, Store
from gateway_core.users_store import UserStore

log = logging.getLogger("gateway_core.api")

PREFIX = "/api/v1"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (400, "Bad request"),
        (401, "Missing or unknown API key or access token"),
        (403, "Role lacks the right"),
        (404, "Not found"),
        (409, "Conflict (duplicate)"),
        (412, "If-Match does not match the current revision"),
        (422, "Invalid input; 'field' names it"),
        (503, "Database or broker unavailable"),
    )
}


@dataclass
class Core:
    """Everything a request handler needs, on ``app.state.core``."""

    settings: Settings
    store: Store
    auth: Auth
    assigner: Assigner
    control: Control
    history: History
    sessions: Sessions | None = None
    live: LiveHub | None = None
    checks: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, pool: Pool, history_pool: Pool | None = None) -> Core:
        store = Store(pool)
        assigner = Assigner(
            heartbeat_timeout=settings.heartbeat_timeout, handoff_timeout=settings.handoff_timeout
        )
        sessions = Sessions(settings, UserStore(pool))
        return cls(
            settings=settings,
            store=store,
            auth=Auth(store, settings.admin_key, sessions),
            sessions=sessions,
            live=LiveHub(settings.live),
            assigner=assigner,
            control=Control(settings, assigner),
            history=History(history_pool or pool, settings.history),
        )

    async def load(self) -> None:
        """Create the bootstrap admin user when asked to; hand the stored configuration to the assigner (at start)."""
        if self.sessions is not None:
            await self.sessions.bootstrap()
        revision = await self.store.revision()
        m.REVISION.set(revision)
        self.assigner.load(((r.id, r.doc, r.revision) for r in await self.store.all_devices()), revision)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]  # the field's own name is what a client looks for
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def single_query_values(request: Request) -> None:
    """Every query parameter of this API takes one value: a repeated one is a client mistake."""
    keys = [k for k, _ in request.query_params.multi_items()]
    for key in keys:
        if keys.count(key) > 1:
            raise ApiError(
                400, f"query parameter {key!r} is given {keys.count(key)} times; give it once", field=key
            )


def create_app(core: Core) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Under a plain ASGI server the database connections live in its event loop: close them there.
        # (The daemon runs uvicorn with lifespan off and closes them itself.)
        yield
        await core.store.pool.close()
        await core.history.pool.close()

    app = FastAPI(
        lifespan=lifespan,
        title="NEXUS Edge configuration service",
        version="1",
        description="Devices, tags, revisions and gateways of a NEXUS Edge plant. "
        "Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>` (API keys, for machines), or "
        "`Authorization: Bearer <access token>` from `POST /api/v1/auth/login` (users).",
    )
    app.state.core = core

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        headers.update(exc.headers or {})
        return JSONResponse(
            {"detail": exc.message, "field": exc.field}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": ["body"], "msg": "invalid request"}
        where = _loc(tuple(first["loc"]))
        return JSONResponse(
            {"detail": f"{where}: {first['msg']}", "field": where, "errors": errors}, status_code=422
        )

    @app.exception_handler(psycopg.DataError)
    async def data_error(request: Request, exc: psycopg.DataError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"invalid input for the database: {str(exc).strip()}", "field": None}, status_code=422
        )

    @app.exception_handler(psycopg.OperationalError)
    async def db_down(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", str(exc).strip())
        return JSONResponse({"detail": "the database is unavailable", "field": None}, status_code=503)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Allow: every method of the path, not only those of the first route
            path = request.url.path
            methods = {
                m
                for r in app.router.routes
                if isinstance(r, APIRoute) and r.path_regex.match(path)
                for m in r.methods or ()
            }
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse(
            {"detail": str(exc.detail), "field": None}, status_code=exc.status_code, headers=headers
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}}, tags=["ops"])
    async def readyz() -> JSONResponse:
        checks = {}
        for name, check in core.checks.items():
            try:
                checks[name] = bool(check())
            except Exception:  # noqa: BLE001 - a broken check means "not ready"
                checks[name] = False
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in (routes_devices.router, routes_config.router, routes_auth.router, history_aggregates.router,
                   routes_health.router, alarm_acks.router):
        app.include_router(
            router, prefix=PREFIX, responses=ERRORS, dependencies=[Depends(single_query_values)]
        )
    app.add_api_websocket_route(f"{PREFIX}/live", live_ws.endpoint, name="live")
    # /history takes several tags as tag=...&tag=...
    app.include_router(
        history.router, prefix=PREFIX, responses=ERRORS, dependencies=[Depends(history.single_values_but_tag)]
    )
    mount_console(app)  # the web console at /, for what no route above answers
    return app
