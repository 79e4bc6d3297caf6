"""Versioned SQL migrations for the historian, applied at start under an advisory lock.

Files ``migrations/NNN_name.sql`` run in order, each in its own transaction, and are recorded in
``nexus.schema_migrations``. A file whose first line is ``-- requires: timescaledb`` runs only where
that extension can be created; where it cannot, it is skipped and looked at again at the next start
(so installing TimescaleDB later upgrades the schema in place). A file whose first line is
``-- requires: plain`` is the plain PostgreSQL path (partitions, rollups): where ``nexus.points`` is
already a hypertable it is recorded as done without running (a TimescaleDB historian does not go back).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

from ingestion import rollups
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

    @property
    def requires_plain(self) -> bool:
        return self.sql.lstrip().startswith("-- requires: plain")


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


@dataclass(frozen=True, kw_only=True)
class Policies:
    """TimescaleDB's background jobs, from the settings (``ingestion.settings.DbSettings``); 0 = no such job."""

    compress_after_days: int = 7  #: raw chunks older than this are compressed
    retention_days: int = 0  #: raw chunks older than this are dropped; 0 = keep forever
    retention_1m_days: int = 0  #: nexus.points_1m buckets older than this are dropped; 0 = forever
    retention_1h_days: int = 0  #: nexus.points_1h buckets older than this are dropped; 0 = forever
    #: how late a point may arrive and still be aggregated by the next refresh (the policies' start_offset),
    #: cut to stay inside the raw (and, for the hour, the minute) data kept
    late_data_days: int = 7

    def late_hours(self, kept_days: int) -> int:
        hours = self.late_data_days * 24
        return min(hours, kept_days * 24 - 1) if kept_days > 0 else hours


async def migrate(
    conn: psycopg.AsyncConnection, *, retention_days: int = 0, compress_after_days: int = 7,
    retention_1m_days: int = 0, retention_1h_days: int = 0, late_data_days: int = 7,
) -> SchemaState:
    """Bring the schema up to date; ``conn`` must be in autocommit mode."""
    policies = Policies(retention_days=retention_days, compress_after_days=compress_after_days,
                        retention_1m_days=retention_1m_days, retention_1h_days=retention_1h_days,
                        late_data_days=late_data_days)
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
            run = not (m.requires_plain and await is_hypertable(conn))
            try:
                async with conn.transaction():
                    if run:
                        await conn.execute(m.sql.encode())
                    await conn.execute("INSERT INTO nexus.schema_migrations (version, name) VALUES (%s, %s)",
                                       (m.version, m.name))
            except psycopg.OperationalError:
                raise  # connection lost or statement cancelled: temporary, the caller retries
            except psycopg.Error as exc:
                raise PermanentError(f"migration {m.name} failed: {exc}") from exc
            if run:
                log.info("migration %s applied", m.name)
                applied.append(m.version)
            else:
                log.info("migration %s not needed on TimescaleDB: recorded as done", m.name)
        timescale = await is_hypertable(conn)
        if not timescale and await rollups.present(conn):
            await rollups.define_views(conn)
        if timescale:
            await refresh_pending(conn)
            await apply_policies(conn, policies)
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


async def refresh_pending(conn: psycopg.AsyncConnection) -> None:
    """Refresh over the whole history each aggregate a migration created (``nexus.aggregate_refresh``),
    lowest layer first. Outside any transaction (TimescaleDB refuses one inside); a row is deleted once its
    refresh is done, so a crash in between refreshes again at the next start."""
    row = await (await conn.execute("SELECT to_regclass('nexus.aggregate_refresh') IS NOT NULL")).fetchone()
    if not (row and row[0]):
        return
    rows = await (await conn.execute("SELECT layer, view FROM nexus.aggregate_refresh ORDER BY layer")).fetchall()
    for layer, view in rows:
        await conn.execute("CALL refresh_continuous_aggregate(%s::regclass, NULL, NULL)", (view,))
        await conn.execute("DELETE FROM nexus.aggregate_refresh WHERE layer = %s", (layer,))
        log.info("aggregate %s refreshed over the whole history", view)


