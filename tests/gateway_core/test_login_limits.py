"""gateway_core failed logins: limited per user name and per client address (429 with Retry-After, even for
the right password, until the window passes), in bounded memory, each failure audited; and no password or
token in any log line, also through the real service over HTTP."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import httpx
import pytest

from gateway_core import passwords
from gateway_core.passwords import Passwords
from gateway_core.settings import AuthSettings
from tests.gateway_core.users_support import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    FAST,
    bearer,
    client_from,
    login,
    make_user,
    refresh,
    users_api,
)
from tests.support.core import run_service
from tests.support.db import query
from tests.support.wait import until


def failures(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT actor, target, after->>'address', after->>'reason', after->'locked' FROM core.audit"
                      " WHERE action = 'login.failed' ORDER BY id")


async def test_failed_logins_per_user(db: str) -> None:
    async with users_api(db, login_max_failures=3, login_window=2.0) as api:
        password = await make_user(api, "max", "viewer")
        async with client_from(api, "10.3.0.1") as a, client_from(api, "10.3.0.2") as b:
            for i in range(3):
                r = await (a if i % 2 else b).post("/api/v1/auth/login", json={"name": "max", "password": "guess"})
                assert r.status_code == 401, r.text
            for client in (a, b):  # locked for the name, from everywhere, even with the right password
                r = await client.post("/api/v1/auth/login", json={"name": "MAX", "password": password})
                assert r.status_code == 429, r.text
                assert r.json()["detail"].startswith("too many failed logins; try again in ")
                assert 1 <= int(r.headers["Retry-After"]) <= 2
            # another user from the same addresses is not locked
            await login(a, ADMIN_USER, ADMIN_PASSWORD)

            async def unlocked() -> bool:
                r = await a.post("/api/v1/auth/login", json={"name": "max", "password": password})
                assert r.status_code in (200, 429)
                return r.status_code == 200

            await until(unlocked, 5, 0.2, what="the lock's end")
        assert failures(db) == [
            ("anonymous", "user:max", "10.3.0.2", "bad_password", []),
            ("anonymous", "user:max", "10.3.0.1", "bad_password", []),
            ("anonymous", "user:max", "10.3.0.2", "bad_password", ["user"]),
        ]  # refused while locked: counted in the metric, not audited again


async def test_failed_logins_per_address_and_bounded_memory(db: str) -> None:
    async with users_api(db, login_max_failures=3, login_max_failures_per_client=5, login_tracked=10) as api:
        sessions = api.core.sessions
        assert sessions is not None
        async with client_from(api, "10.3.1.1") as a, client_from(api, "10.3.1.2") as b:
            for i in range(5):  # unknown names, each once: the address gets locked
                r = await a.post("/api/v1/auth/login", json={"name": f"nobody-{i}", "password": "guess"})
                assert r.status_code == 401
                assert r.json()["detail"] == "wrong user name or password, or the user is disabled"
            r = await a.post("/api/v1/auth/login", json={"name": ADMIN_USER, "password": ADMIN_PASSWORD})
            assert r.status_code == 429
            await login(b, ADMIN_USER, ADMIN_PASSWORD)  # another address is not
            for i in range(40):
                r = await b.post("/api/v1/auth/login", json={"name": f"spray-{i}", "password": "guess"})
                assert r.status_code in (401, 429)
            assert len(sessions.by_user) <= 10 and len(sessions.by_client) <= 10
        rows = failures(db)
        assert [r[3] for r in rows[:5]] == ["unknown_user"] * 5 and rows[4][4] == ["address"]
        assert len(rows) == 5 + 5  # b locked itself after five more


async def test_no_password_or_token_in_the_logs(db: str, broker: Any, prefix: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = [ADMIN_PASSWORD, "wrong-password-42", "new-password-1234", "reset-password-5678"]
    auth = AuthSettings(**FAST, login_max_failures=2)
    async with run_service(db, broker, prefix, admin_user=ADMIN_USER, admin_password=ADMIN_PASSWORD,
                           auth=auth) as running:
        await running.core.load()  # the daemon already did at start; again: nothing new
        base = str(running.client.base_url)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            r = await client.post("/api/v1/auth/login", json={"name": ADMIN_USER, "password": secrets[1]})
            assert r.status_code == 401
            access, cookie = await login(client, ADMIN_USER, ADMIN_PASSWORD)
            secrets += [access, cookie]
            r = await client.post("/api/v1/users", headers=bearer(access),
                                  json={"name": "lu", "role": "viewer", "password": secrets[2]})
            assert r.status_code == 201
            lu_access, lu_cookie = await login(client, "lu", secrets[2])
            r = await refresh(client, lu_cookie)
            assert r.status_code == 200
            secrets += [lu_access, lu_cookie, r.json()["access_token"], r.cookies["nexus_refresh"]]
            assert (await refresh(client, lu_cookie)).status_code == 401  # reuse: logged as a warning
            r = await client.put("/api/v1/users/lu/password", headers=bearer(access), json={"password": secrets[3]})
            assert r.status_code == 204
            for _ in range(3):  # a lock-out, logged
                await client.post("/api/v1/auth/login", json={"name": "lu", "password": secrets[1]})
            r = await client.get("/api/v1/devices", headers=bearer(lu_access))
            assert r.status_code == 401
            client.cookies.clear()
            r = await client.post("/api/v1/auth/logout", headers={"Cookie": f"nexus_refresh={cookie}"})
            assert r.status_code == 204
            r = await client.get("/api/v1/devices", headers=bearer(access))
            assert r.status_code == 401
    # the service's records (ours, uvicorn's, psycopg's ...); the test's own HTTP client logs what it received
    text = "\n".join(f"{r.name} {r.getMessage()} {r.__dict__}" for r in caplog.records
                     if not r.name.startswith(("httpx", "httpcore")))
    assert any(r.name.startswith("uvicorn") for r in caplog.records)
    for expected in ("login: user 'root' from 127.0.0.1", "login refused: user 'root' from 127.0.0.1 (bad_password)",
                     "refresh token used twice", "user 'lu' from 127.0.0.1 locked out", "logout: session"):
        assert expected in text, expected
    for secret in secrets:
        assert secret not in text
    stored = str(query(db, "SELECT * FROM core.audit")) + str(query(db, "SELECT * FROM core.users"))
    stored += str(query(db, "SELECT * FROM core.refresh_tokens")) + str(query(db, "SELECT * FROM core.sessions"))
    for secret in secrets:
        assert secret not in stored


async def test_at_most_two_argon2_hashes_run_at_once() -> None:
    """Each argon2 computation holds its memory cost: concurrent logins queue for MAX_CONCURRENT slots."""
    pw = Passwords(AuthSettings(**FAST))
    running = peak = 0
    lock = threading.Lock()
    real = pw._hasher

    class Counted:
        def hash(self, password: str) -> str:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                return real.hash(password)
            finally:
                with lock:
                    running -= 1

    pw._hasher = Counted()  # type: ignore[assignment]
    hashes = await asyncio.gather(*(pw.hash(f"password-{i}") for i in range(6)))
    assert len(set(hashes)) == 6 and 1 <= peak <= passwords.MAX_CONCURRENT
