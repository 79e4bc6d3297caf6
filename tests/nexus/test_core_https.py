"""gateway_core's REST API over HTTPS (uvicorn with the http.tls_* settings), and with client certificates
required; the daemon's broker connection over TLS as the example ACL's ``core`` user at the same time."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.local import free_port
from tests.nexus.certs import Certs
from tests.nexus.example_broker import PASSWORDS, example_broker
from tests.support.core import ADMIN, ADMIN_KEY
from tests.support.daemons import Daemon
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def core(daemons: Any, db: str, broker_port: int, certs: Certs, **http: str) -> tuple[Daemon, int]:
    port = free_port()
    env = {"NEXUS_CORE_DB_DSN": db, "NEXUS_CORE_HTTP_PORT": str(port), "NEXUS_CORE_ADMIN_KEY": ADMIN_KEY,
           "NEXUS_CORE_STARTUP_SETTLE": "0.1", "NEXUS_CORE_LOG_JSON": "false",
           "NEXUS_CORE_MQTT_PORT": str(broker_port), "NEXUS_CORE_MQTT_USERNAME": "core",
           "NEXUS_CORE_MQTT_PASSWORD": PASSWORDS["core"], "NEXUS_CORE_MQTT_CA_FILE": str(certs.ca.cert),
           "NEXUS_CORE_HTTP_TLS_CERT_FILE": str(certs.server.cert),
           "NEXUS_CORE_HTTP_TLS_KEY_FILE": str(certs.server.key),
           **{f"NEXUS_CORE_HTTP_{k.upper()}": v for k, v in http.items()}}
    return daemons("gateway_core", env, name="core"), port


def trusting(certs: Certs, *, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    if client_cert:
        ctx.load_cert_chain(str(certs.client.cert), str(certs.client.key))
    return ctx


def ready(d: Daemon, url: str, ctx: ssl.SSLContext) -> bool:
    try:
        return httpx.get(url, verify=ctx, timeout=2).status_code == 200
    except httpx.HTTPError:
        assert d.proc is not None and d.proc.poll() is None, d.output()
        return False


def test_the_rest_api_serves_https_and_the_broker_link_is_tls(daemons: Any, db: str, tmp_path: Path,
                                                              certs: Certs) -> None:
    with example_broker(tmp_path / "mq", certs) as b:
        d, port = core(daemons, db, b.port, certs)
        url = f"https://localhost:{port}"
        wait_for(lambda: ready(d, f"{url}/readyz", trusting(certs)), 30, what=lambda: f"HTTPS ready\n{d.output()}")
        r = httpx.get(f"{url}/readyz", verify=trusting(certs))
        assert r.json() == {"ready": True, "checks": {"db": True, "mqtt": True, "assigner": True, "http": True}}
        assert httpx.get(f"{url}/api/v1/devices", verify=trusting(certs), headers=ADMIN).status_code == 200
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the HTTPS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # a client not trusting our CA
            httpx.get(f"{url}/healthz", verify=ssl.create_default_context(cafile=str(certs.other_ca.cert)))
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                trusting(certs).wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert f"REST API on https://127.0.0.1:{port}/docs" in d.output()
        assert d.stop() == 0
    assert PASSWORDS["core"] not in d.output()


def test_the_rest_api_can_require_client_certificates(daemons: Any, db: str, tmp_path: Path, certs: Certs) -> None:
    with example_broker(tmp_path / "mq", certs) as b:
        d, port = core(daemons, db, b.port, certs, tls_ca_file=str(certs.ca.cert))
        url = f"https://localhost:{port}/readyz"
        wait_for(lambda: ready(d, url, trusting(certs, client_cert=True)), 30,
                 what=lambda: f"HTTPS ready\n{d.output()}")
        with pytest.raises(httpx.HTTPError):  # no client certificate
            httpx.get(url, verify=trusting(certs), timeout=2)
        assert httpx.get(url, verify=trusting(certs, client_cert=True)).json()["ready"] is True
        assert d.stop() == 0
