"""Errors of the ingestion worker."""


class IngestionError(Exception):
    """Base error of the ingestion package."""


class TemporaryError(IngestionError):
    """Retried with capped backoff (database or broker unreachable)."""


class PermanentError(IngestionError):
    """Reported, not retried (bad schema, bad settings)."""


class DbError(TemporaryError):
    """A database operation failed or took longer than ``db.query_timeout``; the text names the
    psycopg error (or TimeoutError) and quotes a bounded part of its message."""


class DbStopped(DbError):
    """The caller's ``stop`` was set before the operation finished: it was cancelled."""
