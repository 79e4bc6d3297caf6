"""Helpers of the users and sessions tests: the REST app (ASGI, real PostgreSQL) with a bootstrap admin user
and cheap argon2 parameters, clients that come from other addresses, logging in."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from gateway_core.api import create_app
from gateway_core.settings import AuthSettings
from tests.support.core import Api, open_api

ADMIN_USER = "root"
ADMIN_PASSWORD = "bootstrap-password-1"
#: argon2 at its cheapest: the tests log in hundreds of times on two shared cores
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 64, "argon2_parallelism": 1}


def auth_settings(**kw: Any) -> AuthSettings:
    return AuthSettings(**{**FAST, **kw})


@contextlib.asynccontextmanager
async def users_api(db: str, **auth: Any) -> AsyncIterator[Api]:
    async with open_api(db, admin_user=ADMIN_USER, admin_password=ADMIN_PASSWORD,
                        auth=auth_settings(**auth)) as api:
        assert api.core.sessions is not None
        await api.core.sessions.bootstrap()
        yield api


@contextlib.asynccontextmanager
async def client_from(api: Api, host: str, *, https: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """A client without credentials, seen by the app as coming from ``host``."""
    transport = httpx.ASGITransport(app=create_app(api.core), client=(host, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=f"http{'s' if https else ''}://core") as client:
        yield client


async def login(client: httpx.AsyncClient, name: str, password: str) -> tuple[str, str]:
    """(access token, refresh token) of a successful login."""
    r = await client.post("/api/v1/auth/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["access_token"], r.cookies["nexus_refresh"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_user(api: Api, name: str, role: str, password: str | None = None) -> str:
    password = password or f"{name}-password-123"
    r = await api.client.post("/api/v1/users", json={"name": name, "role": role, "password": password})
    assert r.status_code == 201, r.text
    return password


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """POST /auth/refresh with exactly this refresh cookie (the client's jar emptied first)."""
    client.cookies.clear()
    return await client.post("/api/v1/auth/refresh", headers={"Cookie": f"nexus_refresh={token}"})
