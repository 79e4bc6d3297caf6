"""The configuration service daemon: REST API (uvicorn), MQTT client and assignment loop in one TaskGroup.

Tasks: ``core.http`` (uvicorn ``Server.serve`` inside our loop), ``core.mqtt_loop`` (broker session),
``core.assign_loop`` (sharding and config pushes), ``core.live_snapshot`` (the live stream's reads of the
retained per-tag topics), ``core.stop_watch``. Shutdown on SIGTERM/SIGINT:
stop accepting HTTP requests (uvicorn finishes the running ones), let the assignment loop finish its
pass, disconnect from the broker, close the database connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

import psycopg
import uvicorn

from gateway_core.api import Core, create_app
from gateway_core.errors import PermanentError
from gateway_core.live_ws import MAX_MESSAGE
from gateway_core.schema import migrate
from gateway_core.settings import DbSettings, Settings
from gateway_core.store import Pool
from nexus import pg
from nexus.mqtt import Message, MqttClient
from nexus.ops import OpsServer
from nexus.runtime import Backoff, install_stop_signals, wait_first

log = logging.getLogger("gateway_core")


class _NoColor(logging.Filter):
    """uvicorn adds an ANSI-coloured copy of some messages as an extra field; our JSON logs do not want it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


_NO_COLOR = _NoColor()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: our stop event owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def migrate_db(db: DbSettings, stop: asyncio.Event) -> bool:
    """Connect (capped backoff) and migrate, again if the connection breaks meanwhile; False if
    ``stop`` was set first."""
    backoff = Backoff(first=0.5, cap=10.0)
    while (conn := await pg.connect(db.dsn, connect_timeout=db.connect_timeout, stop=stop)) is not None:
        try:
            async with conn:
                await migrate(conn)
                return True
        except psycopg.OperationalError as exc:
            log.warning("database lost while migrating: %s", str(exc).strip())
            if await backoff.wait(stop):
                break
    return False


class Service:
    """One running service; ``port`` is the bound HTTP port once ``started`` is set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.started = asyncio.Event()
        self.port = settings.http.port
        self.core: Core | None = None

    async def run(self, *, signals: bool = False) -> int:
        s = self.settings
        if signals:
            install_stop_signals(self.stop)
        logging.getLogger("uvicorn.error").addFilter(_NO_COLOR)
        # The ops endpoint answers from the start (liveness while the database is still away).
        checks: dict[str, Callable[[], bool]] = {"db": lambda: self.core is not None}
        ops = OpsServer(s.ops, checks=checks)
        await ops.start()
        try:
            return await self._run(checks)
        finally:
            await ops.close()

    async def _run(self, checks: dict[str, Callable[[], bool]]) -> int:
        s = self.settings
        if not await migrate_db(s.db, self.stop):
            return 0
        pool = Pool(s.db.dsn, size=s.db.pool_size, connect_timeout=s.db.connect_timeout)
        history_pool = (
            Pool(s.db.history_dsn, size=2, connect_timeout=s.db.connect_timeout) if s.db.history_dsn else None
        )
        core = self.core = Core.build(s, pool, history_pool)
        await core.load()
        control = core.control
        live = core.live
        health = control.health
        assert live is not None

        control_head = f"{s.control_root}/"

        def on_message(msg: Message) -> None:
            # health and control first: under a control root of several levels their topics may look like tags'
            if health.handles(msg.topic):
                health.on_message(msg)
            elif msg.topic.startswith(control_head) or not live.handles(msg.topic):
                control.on_message(msg)
            else:
                live.on_message(msg)

        mqtt = MqttClient(
            s.mqtt,
            client_id=s.client_id,
            subscriptions=[*control.subscriptions(), *health.subscriptions(), *live.subscriptions()],
            on_message=on_message,
            on_connect=control.on_connect,
        )
        control.mqtt = mqtt
        server: _Server
        # ready only once the REST API listens, too: the demo configures the plant right after /readyz
        checks.update(mqtt=lambda: mqtt.connected, assigner=lambda: control.settled, http=lambda: server.started)
        core.checks = checks
        server = _Server(
            uvicorn.Config(
                create_app(core),
                host=s.http.host,
                port=s.http.port,
                log_config=None,
                access_log=False,
                lifespan="off",
                ws_max_size=MAX_MESSAGE,
                **s.http.uvicorn_tls(),
            )
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(mqtt.run_loop(self.stop), name="core.mqtt_loop")
                tg.create_task(control.assign_loop(self.stop), name="core.assign_loop")
                tg.create_task(live.snapshot_loop(mqtt, self.stop), name="core.live_snapshot")
                http = tg.create_task(self._serve(server), name="core.http")
                tg.create_task(self._watch(server, http), name="core.stop_watch")
                while not server.started and not http.done():
                    await asyncio.sleep(0.02)
                if server.started:
                    self.port = server.servers[0].sockets[0].getsockname()[1]
                    log.info("REST API on %s://%s:%s/docs", s.http.scheme, s.http.host, self.port)
                    self.started.set()
                else:
                    self.stop.set()
        finally:
            await pool.close()
            if history_pool:
                await history_pool.close()
        log.info("configuration service stopped at revision %s", core.assigner.revision)
        return 0

    async def _serve(self, server: uvicorn.Server) -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits when it cannot bind
            raise PermanentError(
                f"REST API cannot listen on {self.settings.http.host}:{self.settings.http.port}"
                " (see the log above; setting http.port)"
            ) from exc

    async def _watch(self, server: uvicorn.Server, http: asyncio.Task[None]) -> None:
        await wait_first(self.stop.wait(), http)  # the HTTP task is left running: should_exit ends it
        server.should_exit = True
        if not self.stop.is_set():
            log.error("HTTP server ended unexpectedly; stopping")
            self.stop.set()


async def run(settings: Settings) -> int:
    code = 0
    try:
        code = await Service(settings).run(signals=True)
    except* PermanentError as group:
        for exc in group.exceptions:
            log.error("%s", exc)
        code = 1
    return code
