"""gateway_core REST API on a real PostgreSQL (ASGI in process): CRUD, validation messages,
ETag/If-Match, revisions and audit, rollback, import/export, pagination and filtering."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import yaml

from tests.support.core import Api, device_doc, plant_doc
from tests.support.db import query


async def create(api: Api, doc: dict[str, Any]) -> dict[str, Any]:
    r = await api.client.post("/api/v1/devices", json=doc)
    assert r.status_code == 201, r.text
    return r.json()


async def revision(api: Api) -> int:
    r = await api.client.get("/api/v1/revisions", params={"limit": 1})
    return int(r.json()["current"])


async def test_device_crud(api: Api) -> None:
    r = await api.client.post("/api/v1/devices", json=device_doc())
    assert r.status_code == 201, r.text
    assert r.headers["ETag"] == '"1"' and r.headers["Location"] == "/api/v1/devices/press-1"
    body = r.json()
    assert body["id"] == "press-1" and body["revision"] == 1 and body["gateway"] is None
    assert body["device"] == device_doc()

    r = await api.client.get("/api/v1/devices/press-1")
    assert r.status_code == 200 and r.json()["device"] == device_doc() and r.headers["ETag"] == '"1"'

    changed = device_doc(interval_ms=250)
    r = await api.client.put("/api/v1/devices/press-1", json=changed, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == '"2"' and r.json()["device"]["interval_ms"] == 250

    # the same document again is no change: no new revision
    r = await api.client.put("/api/v1/devices/press-1", json=changed)
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    assert await revision(api) == 2

    r = await api.client.delete("/api/v1/devices/press-1", headers={"If-Match": '"2"'})
    assert r.status_code == 204
    r = await api.client.get("/api/v1/devices/press-1")
    assert r.status_code == 404 and r.json() == {"detail": "device 'press-1' not found", "field": "device_id"}
    assert await revision(api) == 3


@pytest.mark.parametrize(
    ("mutate", "status", "field", "message"),
    [
        (
            lambda d: d.update(protocol="profibus"),
            422,
            "device.protocol",
            "'protocol' is 'profibus'; expected one of",
        ),
        (
            lambda d: d["tags"][0].update(address=70000),
            422,
            "device.tags[0].address",
            "'address' 70000 outside 0..65535",
        ),
        (
            lambda d: d["tags"][1].update(table="holdings"),
            422,
            "device.tags[1].table",
            "'table' is 'holdings'",
        ),
        (
            lambda d: d.update(interval_ms=5),
            422,
            "device.interval_ms",
            "'interval_ms' 5 outside 10..86400000",
        ),
        (lambda d: d.update(interval_ms="fast"), 422, "interval_ms", "Input should be a valid integer"),
        (lambda d: d.pop("site"), 422, "device.site", "'site' is required"),
        (lambda d: d.update(site="ber/lin"), 422, "device", "contains '/' (level separator)"),
        (
            lambda d: d["tags"].append({"name": "temp", "address": 3}),
            422,
            "device.tags[2]",
            "duplicate tag name 'temp'",
        ),
        (lambda d: d.update(colour="red"), 422, "device", "unknown key(s) ['colour']"),
        (
            lambda d: d["tags"][0].update(transform={"scale": 1, "min": 5, "max": 1}),
            422,
            "device.tags[0].transform.min",
            "min 5 is greater than max 1",
        ),
        (
            lambda d: d["tags"][0].update(transform={"scale": 0}),
            422,
            "device.tags[0].transform.scale",
            "scale must not be 0",
        ),
        (
            lambda d: d["tags"][0].update(unit="bar", transform={"from_unit": "degF"}),
            422,
            "device.tags[0].transform.from_unit",
            "cannot convert from_unit 'degF' to unit 'bar'",
        ),
        (
            lambda d: d["tags"][0].update(alarms={"high": 1, "low": 2}),
            422,
            "device.tags[0].alarms.low",
            "must be below",
        ),
    ],
)
async def test_validation_names_the_field(
    api: Api, mutate: Any, status: int, field: str, message: str
) -> None:
    doc = device_doc()
    mutate(doc)
    r = await api.client.post("/api/v1/devices", json=doc)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert message in r.json()["detail"]
    assert await revision(api) == 0
    assert query(api.dsn, "SELECT count(*) FROM core.devices") == [(0,)]


async def test_duplicate_uns_path_is_409(api: Api) -> None:
    await create(api, device_doc())
    r = await api.client.post("/api/v1/devices", json=device_doc(interval_ms=500))
    assert r.status_code == 409
    assert r.json() == {
        "detail": "device 'press-1' already exists (duplicate UNS path "
        "'acme/berlin/stamping/line-1/press-1')",
        "field": "id",
    }
    r = await api.client.post(
        "/api/v1/import?mode=merge",
        json={"plant": {}, "devices": [device_doc("a"), device_doc("b"), device_doc("a")]},
    )
    assert r.status_code == 409
    assert (
        r.json()["field"] == "devices[2].id"
        and "duplicate UNS path 'acme/berlin/stamping/line-1/a'" in r.json()["detail"]
    )
    r = await api.client.put("/api/v1/devices/press-1", json=device_doc("other"))
    assert r.status_code == 422 and r.json()["field"] == "device.id"
    assert await revision(api) == 1


async def test_stale_if_match_is_412_and_changes_nothing(api: Api) -> None:
    await create(api, device_doc())
    r = await api.client.put(
        "/api/v1/devices/press-1", json=device_doc(interval_ms=300), headers={"If-Match": '"1"'}
    )
    assert r.status_code == 200
    before = await api.client.get("/api/v1/devices/press-1")
    audit_rows = query(api.dsn, "SELECT count(*) FROM core.audit")
    for method, url, body, etag in [
        ("PUT", "/api/v1/devices/press-1", device_doc(interval_ms=999), '"1"'),
        ("PUT", "/api/v1/devices/press-1", device_doc(interval_ms=999), "garbage"),
        ("DELETE", "/api/v1/devices/press-1", None, 'W/"1"'),
        ("PUT", "/api/v1/devices/press-1/tags/temp", {"address": 4, "type": "int16"}, '"1"'),
        ("DELETE", "/api/v1/devices/press-1/tags/temp", None, '"1", "0"'),
        ("POST", "/api/v1/import", {"devices": []}, '"1"'),
        ("POST", "/api/v1/revisions/0/rollback", None, '"1"'),
        ("PUT", "/api/v1/devices/nope", device_doc("nope"), "*"),
    ]:
        r = await api.client.request(method, url, json=body, headers={"If-Match": etag})
        assert r.status_code == 412, (method, url, r.text)
        assert r.json()["field"] == "If-Match"
    after = await api.client.get("/api/v1/devices/press-1")
    assert after.json() == before.json() and after.headers["ETag"] == '"2"'
    assert query(api.dsn, "SELECT count(*) FROM core.audit") == audit_rows
    assert await revision(api) == 2
    r = await api.client.delete("/api/v1/devices/press-1", headers={"If-Match": '"7", "2"'})
    assert r.status_code == 204


async def test_revisions_and_audit_rows(api: Api) -> None:
    await create(api, device_doc("a"))
    await create(api, device_doc("b"))
    r = await api.client.put(
        "/api/v1/devices/a/tags/extra", json={"address": 20, "type": "uint16", "unit": "rpm"}
    )
    assert r.status_code == 201 and r.json()["revision"] == 3
    r = await api.client.delete("/api/v1/devices/b")
    assert r.status_code == 204
    rows = query(
        api.dsn,
        "SELECT revision, actor, action, target, before IS NULL, after IS NULL FROM core.audit ORDER BY id",
    )
    assert rows == [
        (1, "bootstrap-admin", "device.create", "device:a", True, False),
        (2, "bootstrap-admin", "device.create", "device:b", True, False),
        (3, "bootstrap-admin", "tag.put", "device:a", False, False),
        (4, "bootstrap-admin", "device.delete", "device:b", False, True),
    ]
    before, after = query(api.dsn, "SELECT before, after FROM core.audit WHERE revision = 3")[0]
    assert [t["name"] for t in before["tags"]] == ["temp", "setpoint"]
    assert after["tags"][-1] == {"name": "extra", "address": 20, "type": "uint16", "unit": "rpm"}
    assert query(api.dsn, "SELECT revision FROM core.state") == [(4,)]

    r = await api.client.get("/api/v1/revisions")
    items = r.json()["items"]
    assert r.json()["current"] == 4 and [i["revision"] for i in items] == [4, 3, 2, 1, 0]
    assert items[0]["action"] == "device.delete" and items[0]["actor"] == "bootstrap-admin"
    assert items[0]["devices_changed"] == 1
    r = await api.client.get("/api/v1/audit", params={"device": "a"})
    assert [i["action"] for i in r.json()["items"]] == ["tag.put", "device.create"] and r.json()["total"] == 2


async def test_rollback_restores_a_revision_as_a_new_one(api: Api) -> None:
    await create(api, device_doc("a"))
    await create(api, device_doc("b"))  # rev 2: a, b
    r = await api.client.get("/api/v1/export")
    at_two = r.json()
    await api.client.put("/api/v1/devices/a", json=device_doc("a", interval_ms=100))  # 3
    await api.client.delete("/api/v1/devices/b")  # 4
    await create(api, device_doc("c"))  # 5

    r = await api.client.post("/api/v1/revisions/2/rollback", headers={"If-Match": '"5"'})
    assert r.status_code == 200, r.text
    assert r.json() == {"revision": 6, "created": ["b"], "updated": ["a"], "deleted": ["c"]}
    assert (await api.client.get("/api/v1/export")).json() == at_two
    assert (await api.client.get("/api/v1/export", params={"revision": 2})).json() == at_two
    assert (await api.client.get("/api/v1/devices/a")).json()["device"] == device_doc("a")
    r = await api.client.get("/api/v1/revisions", params={"limit": 1})
    assert r.json()["items"][0] | {"at": None} == {
        "revision": 6,
        "at": None,
        "actor": "bootstrap-admin",
        "action": "rollback",
        "summary": "rollback to 2",
        "rollback_of": 2,
        "devices_changed": 3,
    }
    # rolling back to what is already there changes nothing; to an unknown revision is 404
    r = await api.client.post("/api/v1/revisions/6/rollback")
    assert r.json() == {"revision": 6, "created": [], "updated": [], "deleted": []}
    r = await api.client.post("/api/v1/revisions/99/rollback")
    assert r.status_code == 404 and r.json()["field"] == "revision"
    r = await api.client.post("/api/v1/revisions/0/rollback")
    assert (
        r.json()["deleted"] == ["a", "b"] and (await api.client.get("/api/v1/devices")).json()["total"] == 0
    )


async def test_import_export_json_and_yaml_round_trip(api: Api) -> None:
    plant = plant_doc()
    r = await api.client.post("/api/v1/import", json=plant)
    plant["devices"].sort(key=lambda d: d["id"])  # export lists devices by id
    assert r.status_code == 200, r.text
    assert r.json() == {"revision": 1, "created": ["press-1", "oven-1"], "updated": [], "deleted": []}
    r = await api.client.get("/api/v1/export")
    assert r.headers["content-type"] == "application/json" and r.headers["ETag"] == '"1"'
    assert r.json() == plant  # same shape as the plant TOML: shared levels in "plant"

    r = await api.client.get("/api/v1/export", params={"format": "yaml"})
    assert r.headers["content-type"] == "application/yaml"
    exported = r.text
    assert yaml.safe_load(exported) == plant
    r = await api.client.post(
        "/api/v1/import", content=exported, headers={"Content-Type": "application/yaml"}
    )
    assert r.json() == {"revision": 1, "created": [], "updated": [], "deleted": []}  # nothing changed

    # YAML with a change and a new device; merge keeps devices that are not in the document
    doc = yaml.safe_load(exported)
    doc["devices"] = [d for d in doc["devices"] if d["id"] == "oven-1"]
    doc["devices"][0]["interval_ms"] = 2000
    doc["devices"].append(
        {"id": "mixer-1", "line": "line-2", "host": "10.0.0.9", "tags": [{"name": "speed", "address": 1}]}
    )
    r = await api.client.post(
        "/api/v1/import?mode=merge", content=yaml.safe_dump(doc), headers={"Content-Type": "text/yaml"}
    )
    assert r.json() == {"revision": 2, "created": ["mixer-1"], "updated": ["oven-1"], "deleted": []}
    r = await api.client.get("/api/v1/devices/mixer-1")
    assert r.json()["device"]["enterprise"] == "acme" and r.json()["device"]["line"] == "line-2"
    r = await api.client.get("/api/v1/export")
    assert r.json()["plant"] == {
        "enterprise": "acme",
        "site": "berlin",
        "area": "stamping",
    }  # lines differ now

    # replace deletes what the document does not hold
    r = await api.client.post(
        "/api/v1/import", content=orjson.dumps(doc), headers={"Content-Type": "application/json"}
    )
    assert r.json() == {"revision": 3, "created": [], "updated": [], "deleted": ["press-1"]}

    for body, ctype, status, field in [
        (b"devices: [unclosed", "application/yaml", 400, "body"),
        (b"{not json", "application/json", 400, "body"),
        (b"<plant/>", "application/xml", 400, "Content-Type"),
        (orjson.dumps({"plant": {"site": 3}, "devices": []}), "application/json", 422, "plant.site"),
        (
            orjson.dumps(
                {
                    "devices": [
                        {"id": "x", "enterprise": "e", "site": "s", "area": "a", "line": "l"},
                        {
                            "id": "y",
                            "enterprise": "e",
                            "site": "s",
                            "area": "a",
                            "line": "l",
                            "tags": [{"name": "t", "address": -1}],
                        },
                    ]
                }
            ),
            "application/json",
            422,
            "devices[1].tags[0].address",
        ),
    ]:
        r = await api.client.post("/api/v1/import", content=body, headers={"Content-Type": ctype})
        assert (r.status_code, r.json()["field"]) == (status, field), r.text
    assert await revision(api) == 3


async def test_pagination_and_filtering(api: Api) -> None:
    for i in range(7):
        await create(
            api,
            device_doc(
                f"dev-{i}",
                line=f"line-{i % 2}",
                site="berlin" if i < 5 else "paris",
                protocol="modbus_rtu_tcp" if i == 3 else "modbus_tcp",
            ),
        )
    r = await api.client.get("/api/v1/devices", params={"limit": 3})
    page = r.json()
    assert [d["id"] for d in page["items"]] == ["dev-0", "dev-1", "dev-2"]
    assert (page["total"], page["limit"], page["offset"], page["next"], page["revision"]) == (
        7,
        3,
        0,
        "dev-2",
        7,
    )
    r = await api.client.get("/api/v1/devices", params={"limit": 3, "offset": 6})
    assert [d["id"] for d in r.json()["items"]] == ["dev-6"]
    # keyset cursor: 'next' of one page is 'after' of the next
    seen, after = [], None
    while True:
        r = await api.client.get(
            "/api/v1/devices", params={"limit": 3, "site": "berlin"} | ({"after": after} if after else {})
        )
        seen += [d["id"] for d in r.json()["items"]]
        assert r.json()["total"] == 5
        if (after := r.json()["next"]) is None:
            break
    assert seen == ["dev-0", "dev-1", "dev-2", "dev-3", "dev-4"]
    r = await api.client.get("/api/v1/devices", params={"site": "berlin", "line": "line-1"})
    assert [d["id"] for d in r.json()["items"]] == ["dev-1", "dev-3"] and r.json()["total"] == 2
    r = await api.client.get("/api/v1/devices", params={"protocol": "modbus_rtu_tcp"})
    assert [d["id"] for d in r.json()["items"]] == ["dev-3"]
    r = await api.client.get(
        "/api/v1/devices", params={"site": "paris", "area": "stamping", "enterprise": "acme"}
    )
    assert r.json()["total"] == 2
    r = await api.client.get("/api/v1/devices", params={"gateway": "gw-none"})
    assert r.json()["total"] == 0
    for params, field in [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"site": "a/b"}, "site"),
    ]:
        r = await api.client.get("/api/v1/devices", params=params)
        assert r.status_code == 422 and r.json()["field"] == field, r.text


async def test_tag_sub_resources(api: Api) -> None:
    await create(api, device_doc())
    r = await api.client.get("/api/v1/devices/press-1/tags")
    assert [t["name"] for t in r.json()] == ["temp", "setpoint"]
    r = await api.client.get("/api/v1/devices/press-1/tags/setpoint")
    assert r.json() == {"device_id": "press-1", "revision": 1, "tag": device_doc()["tags"][1]}
    assert r.headers["ETag"] == '"1"'
    r = await api.client.put(
        "/api/v1/devices/press-1/tags/setpoint",
        headers={"If-Match": '"1"'},
        json={
            "table": "holding",
            "address": 11,
            "type": "uint16",
            "writable": True,
            "transform": {"scale": 2},
        },
    )
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    assert r.json()["tag"] == {
        "table": "holding",
        "address": 11,
        "type": "uint16",
        "writable": True,
        "transform": {"scale": 2.0},
        "name": "setpoint",
    }
    r = await api.client.put("/api/v1/devices/press-1/tags/bad", json={"address": 70000})
    assert r.status_code == 422 and r.json()["field"] == "device.tags[2].address"
    r = await api.client.put("/api/v1/devices/press-1/tags/bad", json={"name": "other", "address": 1})
    assert r.status_code == 422 and r.json()["field"] == "tag.name"
    r = await api.client.put(
        "/api/v1/devices/press-1/tags/flag", json={"type": "bool", "table": "coil", "address": 3}
    )
    assert r.status_code == 201
    r = await api.client.delete("/api/v1/devices/press-1/tags/temp")
    assert r.status_code == 204
    r = await api.client.delete("/api/v1/devices/press-1/tags/temp")
    assert r.status_code == 404 and r.json()["field"] == "name"
    r = await api.client.get("/api/v1/devices/press-1/tags")
    assert [t["name"] for t in r.json()] == ["setpoint", "flag"]
    r = await api.client.get("/api/v1/devices/nope/tags/x")
    assert r.status_code == 404 and r.json()["field"] == "device_id"
    assert await revision(api) == 4


async def test_concurrent_writers_with_the_same_if_match(api: Api) -> None:
    await create(api, device_doc())
    results = await asyncio.gather(
        *(
            api.client.put(
                "/api/v1/devices/press-1", json=device_doc(interval_ms=100 + i), headers={"If-Match": '"1"'}
            )
            for i in range(5)
        )
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 412, 412, 412, 412]
    winner = next(r for r in results if r.status_code == 200)
    r = await api.client.get("/api/v1/devices/press-1")
    assert r.json()["device"] == winner.json()["device"] and r.headers["ETag"] == '"2"'
    assert query(api.dsn, "SELECT count(*) FROM core.device_versions WHERE device_id = 'press-1'") == [(2,)]
