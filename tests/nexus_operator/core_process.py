"""gateway_core as the operator meets it: ``python -m gateway_core`` as a real subprocess on a real database
and broker, on a fixed port (so it can be killed, paused and started again where the operator looks), and an
engineer API key of its own (the role the chart's operator key has)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import httpx

from devtools.local import free_port
from tests.support.core import ADMIN, ADMIN_KEY
from tests.support.daemons import Daemon
from tests.support.wait import until


class CoreProcess:
    def __init__(self, daemons: Callable[..., Daemon], db: str, broker: Any, prefix: str) -> None:
        self._daemons = daemons
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = f"$t/{prefix}"
        self.env = {
            "NEXUS_CORE_SERVICE_ID": f"core-{prefix}", "NEXUS_CORE_DB_DSN": db,
            "NEXUS_CORE_HTTP_PORT": str(self.port), "NEXUS_CORE_MQTT_PORT": str(broker.port),
            "NEXUS_CORE_CONTROL_ROOT": self.root, "NEXUS_CORE_ADMIN_KEY": ADMIN_KEY,
            "NEXUS_CORE_LOG_JSON": "false", "NEXUS_CORE_HEARTBEAT_TIMEOUT": "3",
            "NEXUS_CORE_STARTUP_SETTLE": "0.2",
        }
        self.daemon: Daemon | None = None
        self.engineer_key = ""

    async def start(self) -> CoreProcess:
        self.daemon = self._daemons("gateway_core", self.env, name="core")
        await until(self._ready, 30, 0.1, what=lambda: f"gateway_core ready:\n{self.output()}")
        if not self.engineer_key:
            r = await self.rest("POST", "/keys", json={"name": "nexus-operator", "role": "engineer"})
            assert r.status_code == 201, r.text
            self.engineer_key = r.json()["key"]
        return self

    async def _ready(self) -> bool:
        assert self.daemon is not None and self.daemon.proc is not None
        assert self.daemon.proc.poll() is None, self.output()
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"{self.url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.kill()

    def pause(self) -> None:
        assert self.daemon is not None and self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.daemon is not None and self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGCONT)

    def output(self) -> str:
        return self.daemon.output() if self.daemon is not None else ""

    async def rest(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A request of a REST user (the admin key), not of the operator."""
        async with httpx.AsyncClient(base_url=f"{self.url}/api/v1", headers=ADMIN, timeout=10) as client:
            return await client.request(method, path, **kw)

    async def device(self, device_id: str) -> dict[str, Any] | None:
        r = await self.rest("GET", f"/devices/{device_id}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert r.headers["ETag"] == f'"{body["revision"]}"'
        return body
