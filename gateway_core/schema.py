"""Versioned SQL migrations of the configuration store, applied at start under an advisory lock.

Files ``migrations/NNN_name.sql`` run in order, each in its own transaction, recorded in
``core.schema_migrations`` (the same scheme as :mod:`ingestion.schema`, in schema ``core``).
"""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

from gateway_core.errors import PermanentError

log = logging.getLogger("gateway_core.schema")

_LOCK_KEY = 0x636F7265  # "core": serialises concurrent service replicas migrating one database


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, sql) of every migration, in order."""
    out = []
    for entry in resources.files("gateway_core").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(out)


async def migrate(conn: psycopg.AsyncConnection) -> tuple[int, ...]:
    """Bring the store up to date; ``conn`` must be in autocommit mode. Returns the versions applied."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS core")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS core.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r[0] for r in await (await conn.execute("SELECT version FROM core.schema_migrations")).fetchall()
        }
        applied = []
        for version, name, sql in migrations():
            if version in done:
                continue
            try:
                async with conn.transaction():
                    await conn.execute(sql.encode())
                    await conn.execute(
                        "INSERT INTO core.schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                    )
            except psycopg.Error as exc:
                raise PermanentError(f"migration {name} failed: {exc}") from exc
            log.info("migration %s applied", name)
            applied.append(version)
        return tuple(applied)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
