"""gateway_core sessions on real PostgreSQL: login gives a JWT and a refresh cookie; access tokens expire;
refresh rotates the cookie and a reused one revokes the session; logout revokes; a disabled user is out
at once; the signing key is generated and kept in the database unless the settings give one."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest

from gateway_core.api import Core
from gateway_core.store import Pool
from gateway_core.tokens import digest
from tests.gateway_core.users_support import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    auth_settings,
    bearer,
    client_from,
    login,
    make_user,
    refresh,
    users_api,
)
from tests.support.core import Api, core_settings
from tests.support.db import query
from tests.support.wait import until


@pytest.fixture
async def api(db: str) -> AsyncIterator[Api]:
    async with users_api(db) as a:
        yield a


def claims(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    out: dict[str, object] = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return out


async def test_login_gives_a_token_and_a_strict_cookie(api: Api) -> None:
    async with client_from(api, "10.1.0.1") as client:
        r = await client.post("/api/v1/auth/login", json={"name": "ROOT", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 900
        assert body["user"] == {"name": ADMIN_USER, "role": "admin"}
        assert r.headers["Cache-Control"] == "no-store"
        c = claims(body["access_token"])
        assert c["sub"] == ADMIN_USER and c["exp"] in (c["iat"] + 900, c["iat"] + 901)  # type: ignore[operator]
        cookie = r.headers["set-cookie"]
        parts = [p.strip().lower() for p in cookie.split(";")]
        assert parts[0].startswith("nexus_refresh=nxr_")
        assert {"httponly", "samesite=strict", "path=/api/v1/auth", "max-age=604800"} <= set(parts)
        assert "secure" not in parts  # plain HTTP here
        assert "nexus_refresh" not in r.text  # the refresh token is only in the cookie
        r = await client.get("/api/v1/auth/me", headers=bearer(body["access_token"]))
        assert r.json() == {"name": "user:root", "role": "admin", "kind": "user", "user": "root",
                            "session": c["sid"]}
        r = await client.get("/api/v1/devices", headers=bearer(body["access_token"]))
        assert r.status_code == 200
    async with client_from(api, "10.1.0.1", https=True) as client:
        r = await client.post("/api/v1/auth/login", json={"name": ADMIN_USER, "password": ADMIN_PASSWORD})
        assert "secure" in [p.strip().lower() for p in r.headers["set-cookie"].split(";")]
    # the session and its refresh token are stored, the token only as its digest
    refresh_token = cookie.split(";")[0].split("=", 1)[1]
    rows = query(api.dsn, "SELECT t.token_hash, s.user_name, s.address FROM core.refresh_tokens t"
                          " JOIN core.sessions s ON s.id = t.session_id ORDER BY s.id")
    assert rows[0] == (digest(refresh_token), "root", "10.1.0.1") and len(rows) == 2
    assert refresh_token not in str(query(api.dsn, "SELECT * FROM core.refresh_tokens"))


async def test_access_token_expires(db: str) -> None:
    async with users_api(db, access_ttl=1.0) as api, client_from(api, "10.1.0.2") as client:
        access, cookie = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        assert (await client.get("/api/v1/devices", headers=bearer(access))).status_code == 200

        async def expired() -> bool:
            r = await client.get("/api/v1/devices", headers=bearer(access))
            return r.status_code == 401 and r.json()["detail"] == "access token expired"

        await until(expired, 5, 0.1, what="the access token expired")
        r = await refresh(client, cookie)
        assert r.status_code == 200
        assert (await client.get("/api/v1/devices", headers=bearer(r.json()["access_token"]))).status_code == 200


async def test_refresh_token_expires(db: str) -> None:
    async with users_api(db, refresh_ttl=1.0) as api, client_from(api, "10.1.0.3") as client:
        _, cookie = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        r = await refresh(client, cookie)
        assert r.status_code == 200
        assert r.headers["set-cookie"].lower().count("max-age=1;") == 1
        cookie = r.cookies["nexus_refresh"]
        await until(lambda: query(db, "SELECT bool_and(expires_at <= now()) FROM core.refresh_tokens")[0][0],
                    5, 0.1, what="the refresh token's expiry")
        r = await refresh(client, cookie)
        assert r.status_code == 401 and r.json()["detail"] == "refresh token expired: log in"
        assert r.json()["field"] == "nexus_refresh"


async def test_refresh_rotates_and_reuse_revokes_the_session(api: Api) -> None:
    async with client_from(api, "10.1.0.4") as client:
        access1, r1 = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        r = await refresh(client, r1)
        assert r.status_code == 200, r.text
        access2, r2 = r.json()["access_token"], r.cookies["nexus_refresh"]
        assert r2 != r1 and access2 != access1
        assert claims(access2)["sid"] == claims(access1)["sid"]  # the same session
        r = await refresh(client, r2)
        assert r.status_code == 200
        access3, r3 = r.json()["access_token"], r.cookies["nexus_refresh"]
        assert (await client.get("/api/v1/auth/me", headers=bearer(access3))).status_code == 200

        # r1 again: someone has a copy; the whole session ends, the newest tokens too
        r = await refresh(client, r1)
        assert r.status_code == 401 and "already used" in r.json()["detail"]
        for token in (access1, access2, access3):
            r = await client.get("/api/v1/devices", headers=bearer(token))
            assert r.status_code == 401 and "session ended" in r.json()["detail"]
        r = await refresh(client, r3)
        assert r.status_code == 401 and r.json()["detail"] == "session revoked: log in"
        r = await refresh(client, "nxr_" + "x" * 43)
        assert r.status_code == 401 and r.json()["detail"] == "unknown refresh token: log in"
        client.cookies.clear()
        r = await client.post("/api/v1/auth/refresh")
        assert r.status_code == 401 and r.json()["field"] == "nexus_refresh"
    assert query(api.dsn, "SELECT revoked_why FROM core.sessions") == [("reuse",)]
    assert query(api.dsn, "SELECT actor, action, target, after->>'address' FROM core.audit"
                          " WHERE action = 'session.reuse'") == [("system", "session.reuse", "user:root", "10.1.0.4")]
    # a new login is a new session
    async with client_from(api, "10.1.0.4") as client:
        access, _ = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        assert (await client.get("/api/v1/devices", headers=bearer(access))).status_code == 200


async def test_logout_revokes(api: Api) -> None:
    async with client_from(api, "10.1.0.5") as client:
        access, cookie = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        other_access, other_cookie = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        client.cookies.clear()
        r = await client.post("/api/v1/auth/logout", headers={"Cookie": f"nexus_refresh={cookie}"})
        assert r.status_code == 204
        set_cookie = r.headers["set-cookie"].lower()
        assert set_cookie.startswith('nexus_refresh=""') and "max-age=0" in set_cookie
        assert "path=/api/v1/auth" in set_cookie
        r = await client.get("/api/v1/devices", headers=bearer(access))
        assert r.status_code == 401 and "session ended" in r.json()["detail"]
        assert (await refresh(client, cookie)).status_code == 401
        # the other session is untouched; logging out by its access token alone ends it too
        assert (await client.get("/api/v1/devices", headers=bearer(other_access))).status_code == 200
        client.cookies.clear()
        assert (await client.post("/api/v1/auth/logout", headers=bearer(other_access))).status_code == 204
        assert (await client.get("/api/v1/devices", headers=bearer(other_access))).status_code == 401
        assert (await refresh(client, other_cookie)).status_code == 401
        # a logout without any session is harmless
        client.cookies.clear()
        assert (await client.post("/api/v1/auth/logout")).status_code == 204
    assert query(api.dsn, "SELECT revoked_why, count(*) FROM core.sessions GROUP BY 1") == [("logout", 2)]
    assert query(api.dsn, "SELECT actor, count(*) FROM core.audit WHERE action = 'logout' GROUP BY 1") == [
        ("user:root", 2)
    ]


async def test_disabled_user_is_out_at_once_and_role_changes_apply_at_once(api: Api) -> None:
    password = await make_user(api, "ed", "engineer")
    async with client_from(api, "10.1.0.6") as client:
        access, cookie = await login(client, "ed", password)
        r = await client.post("/api/v1/devices", headers=bearer(access), json={"id": "x"})
        assert r.status_code == 422  # an engineer may try (the document is bad)
        r = await api.client.patch("/api/v1/users/ed", json={"role": "viewer"})
        assert r.status_code == 200 and r.json()["role"] == "viewer"
        r = await client.post("/api/v1/devices", headers=bearer(access), json={"id": "x"})
        assert r.status_code == 403 and "role 'viewer' of user 'ed'" in r.json()["detail"]

        r = await api.client.patch("/api/v1/users/ed", json={"disabled": True})
        assert r.status_code == 200 and r.json()["disabled"] is True
        assert (await client.get("/api/v1/devices", headers=bearer(access))).status_code == 401
        r = await refresh(client, cookie)
        assert r.status_code == 401
        r = await client.post("/api/v1/auth/login", json={"name": "ed", "password": password})
        assert r.status_code == 401 and r.json()["detail"] == "wrong user name or password, or the user is disabled"

        r = await api.client.patch("/api/v1/users/ed", json={"disabled": False})
        assert r.status_code == 200
        assert (await refresh(client, cookie)).status_code == 401  # its sessions stay ended
        access, _ = await login(client, "ed", password)
        assert (await client.get("/api/v1/devices", headers=bearer(access))).status_code == 200
    assert query(api.dsn, "SELECT after->>'reason' FROM core.audit WHERE action = 'login.failed'") == [("disabled",)]
    assert query(api.dsn, "SELECT actor, before, after FROM core.audit WHERE action = 'user.update' ORDER BY id") == [
        ("bootstrap-admin", {"role": "engineer", "disabled": False}, {"role": "viewer", "disabled": False}),
        ("bootstrap-admin", {"role": "viewer", "disabled": False}, {"role": "viewer", "disabled": True}),
        ("bootstrap-admin", {"role": "viewer", "disabled": True}, {"role": "viewer", "disabled": False}),
    ]
    assert query(api.dsn, "SELECT revoked_why FROM core.sessions ORDER BY id") == [("disabled",), (None,)]


async def test_forged_and_foreign_tokens_are_refused(api: Api) -> None:
    async with client_from(api, "10.1.0.7") as client:
        await make_user(api, "vic", "viewer")
        access, _ = await login(client, "vic", "vic-password-123")
        head, body, sig = access.split(".")
        c = claims(access)
        c["role"] = "admin"
        forged = f"{head}.{base64.urlsafe_b64encode(orjson.dumps(c)).rstrip(b'=').decode()}.{sig}"
        r = await client.get("/api/v1/users", headers=bearer(forged))
        assert r.status_code == 401 and r.json()["detail"] == "access token signature does not match"
        none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        r = await client.get("/api/v1/users", headers=bearer(f"{none_alg}.{body}."))
        assert r.status_code == 401 and r.json()["detail"] == "unknown API key"
        r = await client.get("/api/v1/users", headers=bearer(access))
        assert r.status_code == 403 and "role 'viewer' of user 'vic'" in r.json()["detail"]
        r = await client.get("/api/v1/auth/me", headers={"X-API-Key": access})
        assert r.status_code == 200 and r.json()["user"] == "vic"  # wherever an API key is accepted


async def test_signing_key_kept_in_the_database_unless_given(db: str) -> None:
    async with users_api(db) as api, client_from(api, "10.1.0.8") as client:
        access, _ = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        stored = query(db, "SELECT name, length(value) FROM core.secrets")
        assert stored == [("jwt_signing_key", 64)]
    # another instance on the same database (a restart, a replica) accepts the token
    pool = Pool(db, size=1)
    again = Core.build(core_settings(db, auth=auth_settings()), pool)
    assert again.sessions is not None
    assert (await again.auth.principal(access)).user == ADMIN_USER
    # one with its own key from the settings does not, and stores nothing
    given = Core.build(core_settings(db, auth=auth_settings(jwt_secret="s" * 40)), pool)
    with pytest.raises(Exception, match="signature does not match"):
        await given.auth.principal(access)
    await pool.close()
    assert query(db, "SELECT count(*) FROM core.secrets") == [(1,)]


async def test_expired_tokens_and_ended_sessions_are_purged(api: Api) -> None:
    async with client_from(api, "10.1.0.9") as client:
        _, old = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        r = await refresh(client, old)
        assert r.status_code == 200
        _, kept = await login(client, ADMIN_USER, ADMIN_PASSWORD)
        # the first session: both of its tokens expired two days ago, and it is older than that
        sid = query(api.dsn, "SELECT session_id FROM core.refresh_tokens WHERE token_hash = %s", (digest(old),))[0][0]
        query(api.dsn, "UPDATE core.refresh_tokens SET expires_at = now() - interval '2 days' WHERE session_id = %s"
                       " RETURNING 1", (sid,))
        query(api.dsn, "UPDATE core.sessions SET created_at = now() - interval '9 days' WHERE id = %s RETURNING 1",
              (sid,))
        assert api.core.sessions is not None
        assert await api.core.sessions.store.purge() == (2, 1)
        assert query(api.dsn, "SELECT count(*) FROM core.sessions") == [(1,)]
        assert (await refresh(client, kept)).status_code == 200
        assert (await refresh(client, old)).json()["detail"] == "unknown refresh token: log in"
