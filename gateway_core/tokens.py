"""Access tokens (JWT, HS256, RFC 7519) and refresh tokens.

The JWT is written here with ``hmac`` rather than by a library: one algorithm, one key, fixed claims.
Decoding accepts exactly the header this module writes (``alg`` HS256), so no ``none`` or key-confusion
tricks apply; the signature is checked before the payload is parsed, and ``exp`` always.

Refresh tokens are 32 random bytes (``nxr_`` + base64url); the store keeps their sha256 digest only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

import orjson

ISSUER = "nexus-core"
_HEADER = base64.urlsafe_b64encode(orjson.dumps({"alg": "HS256", "typ": "JWT"})).rstrip(b"=")
MAX_TOKEN_LENGTH = 4096  #: longer bearer credentials are refused before any work
REFRESH_PREFIX = "nxr_"


class TokenError(Exception):
    """A bearer token that is not a valid access token of ours; the message says why (no token text)."""


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def looks_like_jwt(token: str) -> bool:
    """A compact JWS with our header: told apart from an API key before any lookup."""
    return token.startswith(_HEADER.decode()) and token.count(".") == 2


def encode(claims: dict[str, Any], key: bytes) -> str:
    signing_input = _HEADER + b"." + _b64(orjson.dumps(claims))
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode()


def decode(token: str, key: bytes, *, now: float) -> dict[str, Any]:
    """The claims of a valid, unexpired access token; :class:`TokenError` otherwise."""
    if len(token) > MAX_TOKEN_LENGTH or not looks_like_jwt(token):
        raise TokenError("not an access token")
    head, body, sig = token.split(".")
    try:
        signature = _unb64(sig)
    except ValueError as exc:
        raise TokenError("malformed access token") from exc
    expected = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise TokenError("access token signature does not match")
    try:
        claims = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise TokenError("malformed access token") from exc
    if not isinstance(claims, dict) or claims.get("iss") != ISSUER or claims.get("typ") != "access":
        raise TokenError("not an access token of this service")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenError("access token without expiry")
    if now >= exp:
        raise TokenError("access token expired")
    return claims


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_signing_key() -> str:
    return secrets.token_urlsafe(48)
