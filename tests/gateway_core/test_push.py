"""gateway_core with a real mosquitto: config pushed after COMMIT (device message, tombstone), sync
request/response, sharding across simulated gateways (death by will and by missed heartbeats,
release-before-assign when one joins) and tag writes answered over MQTT. The service runs in the
test's event loop (uvicorn on a free port, real MQTT client, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from proto import commands as pcmd
from proto import config as pc
from tests.support.core import Recorder, Running, SimGateway, device_doc, run_service
from tests.support.db import query
from tests.support.wait import until


@pytest.fixture
def closing() -> Iterator[list[Recorder]]:
    clients: list[Recorder] = []
    yield clients
    for c in clients:
        c.close()


async def test_push_after_commit_and_tombstone(service: Running, closing: list[Recorder]) -> None:
    rec = Recorder(service.broker_port, [pc.device_filter(service.root)])
    closing.append(rec)
    r = await service.client.post("/api/v1/devices", json=device_doc())
    assert r.status_code == 201
    msgs = await until(lambda: rec.device_messages(service.root), 5, what="device message")
    assert msgs == [pc.DeviceMessage(revision=1, device_id="press-1", gateway=None, device=device_doc())]
    topic = rec.snapshot()[0][1]
    assert topic == f"{service.root}/config/devices/press-1"
    # what was pushed is what is committed
    assert query(service.dsn, "SELECT doc, revision FROM core.devices") == [(device_doc(), 1)]

    await service.client.put("/api/v1/devices/press-1", json=device_doc(interval_ms=200))
    await service.client.delete("/api/v1/devices/press-1")
    await until(lambda: len(rec.device_messages(service.root)) >= 3, 5, what="3 messages")
    msgs = rec.device_messages(service.root)
    assert msgs[1].revision == 2 and msgs[1].device == device_doc(interval_ms=200)
    assert msgs[2] == pc.DeviceMessage(
        revision=3, device_id="press-1", gateway=None, device=None
    )  # tombstone
    assert not [m for m in rec.snapshot() if m[3]]  # config messages are not retained


async def test_sync_request_gets_the_gateways_devices(service: Running, closing: list[Recorder]) -> None:
    gw = SimGateway(service.broker_port, service.root, "gw-a")
    closing.append(gw)
    plant = {
        "plant": {"enterprise": "acme", "site": "berlin", "area": "a1", "line": "l1"},
        "devices": [
            {"id": f"d{i}", "host": "127.0.0.1", "tags": [{"name": "t", "address": i}]} for i in range(3)
        ],
    }
    r = await service.client.post("/api/v1/import", json=plant)
    assert r.status_code == 200
    await until(lambda: gw.polling == {"d0", "d1", "d2"}, 5, what="gw-a polls all devices")

    rec = Recorder(service.broker_port, [pc.sync_response_topic(service.root, "gw-a")])
    closing.append(rec)
    rec.client.publish(
        pc.sync_request_topic(service.root), pc.encode_sync_request(pc.SyncRequest(gateway="gw-a")), qos=1
    )
    msgs = await until(rec.snapshot, 5, what="sync response")
    resp = pc.decode_sync_response(msgs[0][2])
    assert resp.revision == 1
    assert sorted(d["id"] for d in resp.devices) == ["d0", "d1", "d2"]
    assert resp.devices[0] == {
        "id": "d0",
        "enterprise": "acme",
        "site": "berlin",
        "area": "a1",
        "line": "l1",
        "host": "127.0.0.1",
        "tags": [{"name": "t", "address": 0}],
    }
    # an unknown gateway gets an empty set
    rec2 = Recorder(service.broker_port, [pc.sync_response_topic(service.root, "gw-x")])
    closing.append(rec2)
    rec2.client.publish(
        pc.sync_request_topic(service.root), pc.encode_sync_request(pc.SyncRequest(gateway="gw-x")), qos=1
    )
    msgs = await until(rec2.snapshot, 5, what="sync response for gw-x")
    resp = pc.decode_sync_response(msgs[0][2])
    assert (resp.revision, resp.devices) == (1, []) and resp.seq > 0

    r = await service.client.get("/api/v1/gateways/gw-a")
    g = r.json()
    assert g["online"] and g["capacity"] == 100 and g["assigned"] == ["d0", "d1", "d2"]
    assert g["polling"] == ["d0", "d1", "d2"] and g["applied_revision"] == 1 and g["lag"] == 0


def pollers(gateways: list[SimGateway]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in gateways:
        for d in g.polling:
            out.setdefault(d, []).append(g.id)
    return out


async def import_devices(service: Running, n: int) -> list[str]:
    ids = [f"dev-{i:02d}" for i in range(n)]
    plant = {
        "plant": {"enterprise": "acme", "site": "s", "area": "a", "line": "l"},
        "devices": [{"id": d, "host": "127.0.0.1", "tags": [{"name": "t", "address": 0}]} for d in ids],
    }
    r = await service.client.post("/api/v1/import", json=plant)
    assert r.status_code == 200
    return ids


async def test_dead_gateways_devices_move_within_the_heartbeat_timeout(
    service: Running, closing: list[Recorder]
) -> None:
    a = SimGateway(service.broker_port, service.root, "gw-a")
    b = SimGateway(service.broker_port, service.root, "gw-b")
    c = SimGateway(service.broker_port, service.root, "gw-c")
    closing.extend([a, b, c])
    await until(lambda: len(service.core.assigner.live()) == 3, 5, what="three live gateways")
    ids = await import_devices(service, 24)
    gws = [a, b, c]
    await until(
        lambda: sorted(pollers(gws)) == ids and all(len(p) == 1 for p in pollers(gws).values()),
        10,
        what="every device polled by exactly one gateway",
    )
    assert a.polling and b.polling and c.polling
    r = await service.client.get("/api/v1/devices", params={"gateway": "gw-b", "limit": 1000})
    assert sorted(d["id"] for d in r.json()["items"]) == sorted(b.polling)
    assert all(d["gateway"] == "gw-b" for d in r.json()["items"])

    # death by last will: gw-b's devices move at once, the others stay where they are
    on_a, on_c, on_b = set(a.polling), set(c.polling), set(b.polling)
    t0 = time.monotonic()
    b.crash()
    await until(lambda: set(a.polling) | set(c.polling) == set(ids), 5, what="gw-b's devices re-assigned")
    assert time.monotonic() - t0 < service.core.settings.heartbeat_timeout
    assert on_a <= a.polling and on_c <= c.polling and not (a.polling & c.polling)
    r = await service.client.get("/api/v1/gateways", params={"online": False})
    assert [g["id"] for g in r.json()["items"]] == ["gw-b"] and r.json()["items"][0]["assigned"] == []
    assert on_b

    # death by silence: gw-c stops its heartbeat but stays connected
    on_c = set(c.polling)
    t0 = time.monotonic()
    c.heartbeat = False
    await until(lambda: set(a.polling) == set(ids), 6, what="gw-c's devices re-assigned to gw-a")
    took = time.monotonic() - t0
    assert took < service.core.settings.heartbeat_timeout + 1.0, took
    assert on_c


async def test_join_releases_before_assigning(service: Running, closing: list[Recorder]) -> None:
    timeline = Recorder(service.broker_port, [pc.device_filter(service.root), pc.status_filter(service.root)])
    closing.append(timeline)
    a = SimGateway(service.broker_port, service.root, "gw-a")
    closing.append(a)
    ids = await import_devices(service, 16)
    await until(lambda: a.polling == set(ids), 5, what="gw-a polls everything")
    b = SimGateway(service.broker_port, service.root, "gw-b")
    closing.append(b)
    await until(
        lambda: b.polling and set(a.polling) | set(b.polling) == set(ids) and not (a.polling & b.polling),
        10,
        what="gw-b took its share",
    )
    moved = set(b.polling)
    # the recorder and gw-a are other clients: let their copies of the last messages arrive too
    await until(
        lambda: sum(b'"gateway":"gw-b"' in p for _, _, p, _ in timeline.snapshot()) >= len(moved),
        5,
        what="the recorder saw every assignment to gw-b",
    )

    def seen_by_a(d: str) -> list[str | None]:
        return [gw for kind, dev, gw in a.order if kind == "device" and dev == d]

    await until(
        lambda: all(seen_by_a(d)[-1:] == ["gw-b"] for d in moved), 5, what="gw-a saw every assignment to gw-b"
    )

    # replay what the broker delivered, in order: a device is never named for gw-b while gw-a's
    # latest status still lists it, and every moved device was released first
    status: dict[str, set[str]] = {}
    seq: dict[str, list[str | None]] = {}
    for _, topic, payload, _ in timeline.snapshot():
        if "/status/gateways/" in topic:
            st = pc.decode_status(payload)
            status[st.gateway] = set(st.devices) if st.online else set()
            continue
        msg = pc.decode_device(payload)
        seq.setdefault(msg.device_id, []).append(msg.gateway)
        if msg.gateway == "gw-b":
            assert msg.device_id not in status.get("gw-a", set()), f"{msg.device_id} still polled by gw-a"
    for d in ids:
        assert seq[d][-3:] == ["gw-a", None, "gw-b"] if d in moved else seq[d][-1] == "gw-a", (d, seq[d])
    # and gw-a's own view: for each moved device, the release came before gw-b was named
    for d in moved:
        assert seen_by_a(d)[-2:] == [None, "gw-b"], (d, seen_by_a(d))


async def test_tag_write_is_answered_over_mqtt(service: Running, closing: list[Recorder]) -> None:
    a = SimGateway(service.broker_port, service.root, "gw-a")
    closing.append(a)
    r = await service.client.post("/api/v1/keys", json={"name": "op", "role": "operator"})
    op = {"Authorization": f"Bearer {r.json()['key']}"}
    await service.client.post("/api/v1/devices", json=device_doc())
    await until(lambda: a.polling == {"press-1"}, 5, what="gw-a polls press-1")

    seen: list[Any] = []

    class Responder(Recorder):
        def on_message(self, msg: Any) -> None:
            req = pcmd.decode_request(msg.payload)
            seen.append((msg.topic, req))
            device, tag = pcmd.parse_set_topic(service.root, msg.topic) or ("", "")
            self.client.publish(
                pcmd.response_topic(service.root, device, tag),
                pcmd.encode_response(req.request_id, value=req.value, ts=1),
                qos=1,
            )

    responder = Responder(service.broker_port, [pcmd.set_filter(service.root)])
    closing.append(responder)
    r = await service.client.post(
        "/api/v1/devices/press-1/tags/setpoint/write", json={"value": 42}, headers=op
    )
    assert r.status_code == 200, r.text
    topic, req = seen[0]
    assert topic == f"{service.root}/cmd/press-1/setpoint/set" and req.value == 42
    assert r.json() == {"schema": 1, "request_id": req.request_id, "ok": True, "value": 42, "ts": 1}

    responder.close()
    closing.remove(responder)
    r = await service.client.post(
        "/api/v1/devices/press-1/tags/setpoint/write", json={"value": 1}, headers=op
    )
    assert r.status_code == 504 and r.json()["field"] == "timeout"
    assert orjson.loads(orjson.dumps(r.json()))["detail"].startswith(
        "no response to the write of press-1/setpoint"
    )


async def test_an_offline_gateway_is_forgotten_and_its_retained_status_cleared(
    db: str, broker: Any, prefix: str, closing: list[Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with run_service(db, broker, prefix, heartbeat_timeout=0.8, forget_after=1.0) as service:
        statuses = Recorder(service.broker_port, [pc.status_filter(service.root)])
        devices = Recorder(service.broker_port, [pc.device_filter(service.root)])
        a = SimGateway(service.broker_port, service.root, "gw-a", interval=0.2)
        b = SimGateway(service.broker_port, service.root, "gw-b", interval=0.2)
        closing.extend([statuses, devices, a, b])
        ids = await import_devices(service, 12)
        await until(
            lambda: set(a.polling) | set(b.polling) == set(ids) and a.polling and b.polling,
            10,
            what="both gateways poll their share",
        )
        b_topic = pc.status_topic(service.root, "gw-b")

        b.crash()  # the broker publishes gw-b's retained will
        await until(lambda: a.polling == set(ids), 5, what="gw-b's devices moved to gw-a")

        async def listed() -> list[str]:
            r = await service.client.get("/api/v1/gateways")
            return [g["id"] for g in r.json()["items"]]

        t0 = time.monotonic()
        assert await listed() == ["gw-a", "gw-b"]
        r = await service.client.get("/api/v1/gateways/gw-b")
        assert r.json()["online"] is False and r.json()["assigned"] == []
        sent = len(devices.device_messages(service.root))

        async def unlisted() -> bool:
            return "gw-b" not in await listed()

        await until(unlisted, 5, what="gw-b no longer listed")
        assert time.monotonic() - t0 > 0.5  # not at once: forget_after (1 s) after it went offline
        assert (await service.client.get("/api/v1/gateways/gw-b")).status_code == 404
        # the service cleared the retained status: a zero-length message on gw-b's topic
        await until(
            lambda: [p for _, t, p, _ in statuses.snapshot() if t == b_topic][-1:] == [b""], 5, what="the clear"
        )
        # a fresh subscriber (e.g. the service after a restart) gets gw-a's retained status, none of gw-b
        fresh = Recorder(service.broker_port, [pc.status_filter(service.root)])
        closing.append(fresh)
        await until(lambda: any(r for _, _, _, r in fresh.snapshot()), 5, what="gw-a's retained status")
        await asyncio.sleep(0.5)
        assert {t for _, t, _, _ in fresh.snapshot()} == {pc.status_topic(service.root, "gw-a")}
        # forgetting moved nothing: gw-a kept everything, no device message was sent for it
        assert a.polling == set(ids) and len(devices.device_messages(service.root)) == sent
        # the service heard its own empty status as nothing, not as a bad message
        assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING and "bad" in rec.message]
        assert "gateway gw-b offline for more than 1 s: forgotten" in caplog.text

        # gw-b comes back: it re-announces itself and gets its share again
        b2 = SimGateway(service.broker_port, service.root, "gw-b", interval=0.2)
        closing.append(b2)
        await until(
            lambda: (
                b2.polling and set(a.polling) | set(b2.polling) == set(ids) and not a.polling & b2.polling
            ),
            10,
            what="gw-b polls its share again",
        )
        r = await service.client.get("/api/v1/gateways", params={"online": True})
        assert [g["id"] for g in r.json()["items"]] == ["gw-a", "gw-b"]
