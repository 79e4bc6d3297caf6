"""Device health end to end: gateway_core assigns a device (created through the REST API) to a real gateway
(a process, core mode), which polls a simulated Modbus PLC and reports the device's health; gateway_core's
REST API and live WebSocket show it: connected with latencies, disconnected with the last error and the
breaker open while the PLC is stopped, connected again after; the device deleted: its retained report cleared;
the gateway SIGKILLed: its device's last report stale."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from devtools.local import free_port
from gateway.config import parse_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from proto.health import health_topic
from tests.gateway_core.test_health import health_until
from tests.gateway_core.test_live import recv, socket
from tests.support.core import run_service
from tests.support.daemons import gateway_env
from tests.support.health import retained_now
from tests.support.wait import until

pytestmark = pytest.mark.slow


def press(port: int) -> dict[str, Any]:
    return {"id": "press-1", "enterprise": "acme", "site": "berlin", "area": "stamping", "line": "line-1",
            "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port, "interval_ms": 100, "timeout_ms": 300,
            "breaker_failures": 2, "breaker_open_ms": 500,
            "tags": [{"name": "temp", "table": "holding", "address": 0, "type": "int16"}]}


async def test_health_of_a_real_gateways_device(tmp_path: Path, db: str, broker: Any, prefix: str, daemons: Any,
                                                bg_loop: Any) -> None:
    doc = press(free_port())
    plc = SimulatedPlc(parse_plant({"devices": [doc]}).devices[0], constants={"temp": 215})
    bg_loop.run(plc.start())
    gid = f"{prefix}-gw"
    try:
        async with run_service(db, broker, prefix) as running:
            gw = daemons("gateway", gateway_env(
                broker, tmp_path / "unused.toml", prefix, NEXUS_GATEWAY_CONTROL_ROOT=running.root,
                NEXUS_GATEWAY_CONFIG_SOURCE="core", NEXUS_GATEWAY_HEARTBEAT_S="0.5",
                NEXUS_GATEWAY_HEALTH_INTERVAL_S="0.5", NEXUS_GATEWAY_HEALTH_HEARTBEAT_S="1"))
            c = running.client
            await until(lambda: gid in running.core.assigner.live(), 20, what=lambda: f"the gateway\n{gw.output()}")
            assert (await c.post("/api/v1/devices", json=doc)).status_code == 201
            async with socket(running) as ws:
                await ws.send(orjson.dumps({"type": "subscribe", "devices": ["press-1"]}).decode())
                assert (await recv(ws))["devices"] == ["press-1"]
                v = await health_until(ws, "press-1", lambda v: v["connected"] and v["latency_ms"] is not None
                                       and v["latency_ms"]["samples"] >= 3, timeout=20)
                assert v["gateway"] == gid and v["assigned_gateway"] == gid and v["gateway_online"] is True
                assert v["state"] == "polling" and v["breaker"] == "closed" and not v["stale"]
                assert 0 < v["latency_ms"]["p50"] <= v["latency_ms"]["p99"] < 300 and v["errors"] == 0
                r = await c.get("/api/v1/devices/press-1/health")
                assert r.status_code == 200 and r.json()["connected"] is True and r.json()["polls"] >= 3
                item = (await c.get("/api/v1/devices")).json()["items"][0]  # the device list carries it too
                assert item["id"] == "press-1" and item["health"]["connected"] is True
                assert item["health"]["gateway"] == item["gateway"] == gid

                bg_loop.run(plc.stop())
                v = await health_until(ws, "press-1", lambda v: not v["connected"] and v["breaker"] == "open",
                                       timeout=15)
                assert v["last_error"] and v["errors"] >= 2 and v["last_error_ts"] is not None
                r = await c.get("/api/v1/health/devices", params={"connected": "false"})
                assert [i["device_id"] for i in r.json()["items"]] == ["press-1"]
                bg_loop.run(plc.start())
                v = await health_until(ws, "press-1", lambda v: v["connected"] and v["breaker"] == "closed",
                                       timeout=15)
                assert v["last_error"]  # the newest failure stays, with its time

                # deleted: the gateway stops it and clears its retained report
                assert (await c.delete("/api/v1/devices/press-1")).status_code == 204
                v = await health_until(ws, "press-1", lambda v: v.get("removed") is True, timeout=15)
                assert (await c.get("/api/v1/devices/press-1/health")).status_code == 404
                topic = health_topic(running.root, "press-1")
                assert topic not in await asyncio.to_thread(retained_now, broker.port, running.root)

                # back, then the gateway dies without a word: its will, and the report goes stale
                assert (await c.post("/api/v1/devices", json=doc)).status_code == 201
                await health_until(ws, "press-1", lambda v: v.get("connected") is True, timeout=20)
                gw.kill()
                v = await health_until(ws, "press-1", lambda v: v.get("stale") is True, timeout=15)
                assert v["gateway_online"] is False and v["state"] == "polling"
    finally:
        bg_loop.run(plc.stop())
