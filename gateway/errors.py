"""Errors of the gateway package."""


class GatewayError(Exception):
    """Base error of the gateway; ``device_id`` names the device when there is one."""

    def __init__(self, message: str, *, device_id: str = "") -> None:
        super().__init__(message)
        self.device_id = device_id


class ConfigError(GatewayError):
    """The plant configuration is invalid; ``where`` is the path of the bad field."""

    def __init__(self, message: str, *, where: str, device_id: str = "") -> None:
        super().__init__(f"{where}: {message}", device_id=device_id)
        self.where = where


class TemporaryError(GatewayError):
    """A device is unreachable or timed out: retried with backoff, tags go BAD meanwhile."""


class PermanentError(GatewayError):
    """A request the device will never accept (bad address, bad type): reported, not retried."""


class WriteRefused(PermanentError):
    """A write command that is refused before it reaches the device (unknown or read-only tag, bad value)."""


class SpoolFull(GatewayError):
    """The spool holds its ``max_bytes``; the caller must wait (backpressure)."""


class SpoolLocked(GatewayError, OSError):
    """Another process holds the spool folder (the same gateway id started twice?)."""
