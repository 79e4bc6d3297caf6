"""Bounded descriptions of exceptions and untrusted text, for log lines and reasons.

An exception's message may quote a payload of megabytes, or a peer's text; these never put more than
a bounded prefix into a log line, a BAD point's reason or an error answer.
"""

from __future__ import annotations

import traceback

ERROR_TEXT_MAX = 200  #: characters of an exception's message quoted in reasons and log lines
TRACEBACK_FRAMES = 12  #: innermost frames of an unexpected exception's traceback that are logged


def bounded(text: str, limit: int = ERROR_TEXT_MAX) -> str:
    """``text`` cut at ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def describe(exc: BaseException, limit: int = ERROR_TEXT_MAX) -> str:
    """``Type: message``, the message cut at ``limit`` characters; an exception group is described by
    its first exception (a driver's TaskGroup wraps the one that matters)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the error report
        text = "(unprintable message)"
    text = bounded(text, limit)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def bounded_traceback(exc: BaseException) -> str:
    """The innermost frames of ``exc``'s traceback and its bounded description (and its cause's):
    never the whole message of an exception, which may carry megabytes."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    text = "".join(traceback.StackSummary.from_list(frames).format()) + describe(exc)
    cause = exc.__cause__ or exc.__context__
    return f"{text}\ncaused by {describe(cause)}" if cause is not None else text


def cause_of(exc: BaseException) -> tuple[str, str, int]:
    """What makes two unexpected exceptions the same cause: their type and where they were raised."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    tb = traceback.extract_tb(exc.__traceback__)
    where = tb[-1] if tb else None
    return type(exc).__qualname__, where.filename if where else "", (where.lineno or 0) if where else 0
