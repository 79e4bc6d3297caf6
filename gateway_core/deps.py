"""Small helpers shared by the route modules: the service context, ETags, path parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from gateway_core.errors import ApiError
from gateway_core.store import Precondition
from proto.errors import TopicError
from proto.uns import validate_level

if TYPE_CHECKING:
    from gateway_core.api import Core


def core(request: Request) -> Core:
    c: Core = request.app.state.core
    return c


def etag(revision: int) -> str:
    return f'"{revision}"'


def parse_if_match(value: str | None) -> Precondition:
    """``If-Match`` as a precondition: ``*``, or the revisions of its entity tags (``"12"``, ``W/"12"``)."""
    if value is None:
        return None
    if value.strip() == "*":
        return "*"
    revs = set()
    for part in value.split(","):
        tag = part.strip().removeprefix("W/").strip('"')
        if tag.isascii() and tag.isdigit() and len(tag) < 19:
            revs.add(int(tag))
    return frozenset(revs)  # nothing parseable: matches nothing (412)


def level_or_404(value: str, what: str) -> str:
    """A path parameter naming a device/tag/key: one that cannot be a UNS level cannot exist."""
    try:
        return validate_level(value, what=what)
    except TopicError as exc:
        raise ApiError(404, f"{what} {value[:64]!r} not found ({exc})", field=what.replace(" ", "_")) from exc


def level_or_422(value: str | None, what: str) -> str | None:
    """A filter value; refused with 422 when it cannot be a UNS level (NUL, '/', wildcards ...)."""
    if value is None:
        return None
    try:
        return validate_level(value, what=what)
    except TopicError as exc:
        raise ApiError(422, str(exc), field=what) from exc
