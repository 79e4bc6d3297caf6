"""deploy/mosquitto/ as shipped, in a real mosquitto: the config loads (TLS, password file, ACL file), each
role may publish and read what it needs and is refused the rest, and real daemons work through it: the
normalizer (its own user, TLS), ingestion (a gateway's batch in, the row in PostgreSQL, the
confirmation back to that gateway only), and a gateway with gateway_core (the device's health report and
its values in gateway_core's REST API and live stream, neither daemon refused a publish or dropped)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from devtools.local import free_port
from gateway.config import parse_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from gateway_core.settings import DbSettings, HttpSettings, Settings
from nexus.common import MqttSettings
from nexus.mqtt import Message, MqttClient, MqttError
from proto import DevicePath, Point, batch_topic, decode_batch, encode_batch
from proto.config import DEFAULT_CONTROL_ROOT
from proto.delivery import ack_topic, decode_ack
from proto.health import health_filter, health_topic
from proto.uns import batch_filter
from tests.gateway_core.test_health import health_until
from tests.gateway_core.test_live import recv, socket, subscribe, values_until
from tests.gateway_core.test_live_gateway import quality_of
from tests.nexus.certs import Certs
from tests.nexus.example_broker import PASSWORDS, ExampleBroker, example_broker
from tests.support.core import ADMIN, ADMIN_KEY, Running, start_service
from tests.support.daemons import http_get
from tests.support.db import query
from tests.support.wait import until, wait_for

DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
BATCH = batch_topic(DEVICE)  # nexus/batch/v1/acme/berlin/stamping/line-1/press-1
TAG = DEVICE.tag("temp").topic()  # acme/berlin/stamping/line-1/press-1/temp: the retained per-tag UNS topic
HEALTH = health_topic(DEFAULT_CONTROL_ROOT, "press-1")  # $nexus/status/devices/press-1
T0 = 1_790_000_000_000
#: the tests' own user, beside the example's roles: writes third-party input, reads all output
TESTER = "\nuser tester\ntopic write raw/#\ntopic read nexus/#\n"
IDS = itertools.count()


def settings(b: ExampleBroker, user: str) -> MqttSettings:
    return MqttSettings(port=b.port, username=user, password=PASSWORDS[user], ca_file=b.ca_file,
                        reconnect_min=0.05, reconnect_max=0.2)


@contextlib.asynccontextmanager
async def client(b: ExampleBroker, user: str, subscriptions: Sequence[str] = (),
                 got: list[Message] | None = None) -> AsyncIterator[MqttClient]:
    stop = asyncio.Event()
    c = MqttClient(settings(b, user), client_id=f"{user}-{next(IDS)}",  # one id each: a second one kicks the first
                   subscriptions=[(t, 1) for t in subscriptions], on_message=got.append if got is not None else None)
    task = asyncio.create_task(c.run_loop(stop))
    try:
        await c.wait_connected(5)
        await until(lambda: not c._sub_mids, 5, what="SUBACK")
        yield c
    finally:
        stop.set()
        await task


#: (user, topic) each role must be able to publish
ALLOWED = [
    ("gw-a", BATCH), ("gw-a", "nexus/windows/v1/acme/berlin/stamping/line-1/press-1"),
    ("gw-a", "nexus/events/v1/acme/berlin/stamping/line-1/press-1"),
    ("gw-a", "nexus/alarms/v1/acme/berlin/stamping/line-1/press-1/temp/high"),
    ("gw-a", "acme/berlin/stamping/line-1/press-1/temp"), ("gw-a", "$nexus/status/gateways/gw-a"),
    ("gw-a", "$nexus/config/sync/request"), ("gw-a", "$nexus/cmd/press-1/setpoint/response"),
    # device health (retained): any device, since gateway_core hands devices between gateways at run time
    ("gw-a", HEALTH), ("gw-b", HEALTH), ("gw-b", "$nexus/status/devices/oven-2"),
    ("ingestion", "nexus/ack/v1/gw-a"),
    ("core", "$nexus/config/devices/press-1"), ("core", "$nexus/config/sync/response/gw-a"),
    ("core", "$nexus/status/gateways/gw-a"), ("core", "$nexus/cmd/press-1/setpoint/set"),
    ("normalizer", BATCH), ("normalizer", "nexus/windows/v1/acme/berlin/stamping/line-1/press-1"),
    ("normalizer", "nexus/deadletter/v1/normalizer/nz-1"), ("normalizer", "raw/ack/v1/gw-a"),
    # Sparkplug B: the gateway as edge node gw-a of group plant1, ingestion as the primary host "nexus"
    ("gw-a", "spBv1.0/plant1/NBIRTH/gw-a"), ("gw-a", "spBv1.0/plant1/NDEATH/gw-a"),
    ("gw-a", "spBv1.0/plant1/DBIRTH/gw-a/press-1"), ("gw-a", "spBv1.0/plant1/DDATA/gw-a/press-1"),
    ("gw-a", "spBv1.0/plant1/DDEATH/gw-a/press-1"), ("gw-b", "spBv1.0/plant1/DDATA/gw-b/press-2"),
    ("ingestion", "spBv1.0/plant1/NCMD/gw-a"), ("ingestion", "spBv1.0/STATE/nexus"),
]
#: (user, topic) each role must be refused
REFUSED = [
    ("gw-a", "nexus/ack/v1/gw-a"), ("gw-a", "$nexus/status/gateways/gw-b"), ("gw-a", "$nexus/config/devices/press-1"),
    ("gw-a", "$nexus/cmd/press-1/setpoint/set"), ("gw-b", "$nexus/status/gateways/gw-a"),
    ("ingestion", BATCH), ("ingestion", "$nexus/config/devices/press-1"),
    ("core", BATCH), ("core", "nexus/ack/v1/gw-a"),
    # device health comes from the gateways alone; gateway_core reads the values, never writes them
    ("ingestion", HEALTH), ("normalizer", HEALTH), ("core", HEALTH), ("core", TAG),
    ("gw-a", "$nexus/status/devices/press-1/x"), ("gw-a", "$nexus/status/devices"),
    ("normalizer", "nexus/ack/v1/gw-a"), ("normalizer", "$nexus/status/gateways/gw-a"),
    # an edge node may not speak for another node, command nodes or claim to be the host
    ("gw-a", "spBv1.0/plant1/DDATA/gw-b/press-2"), ("gw-a", "spBv1.0/plant1/NBIRTH/gw-b"),
    ("gw-a", "spBv1.0/plant1/NCMD/gw-b"), ("gw-a", "spBv1.0/STATE/nexus"),
    ("ingestion", "spBv1.0/plant1/DDATA/gw-a/press-1"), ("core", "spBv1.0/plant1/NCMD/gw-a"),
]


async def publish_code(b: ExampleBroker, user: str, topic: str) -> int:
    async with client(b, user) as c:
        try:
            return await (await c.publish(topic, b"{}"))
        except MqttError as exc:
            return exc.code


async def test_the_example_config_loads_and_each_role_may_do_only_what_it_needs(tmp_path: Path,
                                                                                 certs: Certs) -> None:
    with example_broker(tmp_path / "mq", certs) as b:
        codes = await asyncio.gather(*(publish_code(b, u, t) for u, t in ALLOWED + REFUSED))
        got = dict(zip(ALLOWED + REFUSED, codes, strict=True))
        assert {k: v for k, v in got.items() if k in ALLOWED and v not in (0, 0x10)} == {}
        assert {k: v for k, v in got.items() if k in REFUSED and v != 0x87} == {}

        # reading: the ACL file lets a subscription through but delivers only what the user may read
        ing: list[Message] = []
        gw_a: list[Message] = []
        gw_b: list[Message] = []
        core: list[Message] = []
        # gateway_core's subscriptions as it makes them: gateway statuses, device health, the live stream's
        # batches and per-tag topics (LiveHub: no uns_prefix, six levels); and confirmations, which it may not read
        core_subs = ["$nexus/status/gateways/+", health_filter(DEFAULT_CONTROL_ROOT), batch_filter("nexus"),
                     "+/+/+/+/+/+", "nexus/ack/v1/+"]
        async with client(b, "ingestion", ["$share/ingestion/nexus/batch/v1/#"], ing) as i, \
                client(b, "gw-a", ["nexus/ack/v1/gw-a", "$nexus/config/devices/+"], gw_a) as a, \
                client(b, "gw-b", ["nexus/ack/v1/+", "nexus/batch/v1/#", "$nexus/status/devices/+"], gw_b), \
                client(b, "core", core_subs, core) as cc:
            assert await (await a.publish(BATCH, b"batch")) == 0
            assert await (await a.publish("$nexus/status/gateways/gw-a", b"status")) == 0
            assert await (await a.publish(HEALTH, b"health")) == 0
            assert await (await a.publish(TAG, b"tag")) == 0
            assert await (await i.publish("nexus/ack/v1/gw-a", b"ack-a")) == 0
            assert await (await cc.publish("$nexus/config/devices/press-1", b"device")) == 0
            assert await (await i.publish("nexus/ack/v1/gw-b", b"ack-b")) == 0  # after the others: a marker
            await until(lambda: [m.payload for m in gw_b] == [b"ack-b"], 5, what=lambda: f"gw-b's ack: {gw_b}")
            await until(lambda: len(gw_a) == 2 and ing and len(core) == 4, 5, what=lambda: f"deliveries: {core}")
        assert [m.payload for m in ing] == [b"batch"]
        assert sorted((m.topic, m.payload) for m in core) == sorted([
            ("$nexus/status/gateways/gw-a", b"status"), (HEALTH, b"health"), (BATCH, b"batch"), (TAG, b"tag")])
        assert sorted(m.payload for m in gw_a) == [b"ack-a", b"device"]
        # neither gw-a's ack nor the batch or health report it subscribed to
        assert [m.payload for m in gw_b] == [b"ack-b"]


@pytest.mark.slow
async def test_the_normalizer_through_the_example_broker(tmp_path: Path, certs: Certs, daemons: Any) -> None:
    with example_broker(tmp_path / "mq", certs, extra_acl=TESTER) as b:
        ops = free_port()
        nz = daemons("normalizer", {
            "NEXUS_NORMALIZER_NORMALIZER_ID": "nz-1", "NEXUS_NORMALIZER_OPS_PORT": str(ops),
            "NEXUS_NORMALIZER_MQTT_PORT": str(b.port), "NEXUS_NORMALIZER_MQTT_USERNAME": "normalizer",
            "NEXUS_NORMALIZER_MQTT_PASSWORD": PASSWORDS["normalizer"],
            "NEXUS_NORMALIZER_MQTT_CA_FILE": str(b.ca_file), "NEXUS_NORMALIZER_LOG_JSON": "false"})
        wait_for(lambda: http_get(ops, "/readyz")[0] == 200, 20, what=lambda: f"normalizer ready\n{nz.output()}")
        out: list[Message] = []
        async with client(b, "tester", ["nexus/batch/v1/#"], out) as tester:
            async def through() -> bool:  # until its shared subscription is in place, input is dropped
                await tester.publish(f"raw/uns/{DEVICE.path}/temp", orjson.dumps({"value": 21.5, "ts": T0}))
                await asyncio.sleep(0.2)
                return bool(out)
            await until(through, 20, interval=0, what=lambda: f"normalized output\n{nz.output()}")
        points = decode_batch(out[0].payload).points
        assert out[0].topic == BATCH and [(p.tag, p.value, p.ts) for p in points][:1] == [("temp", 21.5, T0)]
        assert nz.stop() == 0
        assert PASSWORDS["normalizer"] not in nz.output()


@pytest.mark.slow
async def test_ingestion_through_the_example_broker_confirms_to_its_gateway_only(tmp_path: Path, certs: Certs,
                                                                                 daemons: Any, db: str) -> None:
    with example_broker(tmp_path / "mq", certs) as b:
        ops = free_port()
        ing = daemons("ingestion", {
            "NEXUS_INGESTION_WORKER_ID": "w1", "NEXUS_INGESTION_DB_DSN": db, "NEXUS_INGESTION_OPS_PORT": str(ops),
            "NEXUS_INGESTION_MQTT_PORT": str(b.port), "NEXUS_INGESTION_MQTT_USERNAME": "ingestion",
            "NEXUS_INGESTION_MQTT_PASSWORD": PASSWORDS["ingestion"], "NEXUS_INGESTION_MQTT_CA_FILE": str(b.ca_file),
            "NEXUS_INGESTION_LOG_JSON": "false"})
        wait_for(lambda: http_get(ops, "/readyz")[0] == 200, 30, what=lambda: f"ingestion ready\n{ing.output()}")
        acks: list[Message] = []
        seq = 0
        async with client(b, "gw-a", [ack_topic("gw-a")], acks) as gw:
            async def confirmed() -> bool:  # until the worker's shared subscription is in place
                nonlocal seq
                seq += 1
                payload = encode_batch([Point("temp", 20.0 + seq, T0 + seq, 0, "degC")], seq=seq, gateway="gw-a",
                                       run=1)
                await (await gw.publish(BATCH, payload))
                await asyncio.sleep(0.2)
                return bool(acks)
            await until(confirmed, 30, interval=0, what=lambda: f"a confirmation\n{ing.output()}")
        ack = decode_ack(acks[0].payload)
        assert ack.run == 1 and ack.seqs and acks[0].topic == "nexus/ack/v1/gw-a"
        first = ack.seqs[0][0]
        rows = query(db, "SELECT t.tag, p.value FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id "
                         "WHERE p.time = to_timestamp(%s / 1000.0)", (T0 + first,))
        assert rows == [("temp", 20.0 + first)]
        assert ing.stop() == 0
        assert PASSWORDS["ingestion"] not in ing.output()


@pytest.mark.slow
async def test_gateway_core_gets_a_real_gateways_health_and_values_through_the_example_broker(
        tmp_path: Path, certs: Certs, daemons: Any, db: str, bg_loop: Any) -> None:
    """gateway_core (user core) assigns a device to a real gateway (user gw-a, core mode), which polls a
    simulated PLC: the device's health report and its values reach gateway_core's REST API and live stream,
    and neither the gateway nor gateway_core is refused a publish or dropped by the broker on the way."""
    doc = {"id": "press-1", "enterprise": DEVICE.enterprise, "site": DEVICE.site, "area": DEVICE.area,
           "line": DEVICE.line, "protocol": "modbus_tcp", "host": "127.0.0.1", "port": free_port(), "interval_ms": 100,
           "timeout_ms": 300, "tags": [{"name": "temp", "table": "holding", "address": 0, "type": "int16",
                                        "unit": "degC", "transform": {"scale": 0.1}}]}
    plc = SimulatedPlc(parse_plant({"devices": [doc]}).devices[0], constants={"temp": 215})
    bg_loop.run(plc.start())
    temp = f"{DEVICE.path}/temp"
    try:
        with example_broker(tmp_path / "mq", certs) as b:
            core_settings = Settings(service_id="core-1", admin_key=ADMIN_KEY, db=DbSettings(dsn=db, pool_size=4),
                                     http=HttpSettings(port=0), mqtt=settings(b, "core"), heartbeat_timeout=3.0,
                                     handoff_timeout=5.0, startup_settle=0.2)  # the default roots, as the ACL's
            async with asyncio.TaskGroup() as tg:
                svc = await start_service(core_settings, tg)
                try:
                    gw = daemons("gateway", {
                        "NEXUS_GATEWAY_GATEWAY_ID": "gw-a", "NEXUS_GATEWAY_CONFIG_SOURCE": "core",
                        "NEXUS_GATEWAY_PLANT": str(tmp_path / "unused.toml"),
                        "NEXUS_GATEWAY_SPOOL_DIR": str(tmp_path / "spool"), "NEXUS_GATEWAY_LOG_JSON": "false",
                        "NEXUS_GATEWAY_HEARTBEAT_S": "0.5", "NEXUS_GATEWAY_HEALTH_INTERVAL_S": "0.5",
                        "NEXUS_GATEWAY_HEALTH_HEARTBEAT_S": "1", "NEXUS_GATEWAY_MQTT_PORT": str(b.port),
                        "NEXUS_GATEWAY_MQTT_USERNAME": "gw-a", "NEXUS_GATEWAY_MQTT_PASSWORD": PASSWORDS["gw-a"],
                        "NEXUS_GATEWAY_MQTT_CA_FILE": str(b.ca_file)})
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.port}", headers=ADMIN,
                                                 timeout=10) as c:
                        running = Running(svc, c, DEFAULT_CONTROL_ROOT, b.port, db)
                        await until(lambda: "gw-a" in running.core.assigner.live(), 20,
                                    what=lambda: f"gw-a live\n{gw.output()}")
                        assert (await c.post("/api/v1/devices", json=doc)).status_code == 201
                        async with socket(running) as health_ws, socket(running) as values_ws:
                            await health_ws.send(orjson.dumps({"type": "subscribe", "devices": ["press-1"]}).decode())
                            assert (await recv(health_ws))["devices"] == ["press-1"]
                            v = await health_until(health_ws, "press-1", lambda v: v["connected"]
                                                   and v["polls"] >= 3, timeout=20)
                            assert v["gateway"] == v["assigned_gateway"] == "gw-a" and v["gateway_online"] is True
                            assert v["state"] == "polling" and not v["stale"]
                            r = await c.get("/api/v1/devices/press-1/health")
                            assert r.status_code == 200 and r.json()["connected"] is True

                            assert (await subscribe(values_ws, DEVICE.path))["type"] == "subscribed"
                            seen, _ = await values_until(values_ws, quality_of(temp, "good", 21.5), timeout=20)
                            assert seen[temp]["unit"] == "degC" and seen[temp]["q"] == 0
                            plc.constants["temp"] = 300  # a change, live
                            await values_until(values_ws, quality_of(temp, "good", 30.0), timeout=10)
                    log = b.log()  # before the gateway's and gateway_core's own disconnects
                    assert gw.stop() == 0, gw.output()
                finally:
                    svc.stop.set()
    finally:
        bg_loop.run(plc.stop())
    # each connected once and stayed: mosquitto drops a client after a refused PUBLISH (its log then says
    # "Bad socket read/write on client <id>", and the client connects again)
    # (gateway_core's reader of the retained per-tag states, <its id>-live, connects and leaves at each read)
    ids = {user: [i for i in re.findall(rf"New client connected from \S+ as (\S+) \(.*u'{user}'\)", log)
                  if not i.endswith("-live")] for user in ("gw-a", "core")}
    assert [len(v) for v in ids.values()] == [1, 1], log
    assert not [line for line in log.splitlines() if "New client connected" not in line and "-live" not in line
                and any(i[0] in line for i in ids.values())], log
    assert "refused" not in gw.output(), gw.output()
