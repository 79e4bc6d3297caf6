"""API keys, users' access tokens and roles.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are stored as sha256
digests; the bootstrap admin key comes from the settings (``NEXUS_CORE_ADMIN_KEY``) and is never
stored. A user's access token (a JWT from ``POST /api/v1/auth/login``, :mod:`gateway_core.sessions`) is
accepted as ``Authorization: Bearer <jwt>`` wherever a key is; its role is the user's current one.
Roles are ordered, each includes the rights of those below it:

- ``viewer``: read everything except API keys;
- ``operator``: + write values to tags marked ``writable``;
- ``engineer``: + create, change and delete devices and tags, import, rollback;
- ``admin``: + manage API keys and users.

401: no key or an unknown key; 403: a role without the right. Either way nothing is changed, and
no key ever reaches a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from gateway_core.errors import ApiError
from gateway_core.store import Store
from gateway_core.tokens import looks_like_jwt

if TYPE_CHECKING:
    from gateway_core.sessions import Sessions

ROLES = ("viewer", "operator", "engineer", "admin")
BOOTSTRAP_NAME = "bootstrap-admin"
KEY_PREFIX = "nxk_"

_bearer = HTTPBearer(auto_error=False, description="API key, or a user's access token, as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  #: the "who" of audit rows: an API key's name, or ``user:<name>`` for a user
    role: str
    user: str | None = None  #: the user's name when authenticated by an access token
    session: int | None = None  #: the user's session (core.sessions.id)
    expires: float | None = None  #: Unix time the access token expires (None: an API key)

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def describe(self) -> str:
        return f"user {self.user!r}" if self.user is not None else f"key {self.name!r}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class Auth:
    def __init__(self, store: Store, admin_key: str | None, sessions: Sessions | None = None) -> None:
        self.store = store
        self.sessions = sessions
        self._admin_hash = hash_key(admin_key) if admin_key else None

    async def principal(self, key: str | None) -> Principal:
        if not key:
            raise ApiError(
                401,
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                field="Authorization",
            )
        if self.sessions is not None and looks_like_jwt(key):
            return await self.sessions.principal(key)
        digest = hash_key(key)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return Principal(BOOTSTRAP_NAME, "admin")
        found = await self.store.key_by_hash(digest)
        if found is None:
            raise ApiError(401, "unknown API key", field="Authorization")
        return Principal(*found)


def require(role: str) -> Callable[..., Awaitable[Principal]]:
    """FastAPI dependency: the caller's principal, which must hold at least ``role``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    async def dependency(
        request: Request,
        *,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_header)],
    ) -> Principal:
        key = api_key or (bearer.credentials if bearer is not None else None)
        principal: Principal = await request.app.state.core.auth.principal(key)
        if not principal.can(role):
            raise ApiError(
                403,
                f"role {principal.role!r} of {principal.describe()} may not do this (needs {role} or above)",
                field="Authorization",
            )
        return principal

    return dependency


#: connection keys that hold secrets (OPC UA and MQTT source passwords): shown only to engineers and admins,
#: who edit devices and must be able to send a whole device back
SECRET_KEYS = frozenset({"password"})
REDACTED = "********"


def redact(doc: Any) -> Any:
    """``doc`` with the value of every secret key replaced (a copy; the input is not changed)."""
    if isinstance(doc, dict):
        return {k: REDACTED if k in SECRET_KEYS and v is not None else redact(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [redact(v) for v in doc]
    return doc


def shown(who: Principal, doc: Any) -> Any:
    """What ``who`` may see of a device document (or anything holding them, e.g. audit rows)."""
    return doc if who.can("engineer") else redact(doc)
