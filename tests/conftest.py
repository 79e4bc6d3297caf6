"""Test fixtures: a real mosquitto and a real PostgreSQL on free loopback ports in temp folders,
pymodbus simulators, and helpers that run the daemons as real subprocesses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devtools.local import Mosquitto, Postgres, free_port

ROOT = Path(__file__).resolve().parent.parent


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


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def stored_points(dsn: str) -> int:
    """Rows in nexus.points; 0 while the schema does not exist yet (ingestion creates it) or the
    database is down."""
    try:
        return int(query(dsn, "SELECT count(*) FROM nexus.points")[0][0])
    except psycopg.Error:
        return 0


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET on 127.0.0.1 (an ops endpoint); (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def wait_for(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Daemon:
    """A daemon subprocess (``python -m gateway`` / ``ingestion``) with env settings and a log file."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module = module
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=env, stdout=out, stderr=out,
                                         start_new_session=True)
        return self

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.module} did not stop on SIGTERM within {timeout}s:\n{self.output()}") from exc

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def make(module: str, env: dict[str, str], name: str | None = None) -> Daemon:
        d = Daemon(module, env, tmp_path / f"{name or module}-{len(started)}.log")
        started.append(d)
        return d.start()

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def ingestion_env(broker: Mosquitto, dsn: str, prefix: str, worker: str = "w1", **extra: str) -> dict[str, str]:
    return {
        "NEXUS_INGESTION_WORKER_ID": f"{prefix}-{worker}",
        "NEXUS_INGESTION_TOPIC_ROOT": prefix,
        "NEXUS_INGESTION_SHARE_GROUP": f"{prefix}-ingestion",
        "NEXUS_INGESTION_MQTT_PORT": str(broker.port),
        "NEXUS_INGESTION_DB_DSN": dsn,
        "NEXUS_INGESTION_LOG_JSON": "false",
        **extra,
    }


def gateway_env(broker: Mosquitto, plant: Path, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "NEXUS_GATEWAY_GATEWAY_ID": f"{prefix}-gw",
        "NEXUS_GATEWAY_PLANT": str(plant),
        "NEXUS_GATEWAY_TOPIC_ROOT": prefix,
        "NEXUS_GATEWAY_UNS_PREFIX": prefix,
        "NEXUS_GATEWAY_MQTT_PORT": str(broker.port),
        "NEXUS_GATEWAY_LOG_JSON": "false",
        "NEXUS_GATEWAY_SPOOL_DIR": str(plant.parent / "spool"),
        **extra,
    }


class BackgroundLoop:
    """An asyncio loop in a thread, for in-process servers (simulators) used by subprocess daemons."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def bg_loop() -> Iterator[BackgroundLoop]:
    bl = BackgroundLoop()
    yield bl
    bl.close()
