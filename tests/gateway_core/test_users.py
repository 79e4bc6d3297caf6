"""gateway_core users on real PostgreSQL: every route's role enforced for users' access tokens as for API
keys; admins create, list, change, disable and reset users; a user changes their own password; the bootstrap
admin user comes from the settings (environment) and a later password change stays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway_core.settings import Settings
from nexus.settings import SettingsError, load
from tests.gateway_core.test_auth import REQUESTS, ROLES, make_keys, state
from tests.gateway_core.users_support import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    bearer,
    client_from,
    login,
    make_user,
    refresh,
    users_api,
)
from tests.support.core import Api, device_doc
from tests.support.db import query


@pytest.fixture
async def api(db: str) -> AsyncIterator[Api]:
    async with users_api(db) as a:
        yield a


@pytest.mark.parametrize(
    ("method", "url", "body", "lowest"), REQUESTS, ids=[f"{m} {u}" for m, u, _, _ in REQUESTS]
)
async def test_roles_of_users(api: Api, method: str, url: str, body: Any, lowest: str) -> None:
    await make_keys(api)  # the key routes act on them
    tokens = {}
    async with client_from(api, "10.2.0.1") as client:
        for role in ROLES:
            password = await make_user(api, f"{role}-user", role)
            tokens[role], _ = await login(client, f"{role}-user", password)
        assert (await api.client.post("/api/v1/devices", json=device_doc())).status_code == 201
        before = state(api)
        for role in ROLES[: ROLES.index(lowest)]:
            r = await client.request(method, url, json=body, headers=bearer(tokens[role]))
            assert r.status_code == 403, (role, r.text)
            assert f"role {role!r} of user '{role}-user'" in r.json()["detail"]
            assert f"needs {lowest} or above" in r.json()["detail"]
        assert state(api) == before
        r = await client.request(method, url, json=body, headers=bearer(tokens[lowest]))
        if url.endswith("/write"):
            assert r.status_code == 503 and "no gateway polls" in r.json()["detail"]
        else:
            assert r.status_code in (200, 201, 204), r.text
    if method != "GET" and not url.endswith("/write"):
        # the audit row names the user
        assert query(api.dsn, "SELECT actor FROM core.audit ORDER BY id DESC LIMIT 1") == [(f"user:{lowest}-user",)]


USER_ROUTES = [
    ("GET", "/api/v1/users", None),
    ("POST", "/api/v1/users", {"name": "new", "role": "viewer", "password": "new-password-123"}),
    ("GET", "/api/v1/users/eve", None),
    ("PATCH", "/api/v1/users/eve", {"role": "admin"}),
    ("PUT", "/api/v1/users/eve/password", {"password": "other-password-123"}),
]


async def test_user_management_is_for_admins(api: Api) -> None:
    keys = await make_keys(api)
    await make_user(api, "eve", "engineer")
    before = query(api.dsn, "SELECT name, role, password_hash, disabled FROM core.users ORDER BY name")
    async with client_from(api, "10.2.0.2") as client:
        access, _ = await login(client, "eve", "eve-password-123")
        for method, url, body in USER_ROUTES:
            for headers in (bearer(access), bearer(keys["engineer"]), {}):
                r = await client.request(method, url, json=body, headers=headers)
                assert r.status_code == (403 if headers else 401), (method, url, r.text)
    assert query(api.dsn, "SELECT name, role, password_hash, disabled FROM core.users ORDER BY name") == before

    r = await api.client.post("/api/v1/users", json={"name": "Zoe", "role": "operator", "password": "zoe-pass-1234"})
    assert r.status_code == 201 and r.headers["Location"] == "/api/v1/users/zoe"
    assert r.json()["name"] == "zoe" and r.json()["created_by"] == "bootstrap-admin"
    assert "zoe-pass-1234" not in r.text and "argon2" not in r.text
    r = await api.client.post("/api/v1/users", json={"name": "zoe", "role": "viewer", "password": "zoe-pass-1234"})
    assert r.status_code == 409 and r.json()["field"] == "name"
    r = await api.client.post("/api/v1/users", json={"name": "ann", "role": "viewer", "password": "short-1"})
    assert r.status_code == 422 and r.json()["field"] == "password"
    r = await api.client.post("/api/v1/users", json={"name": "ann", "role": "viewer", "password": "short-pass1"})
    assert r.status_code == 422 and r.json() == {"detail": "password: must be at least 12 characters",
                                                 "field": "password"}
    r = await api.client.post("/api/v1/users", json={"name": "ann", "role": "root", "password": "x" * 12})
    assert r.status_code == 422 and r.json()["field"] == "role"
    r = await api.client.post("/api/v1/users", json={"name": "a/b", "role": "viewer", "password": "x" * 12})
    assert r.status_code == 422 and r.json()["field"] == "name"
    r = await api.client.get("/api/v1/users")
    assert [(u["name"], u["role"], u["disabled"]) for u in r.json()] == [
        ("eve", "engineer", False), (ADMIN_USER, "admin", False), ("zoe", "operator", False)
    ]
    assert (await api.client.get("/api/v1/users/ZOE")).json()["role"] == "operator"
    assert (await api.client.get("/api/v1/users/nobody")).status_code == 404
    assert (await api.client.get("/api/v1/users/a%2Fb")).status_code == 404
    assert (await api.client.patch("/api/v1/users/nobody", json={"disabled": True})).status_code == 404
    r = await api.client.put("/api/v1/users/nobody/password", json={"password": "x" * 12})
    assert r.status_code == 404

    # an admin cannot lock themselves out
    async with client_from(api, "10.2.0.2") as client:
        access, _ = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        for change in ({"disabled": True}, {"role": "engineer"}):
            r = await client.patch(f"/api/v1/users/{ADMIN_USER}", json=change, headers=bearer(access))
            assert r.status_code == 409, r.text
        r = await client.patch("/api/v1/users/zoe", json={"role": "admin"}, headers=bearer(access))
        assert r.status_code == 200 and r.json()["role"] == "admin"
    assert query(api.dsn, "SELECT actor, action, target FROM core.audit WHERE target LIKE 'user:%' ORDER BY id") == [
        ("system", "user.bootstrap", "user:root"),
        ("bootstrap-admin", "user.create", "user:eve"),
        ("user:eve", "login", "user:eve"),
        ("bootstrap-admin", "user.create", "user:zoe"),
        ("user:root", "login", "user:root"),
        ("user:root", "user.update", "user:zoe"),
    ]


async def test_own_password_change_and_admin_reset(api: Api) -> None:
    old = await make_user(api, "pat", "viewer")
    new = "pat-new-password-9"
    async with client_from(api, "10.2.0.3") as client:
        access, cookie = await login(client, "pat", old)
        other_access, other_cookie = await login(client, "pat", old)
        r = await client.put("/api/v1/auth/password", headers=bearer(access),
                             json={"current_password": "wrong-password", "new_password": new})
        assert r.status_code == 403 and r.json()["field"] == "current_password"
        r = await client.put("/api/v1/auth/password", headers=bearer(access),
                             json={"current_password": old, "new_password": "pat"})
        assert r.status_code == 422 and r.json()["field"] == "new_password"
        r = await client.put("/api/v1/auth/password", headers=bearer(access),
                             json={"current_password": old, "new_password": "eleven-char"})
        assert r.status_code == 422 and r.json()["detail"] == "new_password: must be at least 12 characters"
        r = await client.put("/api/v1/auth/password", headers=bearer(access),
                             json={"current_password": old, "new_password": new})
        assert r.status_code == 204, r.text
        # this session goes on, the other one ended; the old password is gone
        assert (await client.get("/api/v1/auth/me", headers=bearer(access))).status_code == 200
        assert (await client.get("/api/v1/auth/me", headers=bearer(other_access))).status_code == 401
        assert (await refresh(client, other_cookie)).status_code == 401
        r = await client.post("/api/v1/auth/login", json={"name": "pat", "password": old})
        assert r.status_code == 401
        await login(client, "pat", new)

        # an API key has no password to change
        r = await api.client.put("/api/v1/auth/password", json={"current_password": old, "new_password": new})
        assert r.status_code == 403 and "API key" in r.json()["detail"]

        # an admin's reset ends every session of the user
        r = await api.client.put("/api/v1/users/pat/password", json={"password": "reset-password-1"})
        assert r.status_code == 204
        assert (await client.get("/api/v1/auth/me", headers=bearer(access))).status_code == 401
        assert (await refresh(client, cookie)).status_code == 401
        assert (await client.post("/api/v1/auth/login", json={"name": "pat", "password": new})).status_code == 401
        await login(client, "pat", "reset-password-1")
    assert query(api.dsn, "SELECT actor, action, after FROM core.audit WHERE action IN ('user.password', 'user.reset')"
                          " ORDER BY id") == [
        ("user:pat", "user.password", {"sessions_revoked": 1}),
        ("bootstrap-admin", "user.reset", {"sessions_revoked": 2}),  # the one kept and the new login
    ]
    assert query(api.dsn, "SELECT count(*) FROM core.audit WHERE action = 'login.failed'") == [(3,)]


async def test_bootstrap_admin_user(db: str) -> None:
    async with users_api(db) as api:
        rows = query(db, "SELECT name, role, disabled, created_by, password_hash FROM core.users")
        assert [r[:4] for r in rows] == [(ADMIN_USER, "admin", False, "system")]
        assert rows[0][4].startswith("$argon2id$v=19$") and ADMIN_PASSWORD not in rows[0][4]
        async with client_from(api, "10.2.0.4") as client:
            access, _ = await login(client, ADMIN_USER, ADMIN_PASSWORD)
            r = await client.put("/api/v1/auth/password", headers=bearer(access),
                                 json={"current_password": ADMIN_PASSWORD, "new_password": "changed-password-1"})
            assert r.status_code == 204
        # the next start (core.load, as the daemon does) keeps the changed password
        await api.core.load()
        async with client_from(api, "10.2.0.4") as client:
            await login(client, ADMIN_USER, "changed-password-1")
            r = await client.post("/api/v1/auth/login", json={"name": ADMIN_USER, "password": ADMIN_PASSWORD})
            assert r.status_code == 401
    assert query(db, "SELECT count(*) FROM core.audit WHERE action = 'user.bootstrap'") == [(1,)]


def test_bootstrap_settings_from_the_environment() -> None:
    env = {"NEXUS_CORE_ADMIN_USER": "ops", "NEXUS_CORE_ADMIN_PASSWORD": "from-the-env-123",
           "NEXUS_CORE_AUTH_ACCESS_TTL": "60", "NEXUS_CORE_AUTH_JWT_SECRET": "k" * 32}
    s = load(Settings, env_prefix="NEXUS_CORE", env=env)
    assert (s.admin_user, s.admin_password, s.auth.access_ttl, s.auth.jwt_secret) == (
        "ops", "from-the-env-123", 60.0, "k" * 32)
    assert "from-the-env-123" not in repr(s) and "k" * 32 not in repr(s) + repr(s.auth)
    for bad, field in (({"NEXUS_CORE_ADMIN_PASSWORD": "short"}, "admin_password"),
                       ({"NEXUS_CORE_ADMIN_USER": "Not Valid"}, "admin_user"),
                       ({"NEXUS_CORE_AUTH_JWT_SECRET": "short"}, "auth.jwt_secret"),
                       ({"NEXUS_CORE_AUTH_LOGIN_MAX_FAILURES": "0"}, "auth.login_max_failures")):
        with pytest.raises(SettingsError) as info:
            load(Settings, env_prefix="NEXUS_CORE", env=bad)
        assert info.value.field.startswith(field), info.value
