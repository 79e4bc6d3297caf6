"""PostgreSQL plumbing shared by the daemons: connect with capped backoff until it works or stop."""

from __future__ import annotations

import asyncio
import logging

import psycopg

from nexus.runtime import Backoff

log = logging.getLogger("nexus.pg")


async def connect(dsn: str, *, connect_timeout: float, stop: asyncio.Event) -> psycopg.AsyncConnection | None:
    """An autocommit connection, retried with capped backoff; None if ``stop`` was set first."""
    backoff = Backoff(first=0.5, cap=10.0)
    while not stop.is_set():
        try:
            # whole seconds, as libpq takes them (psycopg would truncate a float the same way)
            return await psycopg.AsyncConnection.connect(dsn, connect_timeout=int(connect_timeout), autocommit=True)
        except psycopg.OperationalError as exc:
            log.warning("database not reachable: %s", str(exc).strip())
            if await backoff.wait(stop):
                break
    return None
