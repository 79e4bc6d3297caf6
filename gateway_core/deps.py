"""Small helpers shared by the route modules: the service context, ETags, path parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Query, Request

from gateway_core.errors import ApiError
from gateway_core.store import Precondition
from proto.errors import TopicError
from proto.uns import validate_level

if TYPE_CHECKING:
    from gateway_core.api import Core


#: one UNS level, as JSON Schema sees it: no '/', '+', '#', control characters, no leading '$' or
#: surrounding whitespace (proto.uns.validate_level also limits it to 128 bytes)
LEVEL_PATTERN = r"^[^\s/+#$\x00-\x1f\x7f-\x9f](?:[^/+#\x00-\x1f\x7f-\x9f]*[^\s/+#\x00-\x1f\x7f-\x9f])?$"


#: a query parameter holding one UNS level (a filter)
LevelFilter = Annotated[str | None, Query(pattern=LEVEL_PATTERN, description="one UNS level (exact match)")]


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
