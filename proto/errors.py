"""Errors raised when bytes or names do not follow the wire contract."""


class ContractError(ValueError):
    """Base class: something does not follow the NEXUS wire contract."""


class TopicError(ContractError):
    """A UNS topic or one of its levels is invalid.

    ``topic`` holds the offending topic (or level) so callers can log it as a field.
    """

    def __init__(self, message: str, *, topic: str = "") -> None:
        super().__init__(message)
        self.topic = topic


class PayloadError(ContractError):
    """A payload cannot be decoded into data points."""
