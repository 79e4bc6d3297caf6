"""``python -m gateway_core`` as a real subprocess: settings from the environment, REST API, ops
endpoints, a config push, clean exit on SIGTERM, a bad setting named at start, no secret in the log."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import httpx
import pytest

from devtools.local import Mosquitto, free_port
from proto import config as pc
from tests.support import ROOT
from tests.support.core import ADMIN, ADMIN_KEY, Recorder, device_doc
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def test_daemon(daemons: Any, db: str, broker: Mosquitto, prefix: str) -> None:
    http_port, ops_port, root = free_port(), free_port(), f"$t/{prefix}"
    core = daemons(
        "gateway_core",
        {
            "NEXUS_CORE_DB_DSN": db,
            "NEXUS_CORE_HTTP_PORT": str(http_port),
            "NEXUS_CORE_OPS_PORT": str(ops_port),
            "NEXUS_CORE_MQTT_PORT": str(broker.port),
            "NEXUS_CORE_CONTROL_ROOT": root,
            "NEXUS_CORE_ADMIN_KEY": ADMIN_KEY,
            "NEXUS_CORE_STARTUP_SETTLE": "0.1",
            "NEXUS_CORE_LOG_JSON": "false",
            "NEXUS_CORE_LOG_LEVEL": "DEBUG",
        },
        name="core",
    )
    api = f"http://127.0.0.1:{http_port}"

    def ready(base: str) -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert core.proc is not None and core.proc.poll() is None, core.output()
            return False

    wait_for(lambda: ready(api), 20, what="REST API ready")
    wait_for(lambda: ready(f"http://127.0.0.1:{ops_port}"), 5, what="ops endpoint ready")
    assert httpx.get(f"{api}/readyz").json() == {
        "ready": True,
        "checks": {"db": True, "mqtt": True, "assigner": True, "http": True},
    }
    assert httpx.get(f"{api}/healthz").text == "ok\n"
    assert "nexus_core_config_revision 0.0" in httpx.get(f"http://127.0.0.1:{ops_port}/metrics").text
    assert httpx.get(f"{api}/openapi.json").json()["info"]["title"] == "NEXUS Edge configuration service"
    assert "swagger" in httpx.get(f"{api}/docs").text.lower()

    rec = Recorder(broker.port, [pc.device_filter(root)])
    try:
        r = httpx.post(f"{api}/api/v1/devices", json=device_doc(), headers=ADMIN)
        assert r.status_code == 201, r.text
        assert httpx.get(f"{api}/api/v1/devices").status_code == 401
        wait_for(lambda: rec.device_messages(root), 5, what="config pushed")
        assert rec.device_messages(root)[0].device == device_doc()
    finally:
        rec.close()
    assert "nexus_core_config_revision 1.0" in httpx.get(f"{api}/metrics").text

    assert core.stop(timeout=15) == 0
    log = core.output()
    assert "configuration service stopped at revision 1" in log
    assert ADMIN_KEY not in log


def test_bad_setting_is_named() -> None:
    def start(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway_core"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        )

    out = start(NEXUS_CORE_HEARTBEAT_TIMEOUT="soon")
    assert out.returncode == 2
    assert "setting heartbeat_timeout (env NEXUS_CORE_HEARTBEAT_TIMEOUT): bad value 'soon'" in out.stderr
    out = start(NEXUS_CORE_CONTROL_ROOT="a/#")
    assert out.returncode == 2 and "setting control_root" in out.stderr


def test_ops_endpoint_answers_while_the_database_is_away(daemons: Any, broker: Mosquitto) -> None:
    ops_port = free_port()
    core = daemons(
        "gateway_core",
        {
            "NEXUS_CORE_DB_DSN": f"postgresql://nexus@127.0.0.1:{free_port()}/nope",
            "NEXUS_CORE_HTTP_PORT": "0",
            "NEXUS_CORE_OPS_PORT": str(ops_port),
            "NEXUS_CORE_MQTT_PORT": str(broker.port),
            "NEXUS_CORE_LOG_JSON": "false",
        },
        name="core-nodb",
    )
    ops = f"http://127.0.0.1:{ops_port}"

    def up() -> bool:
        try:
            return httpx.get(f"{ops}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 20, what="ops endpoint")
    r = httpx.get(f"{ops}/readyz")
    assert r.status_code == 503 and r.json() == {"ready": False, "checks": {"db": False}}
    assert core.stop(timeout=15) == 0
    assert "database not reachable" in core.output()


def test_a_taken_http_port_is_a_clear_error_and_exit_1(daemons: Any, db: str, broker: Mosquitto, prefix: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        core = daemons("gateway_core", {"NEXUS_CORE_DB_DSN": db, "NEXUS_CORE_HTTP_PORT": str(port),
                                        "NEXUS_CORE_MQTT_PORT": str(broker.port), "NEXUS_CORE_ADMIN_KEY": ADMIN_KEY,
                                        "NEXUS_CORE_CONTROL_ROOT": f"$t/{prefix}", "NEXUS_CORE_LOG_JSON": "false"},
                       name="core")
        assert core.proc is not None
        code = core.proc.wait(30)
    out = core.output()
    assert code == 1, out
    assert f"REST API cannot listen on 127.0.0.1:{port}" in out and "Traceback" not in out, out
