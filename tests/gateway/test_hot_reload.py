"""The whole loop with real processes: REST → gateway_core (PostgreSQL) → $nexus/config → gateway
(core mode) → broker → ingestion → PostgreSQL. Devices are created, changed and deleted through the
API and the gateway follows without a restart; two gateways share devices and one of them dies."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.local import free_port
from gateway.config import parse_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from tests.support.daemons import gateway_env, ingestion_env
from tests.support.db import query
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

KEY = "reload-test-admin-key-0123456789"


def core_env(broker: Any, db: str, root: str, http_port: int) -> dict[str, str]:
    return {"NEXUS_CORE_SERVICE_ID": f"core-{http_port}", "NEXUS_CORE_DB_DSN": db,
            "NEXUS_CORE_HTTP_PORT": str(http_port), "NEXUS_CORE_MQTT_PORT": str(broker.port),
            "NEXUS_CORE_CONTROL_ROOT": root, "NEXUS_CORE_ADMIN_KEY": KEY, "NEXUS_CORE_LOG_JSON": "false",
            "NEXUS_CORE_HEARTBEAT_TIMEOUT": "3", "NEXUS_CORE_STARTUP_SETTLE": "0.5"}


def device(dev_id: str, port: int, tags: list[dict[str, Any]], interval_ms: int = 100) -> dict[str, Any]:
    return {"id": dev_id, "enterprise": "acme", "site": "berlin", "area": "reload", "line": "l1",
            "protocol": "modbus_tcp", "port": port, "interval_ms": interval_ms, "tags": tags}


def plc_for(doc: dict[str, Any], constants: dict[str, Any]) -> SimulatedPlc:
    return SimulatedPlc(parse_plant({"devices": [doc]}).devices[0], constants=constants)


def latest(db: str, path: str) -> Any:
    try:
        rows = query(db, "SELECT value FROM nexus.metrics WHERE path = %s ORDER BY time DESC LIMIT 1", (path,))
    except Exception:  # noqa: BLE001 - ingestion may not have created the schema yet
        return None
    return rows[0][0] if rows else None


def count(db: str, path_like: str) -> int:
    try:
        return query(db, "SELECT count(*) FROM nexus.metrics WHERE path LIKE %s", (path_like,))[0][0]
    except Exception:  # noqa: BLE001
        return 0


def test_rest_changes_reach_the_database_without_gateway_restart(tmp_path: Path, broker, db, prefix, daemons,
                                                                 bg_loop) -> None:
    root = f"$nexus/{prefix}"
    port = free_port()
    # one simulated PLC serving registers 0, 1 and 5 with fixed values
    plc = plc_for(device("plc-r", port, [{"name": "r0", "address": 0}, {"name": "r1", "address": 1},
                                         {"name": "r5", "address": 5}]), {"r0": 111, "r1": 222, "r5": 555})
    bg_loop.run(plc.start())
    http = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{http}/api/v1", headers={"Authorization": f"Bearer {KEY}"})
    try:
        daemons("ingestion", ingestion_env(broker, db, prefix))
        core = daemons("gateway_core", core_env(broker, db, root, http))
        gw = daemons("gateway", gateway_env(broker, tmp_path / "none.toml", prefix, NEXUS_GATEWAY_CONTROL_ROOT=root,
                                            NEXUS_GATEWAY_CONFIG_SOURCE="core", NEXUS_GATEWAY_HEARTBEAT_S="0.5"))
        wait_for(lambda: _ok(api, "/gateways") and api.get("/gateways").json()["items"], 30,
                 what=f"gateway registered\n{core.output()}\n{gw.output()}")
        gw_pid = gw.proc.pid if gw.proc else 0
        base = "acme/berlin/reload/l1/plc-r"

        r = api.post("/devices", json=device("plc-r", port, [{"name": "a", "address": 0}]))
        assert r.status_code == 201, r.text
        wait_for(lambda: latest(db, f"{base}/a") == 111, 15, what=f"first value\n{gw.output()}")

        etag = api.get("/devices/plc-r").headers.get("etag")
        r = api.put("/devices/plc-r/tags/a", json={"address": 1}, headers={"If-Match": etag} if etag else {})
        assert r.status_code == 200, r.text
        wait_for(lambda: latest(db, f"{base}/a") == 222, 15, what="value from the new address")

        etag = api.get("/devices/plc-r").headers.get("etag")
        r = api.put("/devices/plc-r/tags/c", json={"address": 5}, headers={"If-Match": etag} if etag else {})
        assert r.status_code in (200, 201), r.text
        wait_for(lambda: latest(db, f"{base}/c") == 555, 15, what="a new tag's value")

        assert api.delete("/devices/plc-r").status_code == 204
        wait_for(lambda: api.get("/gateways").json()["items"][0]["polling"] == [], 10, what="device released")
        time.sleep(0.5)
        before = count(db, f"{base}/%")
        time.sleep(1.0)
        assert count(db, f"{base}/%") == before  # polling stopped
        assert gw.proc is not None and gw.proc.pid == gw_pid and gw.proc.poll() is None  # never restarted
    finally:
        api.close()
        bg_loop.run(plc.stop())


def _ok(api: httpx.Client, path: str) -> bool:
    try:
        return api.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_gateways_share_devices_and_one_dies(tmp_path: Path, broker, db, prefix, daemons, bg_loop) -> None:
    root = f"$nexus/{prefix}"
    docs = [device(f"plc-{i}", free_port(), [{"name": "v", "address": 0}]) for i in range(6)]
    plcs = [plc_for(d, {"v": i}) for i, d in enumerate(docs)]
    for plc in plcs:
        bg_loop.run(plc.start())
    http = free_port()
    api = httpx.Client(base_url=f"http://127.0.0.1:{http}/api/v1", headers={"Authorization": f"Bearer {KEY}"})
    try:
        core = daemons("gateway_core", core_env(broker, db, root, http))
        gws = {name: daemons("gateway", {**gateway_env(broker, tmp_path / "none.toml", prefix),
                                         "NEXUS_GATEWAY_GATEWAY_ID": name, "NEXUS_GATEWAY_CONTROL_ROOT": root,
                                         "NEXUS_GATEWAY_CONFIG_SOURCE": "core", "NEXUS_GATEWAY_HEARTBEAT_S": "0.5"},
                                 name=name)
               for name in ("gw-a", "gw-b")}
        wait_for(lambda: _ok(api, "/gateways") and len(api.get("/gateways").json()["items"]) == 2, 30,
                 what=f"two gateways\n{core.output()}")
        for d in docs:
            assert api.post("/devices", json=d).status_code == 201

        def owners() -> dict[str, list[str]]:
            items = api.get("/gateways").json()["items"]
            return {g["id"]: sorted(g["polling"]) for g in items if g.get("online")}

        def shared() -> bool:
            o = owners()
            polled = [d for devs in o.values() for d in devs]
            assert len(polled) == len(set(polled)), f"a device is polled twice: {o}"
            return len(polled) == 6 and all(o.get(g) for g in ("gw-a", "gw-b") if g in o)

        wait_for(lambda: shared() and len(owners()) == 2 and all(owners().values()), 20,
                 what=f"devices spread over both gateways\n{core.output()}")
        victim = "gw-a"
        moved = owners()[victim]
        gws[victim].kill()
        killed_at = time.monotonic()

        def taken_over() -> bool:
            shared()  # asserts no device is polled twice meanwhile
            return owners().get("gw-b") == sorted(d["id"] for d in docs)

        wait_for(taken_over, 15, what=f"gw-b takes over {moved}\n{core.output()}")
        took = time.monotonic() - killed_at
        assert took < 3 + 5  # heartbeat timeout (3 s) + a push and a sync
        # the survivor really polls the moved devices: their PLCs keep being read
        reads = {d: plcs[int(d.split("-")[1])].reads for d in moved}
        wait_for(lambda: all(plcs[int(d.split("-")[1])].reads > n for d, n in reads.items()), 5,
                 what="the moved devices read by the survivor")

        # a gateway joins: devices move to it released-before-assigned, never polled by two at once
        daemons("gateway", {**gateway_env(broker, tmp_path / "none.toml", prefix), "NEXUS_GATEWAY_GATEWAY_ID": "gw-c",
                            "NEXUS_GATEWAY_CONTROL_ROOT": root, "NEXUS_GATEWAY_CONFIG_SOURCE": "core",
                            "NEXUS_GATEWAY_HEARTBEAT_S": "0.5"}, name="gw-c")
        wait_for(lambda: shared() and bool(owners().get("gw-c")) and sum(map(len, owners().values())) == 6, 20,
                 interval=0.05, what=f"gw-c takes a share\n{core.output()}")
    finally:
        api.close()
        for plc in plcs:
            bg_loop.run(plc.stop())
