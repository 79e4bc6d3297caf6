"""Errors of the normalizer."""


class NormalizerError(Exception):
    """Base error of the normalizer."""


class ValueRefused(NormalizerError, ValueError):
    """An engineering value a tag cannot take (outside its range, not a number)."""
