"""Errors of the ingestion worker."""


class IngestionError(Exception):
    """Base error of the ingestion package."""


class TemporaryError(IngestionError):
    """Retried with capped backoff (database or broker unreachable)."""


class PermanentError(IngestionError):
    """Reported, not retried (bad schema, bad settings)."""
