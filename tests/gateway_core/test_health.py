"""gateway_core's device health against a real mosquitto: retained reports as the gateways publish them
(proto.health on <root>/status/devices/<id>), simulated gateways for liveness, the whole service on a free
port: REST (GET /health/devices, GET /devices/{id}/health), the live WebSocket's device subscriptions,
a cleared report removed, a dead gateway's devices stale, bad reports refused."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import paho.mqtt.client as paho
from websockets.asyncio.client import ClientConnection

from gateway_core.settings import LiveSettings
from proto.health import DeviceHealth, Latency, encode_health, health_topic
from tests.gateway_core.test_live import recv, socket
from tests.gateway_core.users_support import bearer, login
from tests.support.core import Running, SimGateway, run_service
from tests.support.wait import until


def report(device_id: str = "press-1", gateway: str = "gw-a", **kw: Any) -> DeviceHealth:
    fields: dict[str, Any] = {
        "device_id": device_id, "gateway": gateway, "path": f"acme/berlin/stamping/line-1/{device_id}",
        "state": "polling", "connected": True, "breaker": "closed", "ts": int(time.time() * 1000),
        "heartbeat_ms": 1000, "last_good_ts": int(time.time() * 1000), "polls": 10, "errors": 0,
        "latency": Latency(p50=2.0, p99=5.0, samples=10, window_s=60.0), **kw}
    return DeviceHealth(**fields)


class Publisher:
    def __init__(self, port: int, root: str) -> None:
        self.root = root
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, h: DeviceHealth | bytes, device_id: str = "press-1") -> None:
        payload = encode_health(h) if isinstance(h, DeviceHealth) else h
        topic = health_topic(self.root, h.device_id if isinstance(h, DeviceHealth) else device_id)
        self.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.asynccontextmanager
async def service(db: str, broker: Any, prefix: str) -> AsyncIterator[tuple[Running, Publisher]]:
    live = LiveSettings(uns_prefix=f"uns{prefix}", topic_root=prefix)
    async with run_service(db, broker, prefix, live=live) as running:
        pub = Publisher(broker.port, running.root)
        try:
            yield running, pub
        finally:
            pub.close()


async def health_until(ws: ClientConnection, device: str, done: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Read health messages until ``done(the device's newest view)``; returns that view."""
    async with asyncio.timeout(timeout):
        while True:
            msg = orjson.loads(await ws.recv())
            assert msg["type"] == "health", msg
            for v in msg["devices"]:
                if v["device_id"] == device and done(v):
                    return dict(v)


async def test_health_in_rest_and_on_the_live_stream(db: str, broker: Any, prefix: str) -> None:
    async with service(db, broker, prefix) as (running, pub):
        gw = SimGateway(broker.port, running.root, "gw-a")
        try:
            await until(lambda: "gw-a" in running.core.assigner.live(), 5, what="gw-a live")
            pub.send(report("press-1"))
            pub.send(report("oven-1", connected=False, breaker="open", last_error="connect refused",
                            last_error_ts=1, latency=None, consecutive_errors=3))
            c = running.client
            r = await until(lambda: _get(c, "/api/v1/devices/press-1/health"), 5, what="press-1's health")
            v = r.json()
            assert v["gateway"] == "gw-a" and v["connected"] is True and v["gateway_online"] is True
            assert v["stale"] is False and v["latency_ms"] == {"p50": 2.0, "p99": 5.0, "samples": 10,
                                                               "window_s": 60.0}
            assert v["path"] == "acme/berlin/stamping/line-1/press-1" and 0 <= v["age_s"] < 5
            await until(lambda: len(running.core.control.health.entries) == 2, 5, what="two reports")
            r = await c.get("/api/v1/health/devices")
            assert r.status_code == 200 and [i["device_id"] for i in r.json()["items"]] == ["oven-1", "press-1"]
            r = await c.get("/api/v1/health/devices", params={"connected": "false"})
            assert [(i["device_id"], i["breaker"], i["last_error"]) for i in r.json()["items"]] == \
                [("oven-1", "open", "connect refused")]
            assert (await c.get("/api/v1/health/devices", params={"gateway": "gw-b"})).json()["total"] == 0
            r = await c.get("/api/v1/devices/nothing/health")
            assert r.status_code == 404 and r.json()["field"] == "device_id"

            # a viewer watches one device on the live stream: its view first, then every change
            assert (await c.post("/api/v1/users", json={"name": "vi", "role": "viewer",
                                                        "password": "viewer-password-1"})).status_code == 201
            access, _ = await login(c, "vi", "viewer-password-1")
            assert (await c.get("/api/v1/health/devices", headers=bearer(access))).status_code == 200
            async with socket(running, access) as ws:
                await ws.send(orjson.dumps({"type": "subscribe", "devices": ["press-1"]}).decode())
                assert await recv(ws) == {"type": "subscribed", "paths": [], "devices": ["press-1"]}
                await health_until(ws, "press-1", lambda v: v["connected"])
                pub.send(report("press-1", connected=False, breaker="open", last_error="read timed out",
                                last_error_ts=2, errors=4))
                v = await health_until(ws, "press-1", lambda v: not v["connected"])
                assert v["breaker"] == "open" and v["last_error"] == "read timed out" and v["errors"] == 4
                pub.send(report("oven-1", polls=99))  # not watched: nothing comes for it
                pub.send(b"", "press-1")  # the device left its gateway
                v = await health_until(ws, "press-1", lambda v: v.get("removed") is True)
                assert v == {"device_id": "press-1", "removed": True}
                assert (await c.get("/api/v1/devices/press-1/health")).status_code == 404

                # every device; the current views first
                await ws.send(orjson.dumps({"type": "subscribe", "devices": ["*"]}).decode())
                assert (await recv(ws))["devices"] == ["*", "press-1"]
                v = await health_until(ws, "oven-1", lambda v: True)
                assert v["polls"] == 99

                # refused requests say which field; the socket stays
                for bad in ({"type": "subscribe", "devices": "press-1"}, {"type": "subscribe", "devices": ["a/b"]},
                            {"type": "subscribe", "devices": [f"d{i}" for i in range(17)]}):
                    await ws.send(orjson.dumps(bad).decode())
                    err = await recv(ws)
                    assert err["type"] == "error" and err["field"] == "devices", err
                await ws.send(orjson.dumps({"type": "unsubscribe", "devices": ["*", "press-1"]}).decode())
                assert await recv(ws) == {"type": "subscribed", "paths": []}
        finally:
            gw.close()


