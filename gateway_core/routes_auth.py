"""Users and sessions: login, refresh, logout, a user's own password; the admins' user management.

``POST /auth/login`` answers an access token in the body and sets the refresh token as a cookie
(``nexus_refresh``: HttpOnly, SameSite=Strict, Path=/api/v1/auth, Secure over HTTPS), so page scripts never
hold it and other sites cannot send it. ``POST /auth/refresh`` rotates it; ``POST /auth/logout`` revokes the
session. See :mod:`gateway_core.sessions` and docs/security.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Depends, Path, Request
from fastapi.responses import JSONResponse, Response

from gateway_core.auth import Principal, require
from gateway_core.deps import core
from gateway_core.errors import ApiError
from gateway_core.models import (
    ErrorOut,
    LoginIn,
    MeOut,
    PasswordChangeIn,
    PasswordIn,
    TokenOut,
    UserIn,
    UserOut,
    UserPatch,
)
from gateway_core.sessions import Issued, Sessions
from gateway_core.settings import USER_NAME

router = APIRouter()

COOKIE = "nexus_refresh"
COOKIE_PATH = "/api/v1/auth"
LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorOut, "description": "Too many failed logins (Retry-After says how long)"}
}
RefreshCookie = Annotated[
    str | None, Cookie(alias=COOKIE, description="the refresh token, as set by login or refresh")
]


def sessions(request: Request) -> Sessions:
    s = core(request).sessions
    assert s is not None
    return s


def address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _secure(request: Request) -> bool:
    setting = core(request).settings.auth.cookie_secure
    return request.url.scheme == "https" if setting is None else setting


def _tokens(request: Request, issued: Issued) -> JSONResponse:
    response = JSONResponse({
        "access_token": issued.access_token, "token_type": "bearer", "expires_in": issued.expires_in,
        "user": {"name": issued.user, "role": issued.role},
    }, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE, issued.refresh_token, max_age=int(core(request).settings.auth.refresh_ttl), path=COOKIE_PATH,
        httponly=True, samesite="strict", secure=_secure(request),
    )
    return response


def user_name(name: str) -> str:
    """A path parameter naming a user: one that cannot be a login name cannot exist."""
    folded = name.lower()
    if not USER_NAME.fullmatch(folded):
        raise ApiError(404, f"user {name[:64]!r} not found", field="name")
    return folded


def check_password(request: Request, password: str, name: str, field: str) -> None:
    least = core(request).settings.auth.password_min_length
    if len(password) < least:
        raise ApiError(422, f"{field}: must be at least {least} characters", field=field)
    if password.lower() == name.lower():
        raise ApiError(422, f"{field}: must not be the user name", field=field)


# -- sessions --------------------------------------------------------------------------------------
@router.post("/auth/login", tags=["auth"], response_model=TokenOut, responses=LIMITED,
             summary="Log in: an access token, and the refresh token as an HTTP-only cookie")
async def login(request: Request, *, body: LoginIn) -> JSONResponse:
    return _tokens(request, await sessions(request).login(body.name, body.password, address(request)))


@router.post("/auth/refresh", tags=["auth"], response_model=TokenOut,
             summary="A new access token for the refresh cookie, which is replaced (rotated)")
async def refresh(request: Request, *, refresh_token: RefreshCookie = None) -> JSONResponse:
    return _tokens(request, await sessions(request).refresh(refresh_token, address(request)))


@router.post("/auth/logout", tags=["auth"], status_code=204,
             summary="End the session of the refresh cookie (or of the access token); clears the cookie")
async def logout(request: Request, *, refresh_token: RefreshCookie = None) -> Response:
    who = None
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        try:
            who = await core(request).auth.principal(header[7:].strip())
        except ApiError:
            who = None  # an expired access token does not stop a logout
    await sessions(request).logout(refresh_token, who)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request))
    return response


@router.get("/auth/me", tags=["auth"], response_model=MeOut, summary="Who the credentials are")
async def me(request: Request, *, who: Annotated[Principal, Depends(require("viewer"))]) -> dict[str, Any]:
    return {"name": who.name, "role": who.role, "kind": "user" if who.user else "key", "user": who.user,
            "session": who.session}


@router.put("/auth/password", tags=["auth"], status_code=204, responses=LIMITED,
            summary="Change your own password (a user's access token); your other sessions end")
async def change_password(
    request: Request, *, body: PasswordChangeIn, who: Annotated[Principal, Depends(require("viewer"))]
) -> Response:
    if who.user is None:
        raise ApiError(403, "only a logged-in user has a password (this is an API key)", field="Authorization")
    check_password(request, body.new_password, who.user, "new_password")
    s = sessions(request)
    await s.check_password(who, body.current_password, address(request))
    await s.store.set_password(who.user, await s.passwords.hash(body.new_password), actor=who.name,
                               action="user.password", keep_session=who.session)
    return Response(status_code=204)


# -- users (admins) --------------------------------------------------------------------------------
@router.get("/users", tags=["users"], response_model=list[UserOut], summary="Users")
async def list_users(
    request: Request, *, _: Annotated[Principal, Depends(require("admin"))]
) -> list[dict[str, Any]]:
    return await sessions(request).store.users()


@router.post("/users", tags=["users"], status_code=201, response_model=UserOut, summary="Create a user")
async def create_user(
    request: Request, *, body: UserIn, who: Annotated[Principal, Depends(require("admin"))]
) -> JSONResponse:
    name = body.name.lower()
    check_password(request, body.password, name, "password")
    s = sessions(request)
    await s.store.create_user(name, body.role, await s.passwords.hash(body.password), actor=who.name)
    row = await s.store.user(name)
    assert row is not None
    return JSONResponse(UserOut(**row).model_dump(mode="json"), status_code=201,
                        headers={"Location": f"{request.url.path}/{name}"})


@router.get("/users/{name}", tags=["users"], response_model=UserOut, summary="One user")
async def get_user(
    request: Request, *, name: Annotated[str, Path()], _: Annotated[Principal, Depends(require("admin"))]
) -> dict[str, Any]:
    row = await sessions(request).store.user(user_name(name))
    if row is None:
        raise ApiError(404, f"user {name[:64]!r} not found", field="name")
    return row


@router.patch("/users/{name}", tags=["users"], response_model=UserOut,
              summary="Change a user's role or disable/enable them (disabling ends their sessions)")
async def update_user(
    request: Request, *, name: Annotated[str, Path()], body: UserPatch,
    who: Annotated[Principal, Depends(require("admin"))],
) -> dict[str, Any]:
    folded = user_name(name)
    if folded == who.user and (body.disabled or (body.role is not None and body.role != "admin")):
        raise ApiError(409, "an admin cannot disable or demote themselves (another admin can)", field="name")
    return await sessions(request).store.update_user(folded, role=body.role, disabled=body.disabled,
                                                     actor=who.name)


@router.put("/users/{name}/password", tags=["users"], status_code=204,
            summary="Set a user's password (reset); their sessions end")
async def reset_password(
    request: Request, *, name: Annotated[str, Path()], body: PasswordIn,
    who: Annotated[Principal, Depends(require("admin"))],
) -> Response:
    folded = user_name(name)
    check_password(request, body.password, folded, "password")
    s = sessions(request)
    await s.store.set_password(folded, await s.passwords.hash(body.password), actor=who.name,
                               action="user.reset", keep_session=who.session if folded == who.user else None)
    return Response(status_code=204)
