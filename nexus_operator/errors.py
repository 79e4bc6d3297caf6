"""Errors of the operator: a temporary one is retried by kopf with backoff, a permanent one becomes the
resource's Degraded condition and waits for a change (or the next drift check)."""

from __future__ import annotations


class OperatorError(Exception):
    """Base error of nexus_operator."""


class TemporaryError(OperatorError):
    """Retried with capped exponential backoff: gateway_core unreachable, 5xx, a lost If-Match race."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  #: the HTTP status, None for a connection error or timeout


class PermanentError(OperatorError):
    """Reported on the resource, not retried until something changes."""


class CoreRefused(PermanentError):
    """gateway_core answered 4xx: ``detail`` and ``field`` are its own message and the field it names."""

    def __init__(self, status: int, detail: str, *, field: str | None = None) -> None:
        super().__init__(f"gateway_core refused ({status}): {detail}")
        self.status = status
        self.detail = detail
        self.field = field


class SpecError(PermanentError):
    """The resource cannot become a device document (a UNS level missing, an unknown NexusPlant)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
