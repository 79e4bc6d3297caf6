"""gateway_core API keys and roles: 401 without or with a bad key, 403 for a role without the right,
nothing changed in either case; keys stored as sha256 digests and never logged."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest

from tests.support.core import ADMIN_KEY, Api, device_doc
from tests.support.db import query

ROLES = ("viewer", "operator", "engineer", "admin")


async def make_keys(api: Api) -> dict[str, str]:
    keys = {}
    for role in ROLES:
        r = await api.client.post("/api/v1/keys", json={"name": f"{role}-key", "role": role})
        assert r.status_code == 201, r.text
        assert r.json()["role"] == role and r.json()["key"].startswith("nxk_")
        keys[role] = r.json()["key"]
    return keys


def state(api: Api) -> tuple[Any, ...]:
    return (
        query(api.dsn, "SELECT revision FROM core.state")[0],
        query(api.dsn, "SELECT count(*) FROM core.audit")[0],
        query(api.dsn, "SELECT id, doc FROM core.devices ORDER BY id"),
        query(api.dsn, "SELECT name, role FROM core.api_keys ORDER BY name"),
    )


# (method, url, body, lowest role allowed)
REQUESTS: list[tuple[str, str, Any, str]] = [
    ("GET", "/api/v1/devices", None, "viewer"),
    ("GET", "/api/v1/devices/press-1", None, "viewer"),
    ("GET", "/api/v1/devices/press-1/tags/temp", None, "viewer"),
    ("GET", "/api/v1/export", None, "viewer"),
    ("GET", "/api/v1/revisions", None, "viewer"),
    ("GET", "/api/v1/audit", None, "viewer"),
    ("GET", "/api/v1/gateways", None, "viewer"),
    ("POST", "/api/v1/devices/press-1/tags/setpoint/write", {"value": 5}, "operator"),
    ("POST", "/api/v1/devices", device_doc("new-1"), "engineer"),
    ("PUT", "/api/v1/devices/press-1", device_doc(interval_ms=50), "engineer"),
    ("PUT", "/api/v1/devices/press-1/tags/temp", {"address": 2}, "engineer"),
    ("DELETE", "/api/v1/devices/press-1/tags/setpoint", None, "engineer"),
    ("DELETE", "/api/v1/devices/press-1", None, "engineer"),
    ("POST", "/api/v1/import?mode=merge", {"devices": [device_doc("new-2")]}, "engineer"),
    ("POST", "/api/v1/revisions/0/rollback", None, "engineer"),
    ("GET", "/api/v1/keys", None, "admin"),
    ("POST", "/api/v1/keys", {"name": "another", "role": "viewer"}, "admin"),
    ("DELETE", "/api/v1/keys/viewer-key", None, "admin"),
]


@pytest.mark.parametrize(
    ("method", "url", "body", "lowest"), REQUESTS, ids=[f"{m} {u}" for m, u, _, _ in REQUESTS]
)
async def test_roles(api: Api, method: str, url: str, body: Any, lowest: str) -> None:
    keys = await make_keys(api)
    r = await api.client.post("/api/v1/devices", json=device_doc())
    assert r.status_code == 201
    before = state(api)
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer nxk_wrong"},
        {"X-API-Key": "nope"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        r = await api.client.request(method, url, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer" and r.json()["field"] == "Authorization"
    for role in ROLES[: ROLES.index(lowest)]:
        r = await api.client.request(
            method, url, json=body, headers={"Authorization": f"Bearer {keys[role]}"}
        )
        assert r.status_code == 403, (role, r.text)
        assert f"role {role!r}" in r.json()["detail"] and f"needs {lowest} or above" in r.json()["detail"]
    assert state(api) == before  # nothing changed by refused requests
    role = lowest
    r = await api.client.request(
        method, url, json=body, headers={"X-API-Key": keys[role], "Authorization": ""}
    )
    if url.endswith("/write"):
        assert (
            r.status_code == 503 and "no gateway polls" in r.json()["detail"]
        )  # allowed; nobody polls it here
    else:
        assert r.status_code in (200, 201, 204), r.text


async def test_audit_names_the_key_and_keys_are_hashed(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = await make_keys(api)
    r = await api.client.post(
        "/api/v1/devices", json=device_doc(), headers={"Authorization": f"Bearer {keys['engineer']}"}
    )
    assert r.status_code == 201
    assert query(api.dsn, "SELECT actor, action FROM core.audit WHERE target = 'device:press-1'") == [
        ("engineer-key", "device.create")
    ]
    assert query(
        api.dsn, "SELECT actor, action, target FROM core.audit WHERE target LIKE 'key:%' ORDER BY id"
    )[0] == ("bootstrap-admin", "key.create", "key:viewer-key")
    rows = query(api.dsn, "SELECT name, key_hash FROM core.api_keys ORDER BY name")
    assert dict(rows) == {
        f"{role}-key": hashlib.sha256(keys[role].encode()).hexdigest() for role in ROLES
    }
    dump = str(query(api.dsn, "SELECT * FROM core.api_keys")) + str(
        query(api.dsn, "SELECT * FROM core.audit")
    )
    for key in (*keys.values(), ADMIN_KEY):
        assert key not in dump
        assert key not in caplog.text
    r = await api.client.get("/api/v1/keys")
    assert [k["name"] for k in r.json()] == [f"{role}-key" for role in sorted(ROLES)]
    assert all("key" not in k and "key_hash" not in k for k in r.json())

    # a revoked key is unknown at once; a duplicate name is 409; a bad role names the field
    r = await api.client.delete("/api/v1/keys/engineer-key")
    assert r.status_code == 204
    r = await api.client.get("/api/v1/devices", headers={"Authorization": f"Bearer {keys['engineer']}"})
    assert r.status_code == 401
    r = await api.client.post("/api/v1/keys", json={"name": "viewer-key", "role": "viewer"})
    assert r.status_code == 409 and r.json()["field"] == "name"
    r = await api.client.post("/api/v1/keys", json={"name": "x", "role": "root"})
    assert r.status_code == 422 and r.json()["field"] == "role"
    r = await api.client.delete("/api/v1/keys/nope")
    assert r.status_code == 404


async def test_operator_writes_only_writable_tags(api: Api) -> None:
    keys = await make_keys(api)
    await api.client.post("/api/v1/devices", json=device_doc())
    op = {"Authorization": f"Bearer {keys['operator']}"}
    r = await api.client.post("/api/v1/devices/press-1/tags/temp/write", json={"value": 1.5}, headers=op)
    assert r.status_code == 403 and r.json()["detail"] == "tag press-1/temp is not writable"
    r = await api.client.post(
        "/api/v1/devices/press-1/tags/setpoint/write", json={"value": 70000}, headers=op
    )
    assert r.status_code == 422 and "outside the int16 range" in r.json()["detail"]
    r = await api.client.post("/api/v1/devices/press-1/tags/nope/write", json={"value": 1}, headers=op)
    assert r.status_code == 404


async def test_device_passwords_are_shown_only_to_engineers_and_admins(api: Api) -> None:
    keys = await make_keys(api)
    mqtt = {"id": "src-1", "enterprise": "acme", "site": "berlin", "area": "a", "line": "l", "protocol": "mqtt",
            "host": "127.0.0.1", "username": "collector", "password": "s3cret-pw",
            "tags": [{"name": "t", "topic": "x/y"}]}
    assert (await api.client.post("/api/v1/devices", json=mqtt)).status_code == 201
    for role in ROLES:
        h = {"Authorization": f"Bearer {keys[role]}"}
        texts = [(await api.client.get(url, headers=h)).text
                 for url in ("/api/v1/devices/src-1", "/api/v1/devices", "/api/v1/export", "/api/v1/audit")]
        if role in ("viewer", "operator"):
            assert all("s3cret-pw" not in t and "********" in t for t in texts), role
        else:
            assert all("s3cret-pw" in t for t in texts), role
    # an engineer's whole-device round trip keeps the real password
    h = {"Authorization": f"Bearer {keys['engineer']}"}
    doc = (await api.client.get("/api/v1/devices/src-1", headers=h)).json()["device"]
    assert doc["password"] == "s3cret-pw"
