"""Versioned SQL migrations for the historian, applied at start under an advisory lock.

Files ``migrations/NNN_name.sql`` run in order, each in its own transaction, and are recorded in
``nexus.schema_migrations``. A file whose first line is ``-- requires: timescaledb`` runs only where
that extension can be created; where it cannot, it is skipped and looked at again at the next start
(so installing TimescaleDB later upgrades the schema in place).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

from ingestion.errors import PermanentError

log = logging.getLogger("ingestion.schema")

_LOCK_KEY = 0x6E657875  # "nexu": serialises concurrent workers migrating one database


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def requires_timescale(self) -> bool:
        return self.sql.lstrip().startswith("-- requires: timescaledb")


@dataclass(frozen=True)
class SchemaState:
    timescale: bool  #: the timescaledb path is active (hypertable, compression, continuous aggregate)
    applied: tuple[int, ...]  #: versions applied by this call


def migrations() -> list[Migration]:
    out = []
    for entry in resources.files("ingestion").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append(Migration(version, entry.name, entry.read_text()))
    return sorted(out, key=lambda m: m.version)


async def timescale_available(conn: psycopg.AsyncConnection) -> bool:
    """True if the extension is installed here or can be created (packaged and preloaded)."""
    row = await (await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).fetchone()
    if row:
        return True
    row = await (await conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")).fetchone()
    if not row:
        return False
    # CREATE EXTENSION without preload is a FATAL error that drops the connection: check first.
    row = await (await conn.execute(
        "SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'")).fetchone()
    return row is None or "timescaledb" in (row[0] or "")


async def migrate(
    conn: psycopg.AsyncConnection, *, retention_days: int = 0, compress_after_days: int = 7
) -> SchemaState:
    """Bring the schema up to date; ``conn`` must be in autocommit mode."""
    await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS nexus")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS nexus.schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r[0] for r in await (await conn.execute("SELECT version FROM nexus.schema_migrations")).fetchall()}
        ts_ok = await timescale_available(conn)
        applied = []
        for m in migrations():
            if m.version in done:
                continue
            if m.requires_timescale and not ts_ok:
                log.info("migration %s skipped: timescaledb extension not available; plain PostgreSQL path", m.name)
                continue
            try:
                async with conn.transaction():
                    await conn.execute(m.sql.encode())
                    await conn.execute("INSERT INTO nexus.schema_migrations (version, name) VALUES (%s, %s)",
                                       (m.version, m.name))
            except psycopg.OperationalError:
                raise  # connection lost or statement cancelled: temporary, the caller retries
            except psycopg.Error as exc:
                raise PermanentError(f"migration {m.name} failed: {exc}") from exc
            log.info("migration %s applied", m.name)
            applied.append(m.version)
        timescale = await is_hypertable(conn)
        if timescale:
            await apply_policies(conn, retention_days=retention_days, compress_after_days=compress_after_days)
        return SchemaState(timescale=timescale, applied=tuple(applied))
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


async def is_hypertable(conn: psycopg.AsyncConnection) -> bool:
    if not await (await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).fetchone():
        return False
    row = await (await conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = 'nexus' AND hypertable_name = 'points'")).fetchone()
    return row is not None


async def apply_policies(conn: psycopg.AsyncConnection, *, retention_days: int, compress_after_days: int) -> None:
    """Set TimescaleDB compression and retention policies from settings (0 = no policy)."""
    async with conn.transaction():
        await conn.execute("SELECT remove_compression_policy('nexus.points', if_exists => TRUE)")
        if compress_after_days > 0:
            await conn.execute(
                "SELECT add_compression_policy('nexus.points', compress_after => make_interval(days => %s))",
                (compress_after_days,))
        await conn.execute("SELECT remove_retention_policy('nexus.points', if_exists => TRUE)")
        if retention_days > 0:
            await conn.execute("SELECT add_retention_policy('nexus.points', drop_after => make_interval(days => %s))",
                               (retention_days,))
