"""The one way a test waits on a condition: poll it with a deadline, never a fixed sleep before an
assertion.

``wait_for`` is for plain tests (daemons in subprocesses, a database, a broker): it blocks between polls.
``until`` is its counterpart in async tests: it sleeps on the event loop, so the tasks under test run
between polls, and its predicate may also be a coroutine function (one that reads a driver or takes a
batch from a queue); the deadline bounds those awaits too.

Both return the predicate's first truthy value. On timeout they raise ``AssertionError`` naming ``what``
and the predicate's last value (unless it was a plain False or None); ``what`` may be a callable, called
only then, for context gathered while waiting (what was seen so far).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

What = str | Callable[[], str]


def _timed_out(timeout: float, what: What, last: Any) -> AssertionError:
    text = what() if callable(what) else what
    # a last False or None (a plain yes/no predicate) says nothing the timeout does not
    seen = "" if last is None or last is False else f" (last: {last!r})"
    return AssertionError(f"timed out after {timeout}s waiting for {text}{seen}")


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: What = "condition") -> Any:
    """Call ``predicate()`` every ``interval`` seconds until it returns a truthy value, for at most
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise _timed_out(timeout, what, last)


async def until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
                what: What = "condition") -> Any:
    """Await ``predicate()`` (plain or async) every ``interval`` seconds until it returns a truthy value,
    for at most ``timeout`` seconds; ``interval=0`` only yields to the loop (a predicate that awaits the
    next item of a queue paces itself)."""
    last = None
    try:
        async with asyncio.timeout(timeout) as scope:
            while True:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
                last = value  # not the awaitable: the deadline may cancel it half-way
                if last:
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        if not scope.expired():  # the predicate's own TimeoutError, not the deadline
            raise
        raise _timed_out(timeout, what, last) from None
