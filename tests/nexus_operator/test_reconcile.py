"""The operator's handlers against a real gateway_core (``python -m gateway_core`` on PostgreSQL, with mosquitto
and a simulated gateway polling what it is assigned), called the way kopf calls them (tests/nexus_operator/
kopfish.py: kopf's own Body and Patch, its keyword arguments, the patch merged back). No Kubernetes API server
runs here: what kopf itself does around the handlers (watching, the finalizer's removal, retry timing) is
kopf's and not tested here; what the handlers do to gateway_core and write to the status is."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
import orjson
import pytest

from devtools.local import free_port
from nexus_operator import handlers
from nexus_operator.client import CoreClient, Remote
from nexus_operator.reconcile import Reconciler
from nexus_operator.resources import document
from proto import config as pc
from tests.nexus_operator.core_process import CoreProcess
from tests.nexus_operator.kopfish import INSTANCE, NAMESPACE, Resource, operator_memo
from tests.support.core import SimGateway
from tests.support.daemons import Daemon, http_get
from tests.support.wait import until

pytestmark = pytest.mark.slow
OWNER = f"{INSTANCE}:{NAMESPACE}/press-1"


def press_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "enterprise": "acme", "site": "berlin", "area": "stamping", "line": "line-1", "protocol": "modbus_tcp",
        "address": {"host": "10.0.0.5", "port": 502, "unit_id": 1}, "interval_ms": 1000,
        "tags": [{"name": "oil_temp", "table": "holding", "address": 0, "type": "float32", "unit": "degC",
                  "transform": {"scale": 0.1}, "storage": "on_change"},
                 {"name": "setpoint", "table": "holding", "address": 10, "type": "int16", "writable": True}],
    }
    spec.update(extra)
    return spec


@pytest.fixture
async def core(daemons: Callable[..., Daemon], db: str, broker: Any, prefix: str) -> AsyncIterator[CoreProcess]:
    proc = CoreProcess(daemons, db, broker, prefix)
    yield await proc.start()


@pytest.fixture
async def memo(core: CoreProcess) -> AsyncIterator[kopf.Memo]:
    m = operator_memo(core.url, core.engineer_key)
    yield m
    await m.reconciler.client.close()


@pytest.fixture
def gateway(core: CoreProcess, broker: Any) -> Any:
    gw = SimGateway(broker.port, core.root, "gw-a", interval=0.2)
    yield gw
    gw.close()


async def settle(res: Resource, memo: kopf.Memo, health: str) -> None:
    """Run the drift timer until the status shows ``health`` (the gateway's status arrives on its own time)."""
    async def shown() -> bool:
        await res.call(handlers.check_device, memo)
        return res.status.get("health") == health
    await until(shown, 15, 0.2, what=lambda: f"health {health}: {res.status}")


async def test_create_update_delete_with_status(core: CoreProcess, memo: kopf.Memo, gateway: Any) -> None:
    res = Resource(press_spec())
    await res.call(handlers.apply_device, memo)
    found = await core.device("press-1")
    assert found is not None
    assert found["owner"] == OWNER
    assert found["device"] == document(res.spec, {"name": "press-1", "namespace": NAMESPACE}, None)
    assert res.status["appliedRevision"] == found["revision"] == 1
    assert res.status["deviceId"] == "press-1" and res.status["owner"] == OWNER
    assert res.status["observedGeneration"] == 1

    # the gateway gets it assigned and reports it polled: the drift timer shows that
    await settle(res, memo, "Polling")
    assert res.status["gateway"] == "gw-a"
    assert res.status["healthMessage"] == "polled by gateway gw-a"
    assert res.condition("Ready") | {"lastTransitionTime": None} == {
        "type": "Ready", "status": "True", "reason": "Applied", "message": "applied at revision 1",
        "observedGeneration": 1, "lastTransitionTime": None}
    degraded = res.condition("Degraded")
    assert (degraded["status"], degraded["reason"], degraded["message"]) == ("False", "AsExpected", "")
    # nothing changed: a drift check writes no status (no patch, no watch event)
    assert await res.call(handlers.check_device, memo) == {}

    # a spec change: PUT with If-Match, a new revision; the gateway's config message has it
    res.change(lambda s: s.update(interval_ms=250))
    await res.call(handlers.apply_device, memo)
    found = await core.device("press-1")
    assert found is not None and found["device"]["interval_ms"] == 250 and found["revision"] == 2
    assert res.status["appliedRevision"] == 2 and res.status["observedGeneration"] == 2
    assert res.condition("Ready")["observedGeneration"] == 2
    await until(lambda: any(m.device and m.device["interval_ms"] == 250 for m in gateway.device_messages(core.root)),
                10, what="the new interval pushed to the gateway")
    revisions = (await core.rest("GET", "/revisions")).json()
    assert [(r["actor"], r["action"]) for r in revisions["items"]][:2] == [
        ("nexus-operator", "device.update"), ("nexus-operator", "device.create")]

    # the finalizer: the device goes from gateway_core (and from the gateway), the handler ends without error
    await res.call(handlers.remove_device, memo)
    assert await core.device("press-1") is None
    await until(lambda: "press-1" not in gateway.polling, 10, what="the gateway stopped polling")
    # a second run (kopf retried after a lost patch) finds it gone and ends too
    await res.call(handlers.remove_device, memo)


class RacingClient(CoreClient):
    """Someone changes the device through the REST API between the operator's GET and its PUT, once."""

    def __init__(self, core: CoreProcess, url: str, key: str) -> None:
        super().__init__(url, key, timeout=3.0)
        self.core = core
        self.raced = False

    async def get_device(self, device_id: str) -> Remote | None:
        remote = await super().get_device(device_id)
        if remote is not None and not self.raced:
            self.raced = True
            r = await self.core.rest("PUT", f"/devices/{device_id}", json={**remote.device, "interval_ms": 5000})
            assert r.status_code == 200, r.text
        return remote


async def test_if_match_keeps_a_change_made_meanwhile_and_the_retry_applies_the_spec(
        core: CoreProcess, memo: kopf.Memo, caplog: pytest.LogCaptureFixture) -> None:
    res = Resource(press_spec())
    await res.call(handlers.apply_device, memo)
    res.change(lambda s: s.update(interval_ms=250))
    racing = RacingClient(core, core.url, core.engineer_key)
    raced = kopf.Memo(settings=memo.settings, reconciler=Reconciler(racing, instance=INSTANCE))
    try:
        with pytest.raises(kopf.TemporaryError, match="changed while being applied") as err:
            await res.call(handlers.apply_device, raced, retry=2)
    finally:
        await racing.close()
    assert err.value.delay == memo.settings.retry_delay(2) == 8.0
    found = await core.device("press-1")
    assert found is not None and found["device"]["interval_ms"] == 5000 and found["revision"] == 2  # not overwritten
    assert found["owner"] == OWNER  # a PUT without the header keeps the owner
    assert res.condition("Ready")["reason"] == "CoreUnavailable"
    # kopf's retry: the device is at revision 2, the resource applied 1: changed outside, the spec wins
    with caplog.at_level(logging.WARNING, "kopf.objects"):
        await res.call(handlers.apply_device, memo, retry=3)
    found = await core.device("press-1")
    assert found is not None and found["device"]["interval_ms"] == 250 and found["revision"] == 3
    assert res.status["appliedRevision"] == 3 and res.status["repairs"] == 1
    assert res.condition("Ready")["reason"] == "Applied"
    assert "changed outside the operator" in caplog.text

    # the finalizer's DELETE carries If-Match too: a change meanwhile stops it (412), the retry deletes
    racing = RacingClient(core, core.url, core.engineer_key)
    raced = kopf.Memo(settings=memo.settings, reconciler=Reconciler(racing, instance=INSTANCE))
    try:
        with pytest.raises(kopf.TemporaryError, match="changed while being deleted"):
            await res.call(handlers.remove_device, raced)
    finally:
        await racing.close()
    found = await core.device("press-1")
    assert found is not None and found["device"]["interval_ms"] == 5000 and found["revision"] == 4
    await res.call(handlers.remove_device, memo, retry=1)
    assert await core.device("press-1") is None


async def test_drift_is_re_reconciled(core: CoreProcess, memo: kopf.Memo,
                                      caplog: pytest.LogCaptureFixture) -> None:
    res = Resource(press_spec())
    await res.call(handlers.apply_device, memo)
    # someone edits the operator's device through the REST API
    doc = (await core.device("press-1") or {})["device"]
    r = await core.rest("PUT", "/devices/press-1", json={**doc, "tags": doc["tags"][:1]}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    with caplog.at_level(logging.WARNING, "kopf.objects"):
        await res.call(handlers.check_device, memo)
    found = await core.device("press-1")
    assert found is not None and [t["name"] for t in found["device"]["tags"]] == ["oil_temp", "setpoint"]
    assert found["revision"] == 3 and res.status["appliedRevision"] == 3 and res.status["repairs"] == 1
    assert "differs from its resource" in caplog.text
    # ... or deletes it: created again, with its owner mark
    assert (await core.rest("DELETE", "/devices/press-1")).status_code == 204
    await res.call(handlers.check_device, memo)
    found = await core.device("press-1")
    assert found is not None and found["owner"] == OWNER and found["revision"] == 5
    assert res.status["repairs"] == 2 and res.condition("Ready")["reason"] == "Applied"
    assert "deleted in gateway_core outside the operator" in caplog.text


async def test_a_device_made_through_the_rest_api_is_never_touched(core: CoreProcess, memo: kopf.Memo) -> None:
    mine = {"id": "press-1", "enterprise": "acme", "site": "berlin", "area": "stamping", "line": "line-1",
            "protocol": "modbus_tcp", "host": "10.9.9.9", "interval_ms": 2000,
            "tags": [{"name": "count", "table": "input", "address": 7, "type": "uint16"}]}
    assert (await core.rest("POST", "/devices", json=mine)).status_code == 201
    before = await core.device("press-1")
    res = Resource(press_spec())
    await res.call(handlers.apply_device, memo)  # no error to retry: it waits for a human
    assert await core.device("press-1") == before
    assert before is not None and before["owner"] is None
    ready, degraded = res.condition("Ready"), res.condition("Degraded")
    assert (ready["status"], ready["reason"], degraded["status"], degraded["reason"]) == (
        "False", "NotOwned", "True", "NotOwned")
    assert "is not this resource's (owner None); it is left as it is" in ready["message"]
    assert "appliedRevision" not in res.status
    # a spec change, a drift check, the finalizer: still untouched
    res.change(lambda s: s.update(interval_ms=250))
    await res.call(handlers.apply_device, memo)
    await res.call(handlers.check_device, memo)
    await res.call(handlers.remove_device, memo)
    assert await core.device("press-1") == before

    # another operator's device (another cluster): not even the adopt annotation takes it
    other = {**mine, "id": "oven-1"}
    r = await core.rest("POST", "/devices", json=other, headers={"X-Nexus-Owner": "cluster-b:plant-a/oven-1"})
    assert r.status_code == 201
    oven = Resource(press_spec(), name="oven-1", annotations={"edge.nexus.io/adopt": "true"})
    await oven.call(handlers.apply_device, memo)
    assert oven.condition("Ready")["reason"] == "NotOwned"
    assert (await core.device("oven-1") or {})["device"]["host"] == "10.9.9.9"

    # the annotation lets a resource take over a device nobody owns: from then on it is the operator's
    res.annotations["edge.nexus.io/adopt"] = "true"
    await res.call(handlers.apply_device, memo)
    found = await core.device("press-1")
    assert found is not None and found["owner"] == OWNER and found["device"]["interval_ms"] == 250
    assert res.condition("Ready")["reason"] == "Applied" and res.status["appliedRevision"] == found["revision"]
    await res.call(handlers.remove_device, memo)
    assert await core.device("press-1") is None


async def test_gateway_core_unreachable_is_degraded_and_retried(core: CoreProcess) -> None:
    memo = operator_memo(core.url, core.engineer_key, retry_first=1.0, retry_cap=30.0)
    memo.reconciler.client.timeout = 1.0
    try:
        res = Resource(press_spec())
        await res.call(handlers.apply_device, memo)
        # killed: connection refused
        core.kill()
        res.change(lambda s: s.update(interval_ms=250))
        for retry, delay in ((0, 1.0), (1, 2.0), (5, 30.0)):
            with pytest.raises(kopf.TemporaryError, match="gateway_core unreachable") as err:
                await res.call(handlers.apply_device, memo, retry=retry)
            assert err.value.delay == delay
        ready, degraded = res.condition("Ready"), res.condition("Degraded")
        assert (ready["status"], ready["reason"], degraded["status"], degraded["reason"]) == (
            "False", "CoreUnavailable", "True", "CoreUnavailable")
        assert "ClientConnectorError" in ready["message"]
        assert res.status["appliedRevision"] == 1  # what was applied stays shown
        # the finalizer waits too: the resource stays while the device cannot be deleted
        with pytest.raises(kopf.TemporaryError, match="gateway_core unreachable"):
            await res.call(handlers.remove_device, memo)

        # back (same database, same port): kopf's next retry applies the change
        await core.start()
        await res.call(handlers.apply_device, memo, retry=6)
        found = await core.device("press-1")
        assert found is not None and found["device"]["interval_ms"] == 250
        # Degraded now only because no gateway polls it in this test
        assert res.condition("Ready")["reason"] == "Applied" and res.condition("Degraded")["reason"] == "Unassigned"

        # paused (SIGSTOP): the request times out, the same way
        core.pause()
        try:
            with pytest.raises(kopf.TemporaryError, match="TimeoutError"):
                await res.call(handlers.check_device, memo)
            assert res.condition("Degraded")["reason"] == "CoreUnavailable"
        finally:
            core.resume()
        await res.call(handlers.check_device, memo)
        assert res.condition("Ready")["reason"] == "Applied"
    finally:
        await memo.reconciler.client.close()


async def test_refused_specs_are_degraded_with_gateway_cores_reason_and_not_retried(
        core: CoreProcess, memo: kopf.Memo) -> None:
    # the schema lets it through; the gateway's own rules do not (on_event is for bool tags)
    spec = press_spec()
    spec["tags"][0]["storage"] = "on_event"
    res = Resource(spec)
    assert await res.call(handlers.apply_device, memo)  # returns: nothing for kopf to retry
    ready, degraded = res.condition("Ready"), res.condition("Degraded")
    assert (ready["status"], ready["reason"], degraded["status"], degraded["reason"]) == (
        "False", "Invalid", "True", "Invalid")
    assert "storage on_event reports the edges of a bool tag" in degraded["message"]
    assert "(field device.tags[0]" in degraded["message"]
    assert await core.device("press-1") is None
    # the drift timer leaves an invalid generation alone (no request every interval)
    core.pause()
    try:
        assert await res.call(handlers.check_device, memo) == {}
    finally:
        core.resume()
    # fixed: applied
    res.change(lambda s: s["tags"][0].update(storage="on_change"))
    await res.call(handlers.apply_device, memo)
    assert res.condition("Ready")["reason"] == "Applied"

    # a key that may only read: gateway_core's 403, shown as Unauthorized (the operator's key is wrong)
    r = await core.rest("POST", "/keys", json={"name": "reader", "role": "viewer"})
    viewer = operator_memo(core.url, r.json()["key"])
    try:
        other = Resource(press_spec(), name="press-2")
        await other.call(handlers.apply_device, viewer)
    finally:
        await viewer.reconciler.client.close()
    assert (other.condition("Ready")["reason"], other.condition("Degraded")["reason"]) == (
        "Unauthorized", "Unauthorized")
    assert "needs engineer or above" in other.condition("Degraded")["message"]
    assert await core.device("press-2") is None

    # a NexusPlant that does not exist: refused before any request
    lost = Resource({k: v for k, v in press_spec().items() if k not in ("site", "area")} | {"plantRef": "nope"},
                    name="lost-1")
    await lost.call(handlers.apply_device, memo)
    assert lost.condition("Degraded")["reason"] == "Incomplete"
    assert "spec.plantRef: no NexusPlant 'nope' in namespace 'plant-a'" in lost.condition("Degraded")["message"]
    # ... until it comes: the drift timer tries again and finds it in kopf's index
    nope = {(NAMESPACE, "nope"): [{"site": "berlin", "area": "stamping"}]}
    await lost.call(handlers.check_device, memo, plants=nope)
    assert lost.condition("Ready")["reason"] == "Applied"
    assert (await core.device("lost-1") or {})["device"]["area"] == "stamping"


async def test_levels_from_a_nexusplant(core: CoreProcess, memo: kopf.Memo) -> None:
    # kopf's index of NexusPlants: what the index handler returns, one list per key
    indexed = await handlers.index_plant(namespace=NAMESPACE, name="berlin-stamping",
                                         spec={"enterprise": "acme", "site": "berlin", "area": "stamping",
                                               "line": "line-2"})
    plants = {key: [value] for key, value in indexed.items()}
    spec = {k: v for k, v in press_spec().items() if k not in ("enterprise", "site", "area", "line")}
    res = Resource({**spec, "plantRef": "berlin-stamping", "line": "line-9", "deviceId": "Press_7"})
    # an id a URL must quote: one path segment
    odd = Resource({**spec, "plantRef": "berlin-stamping", "deviceId": "Press 9?x=1%2F"}, name="press-9")
    await odd.call(handlers.apply_device, memo, plants=plants)
    assert odd.condition("Ready")["reason"] == "Applied", odd.status
    quoted = "/devices/Press%209%3Fx%3D1%252F"
    assert (await core.rest("GET", quoted)).json()["owner"] == f"{INSTANCE}:{NAMESPACE}/press-9"
    await odd.call(handlers.check_device, memo, plants=plants)
    assert odd.status["repairs"] == 0
    await odd.call(handlers.remove_device, memo)
    assert (await core.rest("GET", quoted)).status_code == 404
    await res.call(handlers.apply_device, memo, plants=plants)
    found = await core.device("Press_7")
    assert found is not None
    assert [found["device"][k] for k in ("enterprise", "site", "area", "line")] == ["acme", "berlin", "stamping",
                                                                                     "line-9"]
    assert res.status["deviceId"] == "Press_7"
    # a new device id: the device under the old id goes (it was this resource's too)
    res.change(lambda s: s.update(deviceId="Press_8"))
    await res.call(handlers.apply_device, memo, plants=plants)
    assert await core.device("Press_7") is None
    assert (await core.device("Press_8") or {})["owner"] == OWNER
    assert res.status["deviceId"] == "Press_8"
    # the finalizer finds the device by the id in the status
    await res.call(handlers.remove_device, memo)
    assert await core.device("Press_8") is None


class ErrorGateway(SimGateway):
    """A simulated gateway that reports an error for every device it polls."""

    def publish_status(self) -> None:
        with self._lock:
            status = pc.GatewayStatus(gateway=self.id, online=True, capacity=self.capacity,
                                      applied_revision=self.applied, devices=tuple(sorted(self.polling)),
                                      errors=dict.fromkeys(self.polling, "timeout: no answer from 10.0.0.5:502"),
                                      config_seq=self.seq)
            self.client.publish(pc.status_topic(self.root, self.id), pc.encode_status(status), qos=1, retain=True)


async def test_health_from_the_gateways_status(core: CoreProcess, memo: kopf.Memo, broker: Any) -> None:
    res = Resource(press_spec())
    await res.call(handlers.apply_device, memo)
    # no gateway at all: applied (Ready) but nobody polls it (Degraded)
    assert res.status["health"] == "Unassigned" and res.status.get("gateway") is None
    ready, degraded = res.condition("Ready"), res.condition("Degraded")
    assert (ready["status"], ready["reason"], degraded["status"], degraded["reason"]) == (
        "True", "Applied", "True", "Unassigned")
    assert degraded["message"] == "no live gateway polls the device"
    gw = ErrorGateway(broker.port, core.root, "gw-err", interval=0.2)
    try:
        await settle(res, memo, "Error")
    finally:
        gw.close()
    assert res.status["gateway"] == "gw-err"
    assert res.status["healthMessage"] == "gateway gw-err: timeout: no answer from 10.0.0.5:502"
    assert (res.condition("Degraded")["status"], res.condition("Degraded")["reason"]) == ("True", "DeviceError")



def operator_env(url: str, key: str, ops: int) -> dict[str, str]:
    # no Kubernetes credentials: no token file (not in a pod), no kubeconfig
    return {"NEXUS_OPERATOR_NAMESPACES": NAMESPACE, "NEXUS_OPERATOR_CORE_URL": url,
            "NEXUS_OPERATOR_CORE_API_KEY": key, "NEXUS_OPERATOR_OPS_PORT": str(ops),
            "NEXUS_OPERATOR_RETRY_FIRST": "0.5", "NEXUS_OPERATOR_LOG_JSON": "false", "KUBECONFIG": "",
            "HOME": "/nonexistent"}


async def readyz(port: int) -> Any:
    status, body = http_get(port, "/readyz")
    return orjson.loads(body) if status else None


async def test_the_process_checks_gateway_core_then_needs_kubernetes_credentials(
        core: CoreProcess, daemons: Callable[..., Daemon]) -> None:
    """``python -m nexus_operator`` with a real gateway_core and no API server: kopf's startup handler reads
    gateway_core with the key, then kopf's login finds no credentials: a clear error, exit code 1."""
    proc = daemons("nexus_operator", operator_env(core.url, core.engineer_key, free_port()), name="operator")
    assert proc.proc is not None
    await until(lambda: proc.proc.poll() is not None, 30, 0.2, what=lambda: proc.output())
    assert proc.proc.returncode == 1
    log = proc.output()
    assert f"gateway_core at {core.url} answers; watching NexusDevices" in log
    assert "no Kubernetes credentials (a ServiceAccount token or a kubeconfig)" in log
    assert core.engineer_key not in log


async def test_the_process_waits_for_gateway_core_serves_ops_and_stops_on_sigterm(
        daemons: Callable[..., Daemon]) -> None:
    ops = free_port()
    proc = daemons("nexus_operator", operator_env(f"http://127.0.0.1:{free_port()}", "nxk_secret-key-0123456789",
                                                  ops), name="operator-nocore")
    checks = await until(lambda: readyz(ops), 20, 0.2, what=lambda: proc.output())
    assert checks == {"ready": False, "checks": {"kopf": False, "kube": False, "core": False}}
    assert http_get(ops, "/healthz")[0] == 200
    assert "nexus_operator_reconciles_total" in http_get(ops, "/metrics")[1]
    # kopf retries its startup handler (gateway_core unreachable) soon, without a traceback
    await until(lambda: proc.output().count("gateway_core unreachable") >= 2, 20, 0.2, what=lambda: proc.output())
    assert "Traceback" not in proc.output()
    assert proc.stop(timeout=20) == 0, proc.output()
    assert "nxk_secret-key-0123456789" not in proc.output()
