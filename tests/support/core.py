"""Helpers of the gateway_core tests: the REST app on a real database (ASGI, in process), the whole
service (uvicorn + MQTT + assignment loop) in the test's event loop, and simulated gateways (plain
paho clients publishing status, will and following config messages).

The fixtures ``api`` (``open_api(db)``) and ``service`` (``run_service(db, broker, prefix)``) are in
``tests.plugins.core``; a module that needs other settings wraps these in a fixture of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho
import psycopg

from gateway_core.api import Core, create_app
from gateway_core.daemon import Service
from gateway_core.schema import migrate
from gateway_core.settings import DbSettings, HttpSettings, LiveSettings, Settings
from gateway_core.store import Pool
from nexus.common import MqttSettings
from proto import config as pc
from tests.support.wait import until

ADMIN_KEY = "test-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def device_doc(
    device_id: str = "press-1",
    *,
    line: str = "line-1",
    area: str = "stamping",
    site: str = "berlin",
    protocol: str = "modbus_tcp",
    **extra: Any,
) -> dict[str, Any]:
    """A valid Modbus device mapping with two tags (one writable)."""
    doc: dict[str, Any] = {
        "id": device_id,
        "enterprise": "acme",
        "site": site,
        "area": area,
        "line": line,
        "protocol": protocol,
        "host": "127.0.0.1",
        "port": 15020,
        "interval_ms": 1000,
        "tags": [
            {
                "name": "temp",
                "table": "holding",
                "address": 0,
                "type": "float32",
                "unit": "degC",
                "transform": {"scale": 0.1, "offset": 0.0},
            },
            {"name": "setpoint", "table": "holding", "address": 10, "type": "int16", "writable": True},
        ],
    }
    doc.update(extra)
    return copy.deepcopy(doc)


def plant_doc() -> dict[str, Any]:
    """A small plant document (the shape of a plant TOML): two Modbus devices on one line."""
    return {
        "plant": {"enterprise": "acme", "site": "berlin", "area": "stamping", "line": "line-1"},
        "devices": [
            {
                "id": "press-1",
                "host": "127.0.0.1",
                "port": 15020,
                "unit_id": 1,
                "interval_ms": 1000,
                "tags": [
                    {
                        "name": "zone1_temp",
                        "table": "holding",
                        "address": 0,
                        "type": "float32",
                        "unit": "degC",
                    },
                    {
                        "name": "setpoint",
                        "table": "holding",
                        "address": 10,
                        "type": "int16",
                        "writable": True,
                    },
                    {"name": "alarm", "table": "holding", "address": 40, "type": "bool", "bit": 3},
                ],
            },
            {
                "id": "oven-1",
                "host": "127.0.0.1",
                "port": 15021,
                "interval_ms": 500,
                "word_order": "little",
                "tags": [
                    {
                        "name": "temp",
                        "table": "input",
                        "address": 0,
                        "type": "int16",
                        "unit": "degC",
                        "transform": {
                            "scale": 0.1,
                            "offset": -40.0,
                            "min": -40.0,
                            "max": 200.0,
                            "deadband": 0.2,
                        },
                    },
                    {"name": "recipe", "table": "holding", "address": 30, "type": "string", "length": 10},
                ],
            },
        ],
    }


def core_settings(dsn: str, *, broker_port: int = 1883, root: str = "$nexus", **kw: Any) -> Settings:
    return Settings(
        service_id="test",
        control_root=root,
        admin_key=ADMIN_KEY,
        db=DbSettings(dsn=dsn, pool_size=4),
        http=HttpSettings(port=0),
        mqtt=MqttSettings(port=broker_port, reconnect_min=0.2, reconnect_max=1.0),
        **kw,
    )


async def migrated(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrate(conn)


@dataclass
class Api:
    client: httpx.AsyncClient
    core: Core
    dsn: str


@contextlib.asynccontextmanager
async def open_api(db: str, **settings: Any) -> AsyncIterator[Api]:
    """The REST app over ASGI on a fresh migrated database; the client sends the admin key."""
    await migrated(db)
    pool = Pool(db, size=4)
    core = Core.build(core_settings(db, **settings), pool)
    transport = httpx.ASGITransport(app=create_app(core))
    async with httpx.AsyncClient(transport=transport, base_url="http://core", headers=ADMIN) as client:
        yield Api(client, core, db)
    await pool.close()


@dataclass
class Running:
    service: Service
    client: httpx.AsyncClient
    root: str
    broker_port: int
    dsn: str

    @property
    def core(self) -> Core:
        assert self.service.core is not None
        return self.service.core


async def start_service(settings: Settings, tg: asyncio.TaskGroup) -> Service:
    svc = Service(settings)
    task = tg.create_task(svc.run(), name="test.core")
    await until(lambda: svc.started.is_set() or task.done(), 20, 0.02, what="the service started")
    if not svc.started.is_set():
        task.result()
        raise AssertionError("service ended during start")
    return svc


@contextlib.asynccontextmanager
async def run_service(db: str, broker: Any, prefix: str, **overrides: Any) -> AsyncIterator[Running]:
    """The whole service (HTTP on a free port, MQTT, assignment loop) running in this test's loop;
    ``overrides``: settings other than the test defaults below."""
    root = f"$t/{prefix}"
    kw: dict[str, Any] = {
        "heartbeat_timeout": 1.5,
        "handoff_timeout": 5.0,
        "startup_settle": 0.2,
        "write_timeout": 1.0,
        **overrides,
    }
    kw.setdefault("live", LiveSettings(topic_root=prefix))  # this test's gateways' batches, not every test's
    settings = core_settings(db, broker_port=broker.port, root=root, **kw)
    async with asyncio.TaskGroup() as tg:
        svc = await start_service(settings, tg)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{svc.port}", headers=ADMIN, timeout=10
        ) as client:
            try:
                yield Running(svc, client, root, broker.port, db)
            finally:
                svc.stop.set()


class Recorder:
    """A plain MQTT subscriber (paho thread) recording every message: (monotonic time, topic, payload)."""

    def __init__(
        self, port: int, topics: list[str], client_id: str = "", will: tuple[str, bytes] | None = None
    ) -> None:
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise AssertionError("recorder did not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), msg.topic, msg.payload, bool(msg.retain)))
        self.on_message(msg)

    def on_message(self, msg: paho.MQTTMessage) -> None:
        pass

    def snapshot(self) -> list[tuple[float, str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def device_messages(self, root: str) -> list[pc.DeviceMessage]:
        head = f"{root}/config/devices/"
        return [pc.decode_device(p) for _, t, p, _ in self.snapshot() if t.startswith(head)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class SimGateway(Recorder):
    """A simulated gateway following the wire contract: sync at connect, polls what names it,
    retained status on change and every ``interval`` seconds, retained offline will."""

    def __init__(
        self, port: int, root: str, gateway_id: str, *, capacity: int = 100, interval: float = 0.3
    ) -> None:
        self.root, self.id, self.capacity, self.interval = root, gateway_id, capacity, interval
        self.polling: set[str] = set()
        self.applied = 0
        self.seq = 0  # highest config seq applied, echoed in the status
        self.heartbeat = True
        self.order: list[
            tuple[str, str, str | None]
        ] = []  # (event, device, gateway) as this gateway saw them
        self._stop = threading.Event()
        topics = [pc.device_filter(root), pc.sync_response_topic(root, gateway_id)]
        super().__init__(
            port,
            topics,
            client_id=f"sim-{gateway_id}",
            will=(pc.status_topic(root, gateway_id), pc.offline_will(gateway_id)),
        )
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        self.client.publish(
            pc.sync_request_topic(self.root), pc.encode_sync_request(pc.SyncRequest(gateway=self.id)), qos=1
        )
        while not self._stop.wait(self.interval):
            if self.heartbeat:
                self.publish_status()

    def publish_status(self) -> None:
        # Built and queued under the lock: two threads (heartbeat, message callback) publish statuses,
        # and an older snapshot must never reach the broker after a newer one.
        with self._lock:
            status = pc.GatewayStatus(
                gateway=self.id,
                online=True,
                capacity=self.capacity,
                applied_revision=self.applied,
                devices=tuple(sorted(self.polling)),
                ts=int(time.time() * 1000),
                config_seq=self.seq,
            )
            self.client.publish(pc.status_topic(self.root, self.id), pc.encode_status(status), qos=1, retain=True)

    def on_message(self, msg: paho.MQTTMessage) -> None:
        if msg.topic.startswith(f"{self.root}/config/devices/"):
            m = pc.decode_device(msg.payload)
            with self._lock:
                self.order.append(("device", m.device_id, m.gateway))
                if m.gateway == self.id and m.device is not None:
                    self.polling.add(m.device_id)
                else:
                    self.polling.discard(m.device_id)
                self.applied = max(self.applied, m.revision)
                self.seq = max(self.seq, m.seq)
        elif msg.topic == pc.sync_response_topic(self.root, self.id):
            r = pc.decode_sync_response(msg.payload)
            with self._lock:
                self.polling = {d["id"] for d in r.devices}
                self.applied = max(self.applied, r.revision)
                self.seq = max(self.seq, r.seq)
                self.order.append(("sync", ",".join(sorted(self.polling)), None))
        else:
            return
        if self.heartbeat:
            self.publish_status()

    def crash(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes the will."""
        self._stop.set()
        sock = self.client.socket()
        self.client.loop_stop()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._stop.set()
        super().close()


def decode(payload: bytes) -> Any:
    return orjson.loads(payload)