async def test_a_dead_gateways_devices_are_stale(db: str, broker: Any, prefix: str) -> None:
    async with service(db, broker, prefix) as (running, pub):
        gw = SimGateway(broker.port, running.root, "gw-a")
        await until(lambda: "gw-a" in running.core.assigner.live(), 5, what="gw-a live")
        pub.send(report("press-1", heartbeat_ms=60_000))
        async with socket(running) as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "devices": ["press-1"]}).decode())
            await recv(ws)
            v = await health_until(ws, "press-1", lambda v: True)
            assert v["stale"] is False and v["gateway_online"] is True
            gw.crash()  # its will: offline; its retained device report still says connected
            # a REST client sees it first: the live stream is told all the same
            await until(lambda: _stale(running.client, "press-1"), 10, what="press-1 stale over REST")
            v = await health_until(ws, "press-1", lambda v: v["stale"], timeout=10)
            assert v["gateway_online"] is False and v["connected"] is True
        r = await running.client.get("/api/v1/health/devices", params={"stale": "true"})
        assert [i["device_id"] for i in r.json()["items"]] == ["press-1"]

        # a report without a gateway status (a file-mode gateway) goes stale after 3 missed heartbeats
        pub.send(report("oven-1", gateway="gw-file", heartbeat_ms=300))
        r = await until(lambda: _get(running.client, "/api/v1/devices/oven-1/health"), 5, what="oven-1")
        assert r.json()["gateway_online"] is None
        await until(lambda: _stale(running.client, "oven-1"), 5, what="oven-1 stale after 0.9 s")
        # an offline report (a clean stop) is final, not stale
        pub.send(report("oven-1", gateway="gw-file", heartbeat_ms=300, state="offline", connected=False))
        await until(lambda: _state(running.client, "oven-1", "offline"), 5, what="oven-1 offline")
        assert not await _stale(running.client, "oven-1")


async def test_bad_reports_are_refused(db: str, broker: Any, prefix: str) -> None:
    async with service(db, broker, prefix) as (running, pub):
        store = running.core.control.health
        pub.send(b"{not json", "press-1")
        pub.send(encode_health(report("oven-1")), "press-1")  # the topic of another device
        pub.send(orjson.dumps({**orjson.loads(encode_health(report())), "schema": 2}), "press-1")
        await until(lambda: store.bad_messages == 3, 5, what="three bad reports")
        assert store.entries == {}
        pub.send(report("press-1"))
        await until(lambda: "press-1" in store.entries, 5, what="a good one after them")


async def _get(client: Any, url: str) -> Any:
    r = await client.get(url)
    return r if r.status_code == 200 else None


async def _stale(client: Any, device: str) -> bool:
    r = await client.get(f"/api/v1/devices/{device}/health")
    return r.status_code == 200 and bool(r.json()["stale"])


async def _state(client: Any, device: str, state: str) -> bool:
    r = await client.get(f"/api/v1/devices/{device}/health")
    return r.status_code == 200 and r.json()["state"] == state


async def test_a_retained_report_found_at_start_counts_its_age_from_its_time(db: str, broker: Any,
                                                                             prefix: str) -> None:
    pub = Publisher(broker.port, f"$t/{prefix}")  # run_service's control root
    try:
        hour_ago = int(time.time() * 1000) - 3_600_000
        pub.send(report("press-1", gateway="gw-gone", ts=hour_ago, heartbeat_ms=10_000))
        async with run_service(db, broker, prefix) as running:
            r = await until(lambda: _get(running.client, "/api/v1/devices/press-1/health"), 5, what="the report")
            v = r.json()
            assert v["stale"] is True and v["age_s"] >= 3600 and v["gateway_online"] is None
    finally:
        pub.send(b"", "press-1")
        pub.close()
