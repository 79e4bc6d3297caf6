"""Users' logins and sessions: passwords checked, access tokens signed and checked, refresh tokens rotated.

A login opens a session (``core.sessions``) and answers a short-lived access token (JWT, HS256,
``auth.access_ttl``) and a refresh token (``auth.refresh_ttl``, for the HTTP-only cookie). Each refresh
exchanges the refresh token for a new one and a new access token; the old one is marked used, and if it
is ever presented again the session is revoked (someone has a copy). Access tokens name their session
and are checked against it on every request, so a logout, a disabled user or a changed role takes
effect at once, not at the token's expiry.

The signing key is ``auth.jwt_secret`` when set, else one generated at the first start and kept in
``core.secrets`` (shared by replicas, kept across restarts). Failed logins are limited per user name and
per client address (:mod:`gateway_core.ratelimit`) and audited. No password or token ever goes into a
log line or an audit row.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass

from gateway_core import metrics as m
from gateway_core import tokens
from gateway_core.auth import Principal
from gateway_core.errors import ApiError
from gateway_core.passwords import Passwords
from gateway_core.ratelimit import FailureLimiter
from gateway_core.settings import Settings
from gateway_core.users_store import UserStore

log = logging.getLogger("gateway_core.sessions")

SIGNING_KEY_NAME = "jwt_signing_key"
BAD_LOGIN = "wrong user name or password, or the user is disabled"
PURGE_INTERVAL = 3600.0  #: seconds between two purges of expired refresh tokens and ended sessions


@dataclass(frozen=True, slots=True)
class Issued:
    """What a login or refresh hands out."""

    access_token: str
    expires_in: int  #: seconds
    refresh_token: str
    user: str
    role: str


def _quoted(text: str) -> str:
    """A bounded, quoted prefix of untrusted text for a log line or an audit row."""
    return repr(text[:64])


class Sessions:
    def __init__(self, settings: Settings, store: UserStore) -> None:
        self.settings = settings
        self.auth = settings.auth
        self.store = store
        self.passwords = Passwords(settings.auth)
        a = settings.auth
        self.by_user = FailureLimiter(limit=a.login_max_failures, window=a.login_window, tracked=a.login_tracked)
        self.by_client = FailureLimiter(
            limit=a.login_max_failures_per_client, window=a.login_window, tracked=a.login_tracked
        )
        self._key: bytes | None = a.jwt_secret.encode() if a.jwt_secret else None
        self._purge_at = 0.0  #: monotonic time of the next purge of expired tokens (at a login)

    async def signing_key(self) -> bytes:
        if self._key is None:
            self._key = (await self.store.secret(SIGNING_KEY_NAME, tokens.new_signing_key())).encode()
        return self._key

    async def bootstrap(self) -> None:
        """The bootstrap admin user from the settings, when it does not exist yet (its password is a first one:
        a later change through the API stays)."""
        s = self.settings
        if s.admin_password is None:
            return
        created = await self.store.create_user(
            s.admin_user, "admin", await self.passwords.hash(s.admin_password), actor="system",
            action="user.bootstrap",
        )
        if created:
            log.info("bootstrap admin user %r created", s.admin_user)

    # -- tokens ------------------------------------------------------------------------------------
    async def _issue(self, user: str, role: str, session: int, refresh: str) -> Issued:
        now = time.time()
        ttl = math.ceil(self.auth.access_ttl)
        # whole seconds (NumericDate), rounded so that a token lives at least access_ttl
        claims = {"iss": tokens.ISSUER, "typ": "access", "sub": user, "role": role, "sid": session,
                  "iat": int(now), "exp": math.ceil(now + self.auth.access_ttl), "jti": secrets.token_urlsafe(9)}
        return Issued(tokens.encode(claims, await self.signing_key()), ttl, refresh, user, role)

    async def principal(self, token: str) -> Principal:
        """The user behind an access token: its signature and expiry, then its session and the user's state."""
        try:
            claims = tokens.decode(token, await self.signing_key(), now=time.time())
        except tokens.TokenError as exc:
            raise ApiError(401, str(exc), field="Authorization") from exc
        sid = claims.get("sid")
        found = await self.store.active(sid) if isinstance(sid, int) and not isinstance(sid, bool) else None
        if found is None:
            raise ApiError(401, "session ended (logged out, revoked or user disabled): log in again",
                           field="Authorization")
        user, role = found
        return Principal(f"user:{user}", role, user=user, session=sid, expires=float(claims["exp"]))

    # -- login -------------------------------------------------------------------------------------
    def _refuse_if_locked(self, name: str, address: str) -> None:
        wait = max(self.by_user.retry_after(name), self.by_client.retry_after(address))
        if wait > 0:
            m.LOGINS.labels("rate_limited").inc()
            raise ApiError(429, f"too many failed logins; try again in {math.ceil(wait)} s", field="name",
                           headers={"Retry-After": str(math.ceil(wait))})

    async def _failed(self, name: str, address: str, reason: str) -> None:
        m.LOGINS.labels(reason).inc()
        locked = [what for what, limiter, key in (("user", self.by_user, name), ("address", self.by_client, address))
                  if limiter.failed(key)]
        await self.store.audit("anonymous", "login.failed", f"user:{name[:64]}",
                               {"address": address, "reason": reason, "locked": locked})
        if locked:
            log.warning("failed logins: user %s from %s locked out for %g s (%s)", _quoted(name), address,
                        self.auth.login_window, " and ".join(locked))
        else:
            log.info("login refused: user %s from %s (%s)", _quoted(name), address, reason)

    async def login(self, name: str, password: str, address: str) -> Issued:
        name = name.strip().lower()
        self._refuse_if_locked(name, address)
        row = await self.store.login_row(name)
        ok = await self.passwords.verify(row.password_hash if row else None, password)
        if row is None or not ok or row.disabled:
            reason = "unknown_user" if row is None else "bad_password" if not ok else "disabled"
            await self._failed(name, address, reason)
            raise ApiError(401, BAD_LOGIN, field="name")
        self.by_user.reset(name)
        if self.passwords.needs_rehash(row.password_hash):
            await self.store.rehash(name, row.password_hash, await self.passwords.hash(password))
        refresh = tokens.new_refresh_token()
        sid = await self.store.open_session(name, address, tokens.digest(refresh), self.auth.refresh_ttl)
        if time.monotonic() >= self._purge_at:
            self._purge_at = time.monotonic() + PURGE_INTERVAL
            dropped = await self.store.purge()
            if any(dropped):
                log.info("dropped %s expired refresh tokens and %s ended sessions", *dropped)
        m.LOGINS.labels("ok").inc()
        log.info("login: user %r from %s (session %s)", name, address, sid)
        return await self._issue(name, row.role, sid, refresh)

    async def check_password(self, who: Principal, password: str, address: str) -> None:
        """A user's current password, before they change it: wrong ones count as failed logins."""
        assert who.user is not None
        self._refuse_if_locked(who.user, address)
        row = await self.store.login_row(who.user)
        if row is None or not await self.passwords.verify(row.password_hash, password):
            await self._failed(who.user, address, "bad_password")
            raise ApiError(403, "the current password is wrong", field="current_password")

    # -- refresh, logout ---------------------------------------------------------------------------
    async def refresh(self, token: str | None, address: str) -> Issued:
        if not token or len(token) > 256 or not token.startswith(tokens.REFRESH_PREFIX):
            m.REFRESHES.labels("unknown").inc()
            raise ApiError(401, "no refresh token: log in", field="nexus_refresh")
        new = tokens.new_refresh_token()
        r = await self.store.rotate(tokens.digest(token), tokens.digest(new), self.auth.refresh_ttl, address)
        m.REFRESHES.labels(r.status).inc()
        if r.status == "reuse":
            log.warning("refresh token used twice: session %s of user %r revoked (from %s)", r.session_id, r.user,
                        address)
        if r.status != "ok":
            why = {"unknown": "unknown refresh token", "expired": "refresh token expired",
                   "revoked": "session revoked", "reuse": "refresh token already used: session revoked",
                   "disabled": "user disabled"}[r.status]
            raise ApiError(401, f"{why}: log in", field="nexus_refresh")
        assert r.user is not None and r.role is not None and r.session_id is not None
        return await self._issue(r.user, r.role, r.session_id, new)

    async def logout(self, token: str | None, who: Principal | None) -> bool:
        """Revoke the session of the refresh token (or else of the access token); False: none was open."""
        sid = None
        if token and len(token) <= 256 and token.startswith(tokens.REFRESH_PREFIX):
            sid = await self.store.session_of_token(tokens.digest(token))
        if sid is None and who is not None:
            sid = who.session
        if sid is None:
            return False
        done = await self.store.revoke(sid, why="logout")
        if done:
            log.info("logout: session %s", sid)
        return done
