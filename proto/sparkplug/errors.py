"""Errors of the Sparkplug B contract: every one is a :class:`proto.errors.ContractError`."""

from __future__ import annotations

from proto.errors import PayloadError


class SparkplugError(PayloadError):
    """A Sparkplug B payload (or a value meant for one) breaks the specification or our bounds.

    Raised by decoding untrusted bytes (never a protobuf exception) and by encoding a value its
    datatype cannot carry.
    """


class UnknownMetricError(SparkplugError):
    """A metric arrived without a datatype, and no birth declared one for its alias or name.

    A host answers it with a rebirth request (NCMD ``Node Control/Rebirth``) instead of guessing.
    ``alias`` and ``name`` say which metric (either may be None).
    """

    def __init__(self, message: str, *, alias: int | None, name: str | None) -> None:
        super().__init__(message)
        self.alias = alias
        self.name = name
