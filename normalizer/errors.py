"""Errors of the normalizer."""


class NormalizerError(Exception):
    """Base error of the normalizer."""


class RuleError(NormalizerError, ValueError):
    """A tag's rules are invalid; ``key`` names the offending key (``scale``, ``alarms.high``, ...)."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class ValueRefused(NormalizerError, ValueError):
    """An engineering value a tag cannot take (outside its range, not a number)."""
