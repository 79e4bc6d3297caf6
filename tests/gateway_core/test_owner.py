"""The device owner mark (header ``X-Nexus-Owner``): stored beside the document, shown by GET and the
list, kept by changes that do not name it, changed only when named, audited, never in the document the
gateways get; requests without it behave as before."""

from __future__ import annotations

from tests.support.core import Api, device_doc
from tests.support.db import query

OWNER = {"X-Nexus-Owner": "nexus-operator:plant-a/press-1"}


async def test_owner_is_stored_shown_and_kept(api: Api) -> None:
    r = await api.client.post("/api/v1/devices", json=device_doc(), headers=OWNER)
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == OWNER["X-Nexus-Owner"] and "owner" not in r.json()["device"]

    r = await api.client.get("/api/v1/devices/press-1")
    assert r.json()["owner"] == OWNER["X-Nexus-Owner"] and r.json()["device"] == device_doc()
    r = await api.client.get("/api/v1/devices")
    assert [i["owner"] for i in r.json()["items"]] == [OWNER["X-Nexus-Owner"]]

    # a PUT and a tag change without the header keep the owner
    r = await api.client.put("/api/v1/devices/press-1", json=device_doc(interval_ms=500), headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.json()["owner"] == OWNER["X-Nexus-Owner"]
    tag = {"name": "extra", "table": "holding", "address": 20, "type": "uint16"}
    r = await api.client.put("/api/v1/devices/press-1/tags/extra", json=tag)
    assert r.status_code == 201
    r = await api.client.get("/api/v1/devices/press-1")
    assert r.json()["owner"] == OWNER["X-Nexus-Owner"] and r.json()["revision"] == 3

    # the gateways' document and the export never carry it
    assert query(api.dsn, "SELECT doc ? 'owner' FROM core.device_versions ORDER BY revision DESC LIMIT 1") == [(False,)]
    r = await api.client.get("/api/v1/export")
    assert "owner" not in r.json()["devices"][0]


async def test_owner_changes_only_when_named_and_is_audited(api: Api) -> None:
    r = await api.client.post("/api/v1/devices", json=device_doc())
    assert r.status_code == 201 and r.json()["owner"] is None

    # adopting with an identical document: the owner changes, the configuration revision does not
    r = await api.client.put("/api/v1/devices/press-1", json=device_doc(), headers={**OWNER, "If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["owner"] == OWNER["X-Nexus-Owner"] and r.headers["ETag"] == '"1"'
    assert (await api.client.get("/api/v1/revisions")).json()["current"] == 1
    rows = query(api.dsn, "SELECT action, before, after FROM core.audit WHERE action = 'device.owner'")
    assert rows == [("device.owner", {"owner": None}, {"owner": OWNER["X-Nexus-Owner"]})]

    # a stale If-Match changes nothing, the owner included
    r = await api.client.put(
        "/api/v1/devices/press-1", json=device_doc(), headers={"X-Nexus-Owner": "other", "If-Match": '"7"'}
    )
    assert r.status_code == 412
    assert (await api.client.get("/api/v1/devices/press-1")).json()["owner"] == OWNER["X-Nexus-Owner"]

    # empty clears it
    r = await api.client.put("/api/v1/devices/press-1", json=device_doc(), headers={"X-Nexus-Owner": ""})
    assert r.status_code == 200 and r.json()["owner"] is None
    assert (await api.client.get("/api/v1/devices/press-1")).json()["owner"] is None


async def test_bad_owner_header_is_refused(api: Api) -> None:
    r = await api.client.post("/api/v1/devices", json=device_doc(), headers={"X-Nexus-Owner": "has space"})
    assert r.status_code == 422 and r.json()["field"] == "X-Nexus-Owner"
    r = await api.client.post("/api/v1/devices", json=device_doc(), headers={"X-Nexus-Owner": "x" * 254})
    assert r.status_code == 422
    assert (await api.client.get("/api/v1/devices")).json()["total"] == 0


async def test_import_keeps_the_owner_of_devices_it_updates(api: Api) -> None:
    r = await api.client.post("/api/v1/devices", json=device_doc(), headers=OWNER)
    assert r.status_code == 201
    plant = {"plant": {}, "devices": [device_doc(interval_ms=750), device_doc("oven-1", line="line-2")]}
    r = await api.client.post("/api/v1/import", params={"mode": "merge"}, json=plant)
    assert r.status_code == 200, r.text
    items = {i["id"]: i["owner"] for i in (await api.client.get("/api/v1/devices")).json()["items"]}
    assert items == {"press-1": OWNER["X-Nexus-Owner"], "oven-1": None}
