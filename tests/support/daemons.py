"""The daemons as real subprocesses (the ``daemons`` fixture starts them), their settings as a test
gives them, and their ops endpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from devtools.local import Mosquitto
from tests.support import ROOT


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


def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET on 127.0.0.1 (an ops endpoint); (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""
