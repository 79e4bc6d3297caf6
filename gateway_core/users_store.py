"""Users, sessions and refresh tokens on PostgreSQL (schema ``core``, migration 003): all their SQL.

Every change writes its ``core.audit`` row in the same transaction (revision NULL: users are not
configuration). Refresh tokens are stored as sha256 digests; passwords as argon2 hashes; neither ever goes
into an audit row. Expiry is decided by the database's clock (``now()``), like the rows' times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway_core.errors import ApiError
from gateway_core.store import Pool

_USER_COLUMNS = "name, role, disabled, created_at, created_by, password_changed_at"


@dataclass(frozen=True, slots=True)
class Login:
    """What a login needs of a user row."""

    name: str
    role: str
    password_hash: str
    disabled: bool


@dataclass(frozen=True, slots=True)
class Rotated:
    """The answer to a refresh: ``status`` ok (then the session's user and role) or why not."""

    status: Literal["ok", "unknown", "expired", "revoked", "reuse", "disabled"]
    session_id: int | None = None
    user: str | None = None
    role: str | None = None


async def _audit(conn: psycopg.AsyncConnection[Any], actor: str, action: str, target: str,
                 before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> None:
    await conn.execute(
        "INSERT INTO core.audit (actor, action, target, before, after) VALUES (%s, %s, %s, %s, %s)",
        (actor, action, target, Jsonb(before) if before is not None else None,
         Jsonb(after) if after is not None else None),
    )


async def _revoke_all(conn: psycopg.AsyncConnection[Any], user: str, why: str, keep: int | None = None) -> int:
    cur = await conn.execute(
        "UPDATE core.sessions SET revoked_at = now(), revoked_why = %s"
        " WHERE user_name = %s AND revoked_at IS NULL AND id IS DISTINCT FROM %s",
        (why, user, keep),
    )
    return cur.rowcount


class UserStore:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    # -- the signing key ---------------------------------------------------------------------------
    async def secret(self, name: str, candidate: str) -> str:
        """The stored secret ``name``; ``candidate`` becomes it when there is none yet (first replica wins)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO core.secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                (name, candidate),
            )
            row = await (await conn.execute("SELECT value FROM core.secrets WHERE name = %s", (name,))).fetchone()
        assert row is not None
        return str(row[0])

    # -- users -------------------------------------------------------------------------------------
    async def login_row(self, name: str) -> Login | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT name, role, password_hash, disabled FROM core.users WHERE name = %s", (name,)
                )
            ).fetchone()
        return Login(*row) if row else None

    async def user(self, name: str) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            return await (
                await cur.execute(f"SELECT {_USER_COLUMNS} FROM core.users WHERE name = %s", (name,))
            ).fetchone()

    async def users(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            return await (await cur.execute(f"SELECT {_USER_COLUMNS} FROM core.users ORDER BY name")).fetchall()

    async def create_user(self, name: str, role: str, password_hash: str, *, actor: str,
                          action: str = "user.create") -> bool:
        """Create a user; False (nothing done) when ``action`` is user.bootstrap and it exists, else 409."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO core.users (name, role, password_hash, created_by) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (name, role, password_hash, actor),
            )
            if cur.rowcount == 0:
                if action == "user.bootstrap":
                    return False
                raise ApiError(409, f"user {name!r} already exists", field="name")
            await _audit(conn, actor, action, f"user:{name}", after={"name": name, "role": role})
            return True

    async def update_user(self, name: str, *, role: str | None, disabled: bool | None,
                          actor: str) -> dict[str, Any]:
        """Change a user's role and/or disabled flag; disabling revokes every session of the user."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute("SELECT role, disabled FROM core.users WHERE name = %s FOR UPDATE", (name,))
            ).fetchone()
            if row is None:
                raise ApiError(404, f"user {name!r} not found", field="name")
            before = {"role": row[0], "disabled": row[1]}
            after = {"role": role if role is not None else row[0],
                     "disabled": disabled if disabled is not None else row[1]}
            if after != before:
                await conn.execute("UPDATE core.users SET role = %s, disabled = %s WHERE name = %s",
                                   (after["role"], after["disabled"], name))
                if after["disabled"]:
                    await _revoke_all(conn, name, "disabled")
                await _audit(conn, actor, "user.update", f"user:{name}", before, after)
            cur = conn.cursor(row_factory=dict_row)
            out = await (
                await cur.execute(f"SELECT {_USER_COLUMNS} FROM core.users WHERE name = %s", (name,))
            ).fetchone()
        assert out is not None
        return out

    async def set_password(self, name: str, password_hash: str, *, actor: str, action: str,
                           keep_session: int | None = None) -> None:
        """A new password (reset by an admin, or the user's own change): every other session is revoked."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE core.users SET password_hash = %s, password_changed_at = now() WHERE name = %s",
                (password_hash, name),
            )
            if cur.rowcount == 0:
                raise ApiError(404, f"user {name!r} not found", field="name")
            revoked = await _revoke_all(conn, name, "password", keep_session)
            await _audit(conn, actor, action, f"user:{name}", after={"sessions_revoked": revoked})

    async def rehash(self, name: str, old_hash: str, new_hash: str) -> None:
        """Store a hash of the same password with the current parameters (not an audited change)."""
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE core.users SET password_hash = %s WHERE name = %s AND password_hash = %s",
                               (new_hash, name, old_hash))

    # -- sessions ----------------------------------------------------------------------------------
    async def open_session(self, user: str, address: str, token_hash: str, ttl: float) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "INSERT INTO core.sessions (user_name, address) VALUES (%s, %s) RETURNING id", (user, address)
                )
            ).fetchone()
            assert row is not None
            await conn.execute(
                "INSERT INTO core.refresh_tokens (token_hash, session_id, expires_at)"
                " VALUES (%s, %s, now() + make_interval(secs => %s))",
                (token_hash, row[0], ttl),
            )
            await _audit(conn, f"user:{user}", "login", f"user:{user}", after={"address": address, "session": row[0]})
            return int(row[0])

    async def rotate(self, token_hash: str, new_hash: str, ttl: float, address: str) -> Rotated:
        """Exchange a refresh token for a new one of the same session. A token used before revokes the
        session (reuse: someone holds a copy)."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "SELECT t.session_id, t.used_at IS NOT NULL, t.expires_at <= now(), s.revoked_at IS NOT NULL,"
                    " u.name, u.role, u.disabled FROM core.refresh_tokens t"
                    " JOIN core.sessions s ON s.id = t.session_id JOIN core.users u ON u.name = s.user_name"
                    " WHERE t.token_hash = %s FOR UPDATE OF t, s",
                    (token_hash,),
                )
            ).fetchone()
            if row is None:
                return Rotated("unknown")
            sid, used, expired, revoked, user, role, disabled = row
            if revoked:
                return Rotated("revoked", sid, user)
            if used:
                await conn.execute(
                    "UPDATE core.sessions SET revoked_at = now(), revoked_why = 'reuse' WHERE id = %s", (sid,)
                )
                await _audit(conn, "system", "session.reuse", f"user:{user}",
                             after={"session": sid, "address": address})
                return Rotated("reuse", sid, user)
            if expired:
                return Rotated("expired", sid, user)
            if disabled:
                return Rotated("disabled", sid, user)
            await conn.execute("UPDATE core.refresh_tokens SET used_at = now() WHERE token_hash = %s", (token_hash,))
            await conn.execute(
                "INSERT INTO core.refresh_tokens (token_hash, session_id, expires_at)"
                " VALUES (%s, %s, now() + make_interval(secs => %s))",
                (new_hash, sid, ttl),
            )
            return Rotated("ok", sid, user, role)

    async def session_of_token(self, token_hash: str) -> int | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT session_id FROM core.refresh_tokens WHERE token_hash = %s", (token_hash,))
            ).fetchone()
        return int(row[0]) if row else None

    async def revoke(self, session_id: int, *, why: str, actor: str | None = None) -> bool:
        """Revoke one session (audited as ``why``, by ``actor`` or else its own user)."""
        async with self.pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "UPDATE core.sessions SET revoked_at = now(), revoked_why = %s"
                    " WHERE id = %s AND revoked_at IS NULL RETURNING user_name",
                    (why, session_id),
                )
            ).fetchone()
            if row is None:
                return False
            await _audit(conn, actor or f"user:{row[0]}", why, f"user:{row[0]}", after={"session": session_id})
            return True

    async def active(self, session_id: int) -> tuple[str, str] | None:
        """(user, role) of a session that is neither revoked nor of a disabled user; None otherwise."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT u.name, u.role FROM core.sessions s JOIN core.users u ON u.name = s.user_name"
                    " WHERE s.id = %s AND s.revoked_at IS NULL AND NOT u.disabled",
                    (session_id,),
                )
            ).fetchone()
        return (row[0], row[1]) if row else None

    async def purge(self, *, keep_days: float = 1.0) -> tuple[int, int]:
        """Drop refresh tokens expired more than ``keep_days`` ago (until then one presented again is still
        told apart as expired), then sessions left without a token; returns how many of each."""
        async with self.pool.connection() as conn, conn.transaction():
            tokens = await conn.execute(
                "DELETE FROM core.refresh_tokens WHERE expires_at < now() - %s * interval '1 day'", (keep_days,)
            )
            sessions = await conn.execute(
                "DELETE FROM core.sessions s WHERE created_at < now() - %s * interval '1 day'"
                " AND NOT EXISTS (SELECT 1 FROM core.refresh_tokens t WHERE t.session_id = s.id)",
                (keep_days,),
            )
            return tokens.rowcount, sessions.rowcount

    async def audit(self, actor: str, action: str, target: str, after: dict[str, Any]) -> None:
        async with self.pool.connection() as conn:
            await _audit(conn, actor, action, target, after=after)

