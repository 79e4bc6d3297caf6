"""Errors of the configuration service."""

from __future__ import annotations


class CoreError(Exception):
    """Base error of gateway_core."""


class TemporaryError(CoreError):
    """Retried with capped backoff (database or broker unreachable)."""


class PermanentError(CoreError):
    """Reported, not retried (bad schema, bad settings)."""


class ApiError(CoreError):
    """A request the API refuses: ``status`` is the HTTP status, ``field`` names the bad input."""

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers  #: extra response headers, e.g. Retry-After of a 429
