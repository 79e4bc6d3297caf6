"""PostgreSQL plumbing shared by the daemons: connect with capped backoff until it works or stop, and
run one database operation under a timeout that ``stop`` can cut short."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import psycopg
import psycopg.sql

from nexus.report import describe
from nexus.runtime import Backoff, wait_first

log = logging.getLogger("nexus.pg")

T = TypeVar("T")

#: seconds a cancelled operation gets to unwind before it is cancelled again. psycopg answers the first
#: cancellation by cancelling the statement on the server and waiting (up to 5 s each) for it to end; a
#: second one makes it close the connection at once. On a live server the first one takes milliseconds.
CANCEL_GRACE = 1.0


class Stopped(Exception):
    """``stop`` was set before the operation finished; it was cancelled (the connection may be closed)."""


async def connect(dsn: str, *, connect_timeout: float, stop: asyncio.Event) -> psycopg.AsyncConnection | None:
    """An autocommit connection, retried with capped backoff; None if ``stop`` was set first (also
    during an attempt: a server that does not answer does not hold a shutdown up)."""
    backoff = Backoff(first=0.5, cap=10.0)
    while not stop.is_set():
        try:
            # whole seconds, as libpq takes them (psycopg would truncate a float the same way); the
            # asyncio bound covers what libpq's does not (several hosts, name resolution)
            return await bounded(psycopg.AsyncConnection.connect(
                dsn, connect_timeout=max(1, int(connect_timeout)), autocommit=True),
                timeout=connect_timeout + 1, stop=stop)
        except (psycopg.OperationalError, TimeoutError) as exc:
            log.warning("database not reachable: %s", describe(exc, 300))
            if await backoff.wait(stop):
                break
        except Stopped:
            break
    return None


async def bounded(op: Coroutine[Any, Any, T], *, timeout: float, stop: asyncio.Event | None = None) -> T:
    """Await one database operation; cancel it when ``timeout`` seconds pass (TimeoutError) or ``stop``
    is set (:class:`Stopped`). Returns within about 2 x :data:`CANCEL_GRACE` of either, whatever the
    server does; after a cancellation the caller should treat the connection as broken."""
    task = asyncio.ensure_future(op)
    try:
        await wait_first(task, *([stop.wait()] if stop is not None else []), timeout=timeout)
    except asyncio.CancelledError:
        await _cancel(task)
        raise
    if task.done():
        return task.result()
    await _cancel(task)
    if stop is not None and stop.is_set():
        raise Stopped("stopped before the database operation finished")
    raise TimeoutError(f"database operation took longer than {timeout:g}s")


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for it to end, cancelling again if it does not within the grace."""
    for _ in range(3):
        task.cancel()
        done, _pending = await asyncio.wait({task}, timeout=CANCEL_GRACE)
        if done:
            break
    if task.done() and not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()  # retrieved: its failure after the cancellation is of no interest


async def lock_timeout(conn: psycopg.AsyncConnection[Any], ms: int) -> None:
    """Bound the open transaction's lock waits (``SET LOCAL lock_timeout``): DDL gives up with
    ``LockNotAvailable`` rather than queueing every other session behind it."""
    await conn.execute(psycopg.sql.SQL("SET LOCAL lock_timeout = {}").format(psycopg.sql.Literal(f"{ms}ms")))