_JOB = (  # a continuous aggregate's jobs are listed under its view's name
    "SELECT job_id FROM timescaledb_information.jobs"
    " WHERE proc_name = %s AND hypertable_schema = 'nexus' AND hypertable_name = %s ORDER BY job_id"
)


async def _policy(conn: psycopg.AsyncConnection, proc: str, table: str, want: dict[str, str] | None,
                  add: str, args: tuple[object, ...]) -> None:
    """One policy job of ``nexus.<table>``: created once (``add``), its config altered in place when ``want``
    (config key -> interval) differs, deleted when ``want`` is None. Its job id stays across restarts."""
    jobs = [r[0] for r in await (await conn.execute(_JOB, (proc, table))).fetchall()]
    if want is None:
        for job in jobs:
            await conn.execute("SELECT delete_job(%s)", (job,))
        return
    if not jobs:
        await conn.execute(add, args)
        log.info("policy %s on nexus.%s created: %s", proc, table, want)
        return
    job = jobs[0]
    for extra in jobs[1:]:  # never made by us; one job per kind and table
        await conn.execute("SELECT delete_job(%s)", (extra,))
    for key, interval in want.items():
        row = await (await conn.execute(
            "SELECT (config->>%s)::interval IS DISTINCT FROM %s::interval FROM timescaledb_information.jobs"
            " WHERE job_id = %s", (key, interval, job))).fetchone()
        if row and row[0]:
            await conn.execute(
                "SELECT alter_job(%s, config => (SELECT config FROM timescaledb_information.jobs WHERE job_id = %s)"
                " || jsonb_build_object(%s::text, %s::interval::text))", (job, job, key, interval))
            log.info("policy %s on nexus.%s (job %s): %s set to %s", proc, table, job, key, interval)


async def apply_policies(conn: psycopg.AsyncConnection, policies: Policies) -> None:
    """Set the TimescaleDB jobs from settings: compression and retention of the raw points, refresh and
    retention of each aggregate layer (see docs/historian.md)."""
    p = policies
    days = "{} days".format
    async with conn.transaction():
        await _policy(conn, "policy_compression", "points",
                      {"compress_after": days(p.compress_after_days)} if p.compress_after_days > 0 else None,
                      "SELECT add_compression_policy('nexus.points', compress_after => %s::interval)",
                      (days(p.compress_after_days),))
        await _policy(conn, "policy_retention", "points",
                      {"drop_after": days(p.retention_days)} if p.retention_days > 0 else None,
                      "SELECT add_retention_policy('nexus.points', drop_after => %s::interval)",
                      (days(p.retention_days),))
        if not await (await conn.execute(
                "SELECT 1 FROM timescaledb_information.continuous_aggregates"
                " WHERE view_schema = 'nexus' AND view_name = 'points_1h'")).fetchone():
            return  # 007 not applied (it runs with 002, so only in a database set up by hand)
        # late data: each refresh re-aggregates the invalidated buckets of the last late_hours (cheap when
        # nothing arrived late); start_offset stays inside the layer below's retention
        late_1m = f"{max(p.late_hours(p.retention_days), 3)} hours"
        late_1h = f"{max(p.late_hours(p.retention_1m_days), 3)} hours"
        for table, start, end, every in (("points_1m", late_1m, "1 minute", "1 minute"),
                                         ("points_1h", late_1h, "1 hour", "1 minute")):
            await _policy(conn, "policy_refresh_continuous_aggregate", table,
                          {"start_offset": start, "end_offset": end},
                          f"SELECT add_continuous_aggregate_policy('nexus.{table}', start_offset => %s::interval,"
                          " end_offset => %s::interval, schedule_interval => %s::interval)", (start, end, every))
        for table, keep in (("points_1m", p.retention_1m_days), ("points_1h", p.retention_1h_days)):
            await _policy(conn, "policy_retention", table, {"drop_after": days(keep)} if keep > 0 else None,
                          f"SELECT add_retention_policy('nexus.{table}', drop_after => %s::interval)", (days(keep),))
