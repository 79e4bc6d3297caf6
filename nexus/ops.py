"""The ops HTTP endpoint every daemon serves: /healthz, /readyz, /metrics.

A tiny HTTP/1.1 server on asyncio streams: three GET routes do not justify a web framework in
every daemon. /healthz answers while the event loop runs; /readyz runs the daemon's readiness
checks (broker connected, database ready) and answers 503 naming the failing ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from nexus.common import OpsSettings

log = logging.getLogger("nexus.ops")

ReadyCheck = Callable[[], bool]


class OpsServer:
    def __init__(self, settings: OpsSettings, *, checks: dict[str, ReadyCheck],
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.settings = settings
        self.checks = checks
        self.registry = registry
        self._server: asyncio.Server | None = None
        self.port = settings.port

    async def start(self) -> None:
        if not self.settings.port:
            return
        self._server = await asyncio.start_server(self._handle, self.settings.host, self.settings.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("ops endpoint on http://%s:%s", self.settings.host, self.port)

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    def readiness(self) -> dict[str, bool]:
        out = {}
        for name, check in self.checks.items():
            try:
                out[name] = bool(check())
            except Exception:  # noqa: BLE001 - a broken check means not ready, never a dead endpoint
                out[name] = False
        return out

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = path.split("?", 1)[0]
            if method != "GET":
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            elif path == "/healthz":
                status, ctype, body = 200, "text/plain", b"ok\n"
            elif path == "/readyz":
                checks = self.readiness()
                ok = all(checks.values())
                status, ctype, body = (200 if ok else 503), "application/json", orjson.dumps(
                    {"ready": ok, "checks": checks})
            elif path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
