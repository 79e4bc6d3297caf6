"""gateway_core's live stream (GET /api/v1/live) against a real mosquitto: batch messages and retained per-tag
state messages as the gateways publish them (proto.points encode_batch / encode_point on proto.uns topics), the
whole service on a free port, a real WebSocket client (websockets): current values of a subscribed subtree,
changes batched and coalesced, changes from batches alone (the per-tag topics only read for first values) and
from per-tag messages alone (live.changes = tags), old points changing nothing, bounded
subscriptions, credentials checked at the start and again (expiry, logout, role)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway_core.live import FUTURE_MS, LiveHub
from gateway_core.settings import LiveSettings
from nexus.mqtt import Message
from proto.points import Point, Status, encode_batch, encode_point
from proto.uns import DevicePath, batch_topic
from tests.gateway_core.users_support import auth_settings, bearer, login
from tests.support.core import ADMIN_KEY, Running, run_service
from tests.support.wait import until

PRESS = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
OVEN = DevicePath("acme", "berlin", "paint", "line-2", "oven-1")
PASSWORD = "viewer-password-1"


class Plant:
    """A plain paho publisher of what a gateway sends for a reading: a batch message (on ``root``) and the
    retained per-tag state message (statetopics, on ``prefix``)."""

    def __init__(self, port: int, prefix: str, root: str) -> None:
        self.prefix = prefix
        self.root = root
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def topic(self, device: DevicePath, tag: str) -> str:
        return device.tag(tag).topic(self.prefix)

    def publish(self, device: DevicePath, p: Point, *, batch: bool = True, tag_topic: bool = True) -> None:
        if batch:
            self.client.publish(batch_topic(device, self.root), encode_batch([p]), qos=1).wait_for_publish(5)
        if tag_topic:
            self.client.publish(self.topic(device, p.tag), encode_point(p), qos=1, retain=True).wait_for_publish(5)

    def clear(self, device: DevicePath, tag: str) -> None:
        self.client.publish(self.topic(device, tag), b"", qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.asynccontextmanager
async def live_service(db: str, broker: Any, prefix: str, **live: Any) -> AsyncIterator[tuple[Running, Plant]]:
    plant = Plant(broker.port, f"uns{prefix}", prefix)
    try:
        access_ttl = live.pop("access_ttl", 900.0)
        settings = LiveSettings(uns_prefix=f"uns{prefix}", topic_root=prefix, **live)
        async with run_service(db, broker, prefix, live=settings, auth=auth_settings(access_ttl=access_ttl)) as running:
            yield running, plant
    finally:
        plant.close()


@contextlib.asynccontextmanager
async def socket(running: Running, token: str | None = ADMIN_KEY) -> AsyncIterator[ClientConnection]:
    async with connect(f"ws://127.0.0.1:{running.service.port}/api/v1/live", open_timeout=5) as ws:
        if token is not None:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            ready = await recv(ws)
            assert ready["type"] == "ready", ready
        yield ws


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        out: dict[str, Any] = orjson.loads(await ws.recv())
    return out


async def values_until(ws: ClientConnection, done: Callable[[dict[str, dict[str, Any]]], bool],
                       timeout: float = 5.0) -> tuple[dict[str, dict[str, Any]], int]:
    """Read value messages until ``done(latest state per path)``; returns it and how many messages came."""
    seen: dict[str, dict[str, Any]] = {}
    messages = 0
    async with asyncio.timeout(timeout):
        while not done(seen):
            msg = orjson.loads(await ws.recv())
            assert msg["type"] == "values", msg
            messages += 1
            seen.update({v["path"]: v for v in msg["values"]})
    return seen, messages


async def subscribe(ws: ClientConnection, *paths: str, kind: str = "subscribe") -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": kind, "paths": list(paths)}).decode())
    return await recv(ws)


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


@pytest.mark.parametrize("changes", ["batches", "tags"])
async def test_live_values_of_a_subtree(db: str, broker: Any, prefix: str, changes: str) -> None:
    async with live_service(db, broker, prefix, changes=changes) as (running, plant):
        plant.publish(PRESS, Point("temp", 21.5, 1_000, Status.GOOD, unit="degC"))
        plant.publish(PRESS, Point("state", None, 1_000, Status.BAD_TIMEOUT, reason="timeout"))
        plant.publish(OVEN, Point("temp", 180.0, 1_000, Status.GOOD, unit="degC"))
        r = await running.client.post("/api/v1/users", json={"name": "vi", "role": "viewer", "password": PASSWORD})
        assert r.status_code == 201
        access, _ = await login(running.client, "vi", PASSWORD)

        async with socket(running, access) as ws:
            assert await subscribe(ws, "acme/berlin/stamping/line-1/press-1") == {
                "type": "subscribed", "paths": ["acme/berlin/stamping/line-1/press-1"]}
            press = "acme/berlin/stamping/line-1/press-1"
            seen, _ = await values_until(ws, lambda s: len(s) == 2)
            assert seen == {
                f"{press}/temp": {"path": f"{press}/temp", "value": 21.5, "ts": 1_000, "q": 0, "quality": "good",
                                  "unit": "degC"},
                f"{press}/state": {"path": f"{press}/state", "value": None, "ts": 1_000, "q": Status.BAD_TIMEOUT,
                                   "quality": "bad", "reason": "timeout"},
            }
            # twenty changes in a burst: coalesced into a few messages, the last value arrives
            for i in range(20):
                plant.publish(PRESS, Point("temp", 22.0 + i, 2_000 + i, Status.GOOD, unit="degC"))
            plant.publish(OVEN, Point("temp", 181.0, 2_000, Status.GOOD, unit="degC"))  # not subscribed
            seen, messages = await values_until(ws, lambda s: s.get(f"{press}/temp", {}).get("ts") == 2_019)
            assert seen[f"{press}/temp"]["value"] == 41.0 and messages < 20
            assert set(seen) == {f"{press}/temp"}

            # a second subtree: its current value first
            line2 = "acme/berlin/paint/line-2"
            assert (await subscribe(ws, line2))["paths"] == [line2, press]
            seen, _ = await values_until(ws, lambda s: f"{line2}/oven-1/temp" in s)
            assert seen[f"{line2}/oven-1/temp"]["value"] == 181.0
            # unsubscribed: the press's changes stop (the oven's change after it comes alone)
            assert (await subscribe(ws, press, kind="unsubscribe"))["paths"] == [line2]
            plant.publish(PRESS, Point("temp", 99.0, 3_000, Status.GOOD, unit="degC"))
            plant.publish(OVEN, Point("temp", 182.0, 3_000, Status.UNCERTAIN, unit="degC"))
            seen, _ = await values_until(ws, lambda s: f"{line2}/oven-1/temp" in s)
            assert set(seen) == {f"{line2}/oven-1/temp"} and seen[f"{line2}/oven-1/temp"]["quality"] == "uncertain"
            if changes == "batches":
                return  # a per-tag topic cleared is seen only while subscribed to them: with tags
            # a cleared retained topic: the tag is gone
            plant.clear(OVEN, "temp")
            seen, _ = await values_until(ws, lambda s: f"{line2}/oven-1/temp" in s)
            assert seen[f"{line2}/oven-1/temp"] == {"path": f"{line2}/oven-1/temp", "removed": True}


async def test_live_changes_from_batches_alone(db: str, broker: Any, prefix: str) -> None:
    """changes = batches: the first value from the retained per-tag topic (read by a client of its own at connect),
    every change from batch messages alone; a per-tag message after the read does not even arrive; a point older
    than the newest seen (a replayed spool) and the same state again change nothing; a bad batch is counted."""
    press = "acme/berlin/stamping/line-1/press-1"
    before = Plant(broker.port, f"uns{prefix}", prefix)
    try:
        before.publish(PRESS, Point("temp", 20.0, 1_000, unit="degC"), batch=False)
    finally:
        before.close()
    async with live_service(db, broker, prefix, snapshot_interval=3600.0) as (running, plant):
        live = running.core.live
        assert live is not None
        await until(lambda: live.snapshots >= 1, 10, 0.02, what="the retained per-tag topics read")
        assert live.states[f"{press}/temp"]["value"] == 20.0
        async with socket(running) as ws:
            await subscribe(ws, press)
            seen, _ = await values_until(ws, lambda s: f"{press}/temp" in s)
            assert seen[f"{press}/temp"]["value"] == 20.0 and seen[f"{press}/temp"]["ts"] == 1_000

            def mark(value: int) -> Callable[[dict[str, dict[str, Any]]], bool]:
                """A batch-only point of tag 'mark': once it arrived, so did everything published before it."""
                plant.publish(PRESS, Point("mark", value, 10_000 + value), tag_topic=False)
                return lambda s: s.get(f"{press}/mark", {}).get("value") == value

            plant.publish(PRESS, Point("temp", 50.0, 2_000, unit="degC"), batch=False)  # per-tag only: unread
            seen, _ = await values_until(ws, mark(1))
            assert set(seen) == {f"{press}/mark"} and live.states[f"{press}/temp"]["value"] == 20.0

            plant.publish(PRESS, Point("temp", 21.0, 3_000, unit="degC"), tag_topic=False)
            seen, _ = await values_until(ws, lambda s: f"{press}/temp" in s)
            assert seen[f"{press}/temp"] == {"path": f"{press}/temp", "value": 21.0, "ts": 3_000, "q": 0,
                                             "quality": "good", "unit": "degC"}
            plant.publish(PRESS, Point("temp", 99.0, 2_500, unit="degC"), tag_topic=False)  # older: a spool replay
            plant.publish(PRESS, Point("temp", 21.0, 4_000, unit="degC"), tag_topic=False)  # the same state again
            seen, _ = await values_until(ws, mark(2))
            assert set(seen) == {f"{press}/mark"}
            assert live.states[f"{press}/temp"]["value"] == 21.0 and live.states[f"{press}/temp"]["ts"] == 3_000
            plant.publish(PRESS, Point("temp", 21.0, 5_000, Status.UNCERTAIN, unit="degC"), tag_topic=False)
            seen, _ = await values_until(ws, lambda s: f"{press}/temp" in s)
            assert seen[f"{press}/temp"]["quality"] == "uncertain" and seen[f"{press}/temp"]["ts"] == 5_000

            bad = live.bad_messages
            plant.client.publish(batch_topic(PRESS, prefix), b"not json", qos=1).wait_for_publish(5)
            plant.client.publish(batch_topic(PRESS, prefix), b'{"points": [{"v": 1}]}', qos=1).wait_for_publish(5)
            await values_until(ws, mark(3))
            assert live.bad_messages == bad + 2
            assert live.snapshots == 1

            # a read that finds a tag's retained state gone (a broker restarted without persistence keeps none)
            # removes nothing: the tag keeps its state until it changes
            plant.clear(PRESS, "temp")
            settings = running.service.settings.mqtt
            assert await live.read_retained(settings, "test-reader", asyncio.Event()) is True
            assert live.snapshots == 2 and live.states[f"{press}/temp"]["quality"] == "uncertain"
            stopped = asyncio.Event()
            stopped.set()
            assert await live.read_retained(settings, "test-reader", stopped) is False  # stop ends a read at once


async def test_live_subscriptions_are_bounded(db: str, broker: Any, prefix: str) -> None:
    async with live_service(db, broker, prefix, max_subscriptions=2, max_tags=2, max_clients=2) as (running, plant):
        for tag in ("a", "b", "c"):
            plant.publish(PRESS, Point(tag, 1, 1_000))
        live = running.core.live
        assert live is not None
        await until(lambda: len(live.states) == 3, 5, 0.02, what="the retained states")
        async with socket(running) as ws:
            r = await subscribe(ws, "acme/berlin/stamping")
            assert r["type"] == "error" and r["field"] == "paths" and "3 tags under them, at most 2" in r["detail"]
            r = await subscribe(ws, "acme", "acme/x", "acme/y")
            assert r["type"] == "error" and "1..2 UNS paths" in r["detail"]
            for bad in ("acme/+/x", "", "a/b/c/d/e/f/g", "$SYS"):
                r = await subscribe(ws, bad)
                assert r["type"] == "error" and r["field"] == "paths", (bad, r)
            await ws.send("not json")
            assert (await recv(ws))["field"] == "type"
            await ws.send(orjson.dumps({"type": "publish"}).decode())
            assert (await recv(ws))["field"] == "type"
            press = "acme/berlin/stamping/line-1/press-1"
            assert (await subscribe(ws, f"{press}/a", f"{press}/b"))["type"] == "subscribed"
            seen, _ = await values_until(ws, lambda s: len(s) == 2)
            assert set(seen) == {f"{press}/a", f"{press}/b"}
            r = await subscribe(ws, f"{press}/c")
            assert r["type"] == "error" and "at most 2 subscriptions" in r["detail"]
            async with socket(running) as second:
                metrics = (await running.client.get("/metrics")).text
                assert "nexus_core_live_clients 2.0" in metrics and "nexus_core_live_tags 3.0" in metrics
                async with connect(f"ws://127.0.0.1:{running.service.port}/api/v1/live") as third:
                    code, reason = await closed_with(third)
                    assert code == 1013 and "too many live clients" in reason
                await second.close()


async def test_live_credentials(db: str, broker: Any, prefix: str) -> None:
    async with live_service(db, broker, prefix, auth_timeout=0.5, recheck_interval=0.5,
                            access_ttl=2.0) as (running, _):
        async with socket(running, token=None) as ws:
            assert await closed_with(ws) == (4408, 'send {"type": "auth", "token": ...} first')
        async with socket(running, token=None) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": "nxk_wrong"}).decode())
            assert await closed_with(ws) == (4401, "unknown API key")
        async with socket(running, token=None) as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "paths": ["acme"]}).decode())
            code, _ = await closed_with(ws)
            assert code == 4401
        r = await running.client.post("/api/v1/users", json={"name": "vi", "role": "viewer", "password": PASSWORD})
        assert r.status_code == 201
        # an access token's expiry ends the socket, unless a new one is sent before it
        access, _ = await login(running.client, "vi", PASSWORD)
        async with socket(running, access) as ws:
            assert await closed_with(ws, timeout=6) == (4401, "access token expired")
        # a logout ends it at the next check
        access, _ = await login(running.client, "vi", PASSWORD)
        async with socket(running, access) as ws:
            running.client.cookies.clear()
            r = await running.client.post("/api/v1/auth/logout", headers=bearer(access))
            assert r.status_code == 204
            code, reason = await closed_with(ws)
            assert code == 4401 and "session ended" in reason
        # a role below live.role
        async with live_service(db, broker, f"{prefix}r", role="operator") as (other, _), \
                socket(other, token=None) as ws:
            access, _ = await login(other.client, "vi", PASSWORD)
            await ws.send(orjson.dumps({"type": "auth", "token": access}).decode())
            code, reason = await closed_with(ws)
            assert code == 4403 and "role 'viewer' of user 'vi'" in reason


def test_a_point_far_ahead_of_the_clock_holds_its_tag_for_seconds_only() -> None:
    """A device clock that ran an hour ahead and was set back: its point counts as newest only up to
    live.FUTURE_MS ahead of our clock, so the next correct points are taken after that, not in an hour."""
    hub = LiveHub(LiveSettings())
    topic = batch_topic(PRESS, "nexus")
    path = f"{PRESS.path}/temp"
    now = time.time_ns() // 1_000_000

    def batch(value: float, ts: int) -> None:
        hub.on_message(Message(topic, encode_batch([Point("temp", value, ts)]), 0, False, 0, 1))

    batch(1.0, now + 3_600_000)
    batch(2.0, now - 1_000)  # older than the clamped newest: not taken
    assert hub.states[path]["value"] == 1.0
    batch(3.0, now + FUTURE_MS + 1_000)  # past the clamp: taken, though an hour before the bad point's ts
    assert hub.states[path]["value"] == 3.0
