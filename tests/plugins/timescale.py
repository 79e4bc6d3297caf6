"""A second PostgreSQL cluster with TimescaleDB preloaded, one per session, and ``historian``: a fresh
database per test on plain PostgreSQL and on TimescaleDB (parametrized), so the historian tests run on both.

The TimescaleDB build is looked for in ``$NEXUS_TIMESCALEDB_BUILD``, else ``<repo>/../shared/timescaledb``;
it is installed into PostgreSQL's folders (its ``install.sh``) when the extension is missing and this process
may write there (root, or a writable lib folder). Where TimescaleDB cannot be had, every test that needs it is
skipped with the reason, which ``pytest -ra`` lists in its summary.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devtools.local import LocalServerError, Postgres, free_port, pg_bindir
from ingestion import rollups

REPO = Path(__file__).resolve().parents[2]


def timescale_build() -> Path:
    return Path(os.environ.get("NEXUS_TIMESCALEDB_BUILD") or REPO.parent / "shared" / "timescaledb")


def _pg_dirs() -> tuple[Path, Path]:
    """PostgreSQL's lib and extension folders (from pg_config when it is there, else the Debian layout)."""
    bindir = pg_bindir()
    version = bindir.parent.name  # /usr/lib/postgresql/<version>/bin
    lib = Path(os.environ.get("PG_LIBDIR") or bindir.parent / "lib")
    ext = Path(os.environ.get("PG_EXTDIR") or f"/usr/share/postgresql/{version}/extension")
    return lib, ext


def ensure_timescaledb() -> str | None:
    """None when the extension can be loaded (installed now if need be), else why it cannot."""
    lib, ext = _pg_dirs()
    if (ext / "timescaledb.control").exists() and (lib / "timescaledb.so").exists():
        return None
    build = timescale_build()
    script = build / "install.sh"
    if not script.exists():
        return (f"TimescaleDB is not installed in {lib} and no build was found at {build} "
                "(set NEXUS_TIMESCALEDB_BUILD or run its install.sh)")
    if not (os.geteuid() == 0 or (os.access(lib, os.W_OK) and os.access(ext, os.W_OK))):
        return f"TimescaleDB is not installed and this process may not write {lib}: run {script} as root"
    res = subprocess.run([str(script)], capture_output=True, text=True,
                         env={**os.environ, "PG_LIBDIR": str(lib), "PG_EXTDIR": str(ext)})
    if res.returncode != 0:
        return f"{script} failed ({res.returncode}): {(res.stderr or res.stdout).strip()[:300]}"
    return None


@dataclass(frozen=True)
class TimescaleServer:
    pg: Postgres | None
    reason: str  #: why TimescaleDB is not available ("" when it is)
    version: str = ""  #: the extension's version, e.g. 2.28.3

    def database(self) -> str:
        if self.pg is None:
            pytest.skip(f"TimescaleDB not available: {self.reason}")
        return self.pg.create_database(f"ts_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def timescale_server(workdir: Path) -> Iterator[TimescaleServer]:
    reason = ensure_timescaledb()
    if reason:
        yield TimescaleServer(None, reason)
        return
    pg = Postgres(workdir / "pg-timescale", free_port(), fast=True,
                  # no job scheduler: tests run the policies' jobs when they mean to (run_refresh_jobs, CALL
                  # run_job), never one racing them; this build's workers also log an error after each job
                  settings={"shared_preload_libraries": "timescaledb", "timescaledb.telemetry_level": "off",
                            "timescaledb.max_background_workers": "0"})
    try:
        pg.start()
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")  # loadable: fail here, not in each test
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    except (LocalServerError, psycopg.Error) as exc:
        pg.stop()
        # e.g. this build needs PostgreSQL 15.20+: "undefined symbol: heap_datum_check" on 15.18
        yield TimescaleServer(None, f"a cluster with timescaledb preloaded did not start (the build needs the "
                                    f"PostgreSQL minor it was built for): {str(exc)[-400:]}")
        return
    yield TimescaleServer(pg, "", version[0] if version else "")
    pg.stop()


@pytest.fixture
def tsdb(timescale_server: TimescaleServer) -> str:
    """A fresh database on the TimescaleDB cluster (extension not yet created); skips without TimescaleDB."""
    return timescale_server.database()


@dataclass(frozen=True)
class Historian:
    backend: str  #: "postgres" or "timescaledb"
    dsn: str

    @property
    def timescale(self) -> bool:
        return self.backend == "timescaledb"


@pytest.fixture(params=["postgres", "timescaledb"])
def historian(request: pytest.FixtureRequest) -> Historian:
    """A fresh, not yet migrated database on each backend: plain PostgreSQL, then TimescaleDB. A module whose
    tests all take ``db`` runs them on both with ``db = historian_db`` (below)."""
    if request.param == "postgres":  # not through ``db``: a test module may define ``db`` as this fixture's dsn
        pg: Postgres = request.getfixturevalue("postgres")
        return Historian("postgres", pg.create_database(f"t_{uuid.uuid4().hex[:12]}"))
    return Historian("timescaledb", request.getfixturevalue("tsdb"))


@pytest.fixture
def historian_db(historian: Historian) -> str:
    """The ``historian``'s DSN. A module whose tests and fixtures all take ``db`` runs them on both backends by
    naming this fixture so, once: ``from tests.plugins.timescale import historian_db`` then
    ``db = historian_db`` (pytest registers a module's fixture under the name it is bound to)."""
    return historian.dsn


async def run_refresh_jobs(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Run the aggregates' refresh policies now, 1 minute before 1 hour, as the scheduler would (directly:
    this build's background workers log an error after their work, see ../shared/timescaledb/README.md).
    On plain PostgreSQL, the upkeep leader's rollup refresh until it has nothing left to do (no job ids).
    Returns the job ids run."""
    if not await (await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).fetchone():
        if await rollups.present(conn):
            await rollups.refresh_all(conn)
        return []
    jobs = [int(r[0]) for r in await (await conn.execute(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        " AND hypertable_schema = 'nexus' ORDER BY hypertable_name = 'points_1h', job_id")).fetchall()]
    for job in jobs:
        await conn.execute("CALL run_job(%s)", (job,))
    return jobs
