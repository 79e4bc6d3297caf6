"""Real servers on free loopback ports in temp folders: one mosquitto and one PostgreSQL cluster per
session; a fresh database and a topic root of its own for every test."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.local import Mosquitto, Postgres, free_port


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nexus-test-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def postgres(workdir: Path) -> Iterator[Postgres]:
    pg = Postgres(workdir / "pg", free_port(), fast=True)
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def broker(workdir: Path) -> Iterator[Mosquitto]:
    mq = Mosquitto(workdir / "mosquitto", free_port())
    mq.start()
    yield mq
    mq.stop()


@pytest.fixture
def db(postgres: Postgres) -> Iterator[str]:
    """A fresh database for one test; returns its DSN."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield postgres.create_database(name)


@pytest.fixture
def prefix() -> str:
    """A topic root of this test's own, so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}"
