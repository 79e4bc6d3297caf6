"""The bundled EMQX's ACL as the chart renders it, decided rule by rule as EMQX does (tests/deploy/emqx_acl.py):
each role may publish and subscribe what its daemon does and is refused the rest, in every case with the ACL
on (one user for all gateways, one identity each, a uns prefix). Topics from proto/, as the daemons build them."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_core.live import LEVELS, LiveHub
from gateway_core.settings import LiveSettings
from proto import config as pc
from proto.delivery import ack_topic
from proto.health import health_filter, health_topic
from proto.uns import DevicePath, batch_filter, batch_topic
from tests.deploy.emqx_acl import Rule, decide, parse
from tests.deploy.render import CASES, by_kind, docs
from tests.deploy.test_chart import daemon_containers, env_value

DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
ROOT, CONTROL = "nexus", pc.DEFAULT_CONTROL_ROOT  # the chart's topicRoot and controlRoot, which no case changes
#: a gateway pod's name (<deployment>-<pod-template-hash>-<5 characters>): its user with gatewayIdentity
POD = "nexus-edge-gateway-5c6d7f8b9-x7k2p"
OTHER_POD = "nexus-edge-gateway-5c6d7f8b9-q4m8z"


def acl(case: str) -> list[Rule] | None:
    cm = next(c for c in by_kind(docs(case), "ConfigMap") if c["metadata"]["name"].endswith("-emqx"))
    return parse(cm["data"]["acl.conf"]) if "acl.conf" in cm["data"] else None


ACL_CASES = [c for c in CASES if any(o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-emqx")
                                     and "acl.conf" in o["data"] for o in docs(c))]


def values(case: str) -> dict[str, Any]:
    v = CASES[case]
    identity = v.get("mqtt", {}).get("gatewayIdentity", {}).get("enabled", False)
    return {"gateway": POD if identity else "gateway", "other": OTHER_POD if identity else "gateway",
            "identity": identity, "prefix": v.get("gateway", {}).get("unsPrefix", "")}


def test_the_acl_cases_cover_both_gateway_user_modes_and_a_uns_prefix() -> None:
    assert {"prod", "secured", "sparkplug", "sparkplug-identity"} <= set(ACL_CASES)
    assert {values(c)["identity"] for c in ACL_CASES} == {True, False}
    assert any(values(c)["prefix"] for c in ACL_CASES)


@pytest.mark.parametrize("case", ACL_CASES)
def test_gateways_write_any_devices_health_and_no_other_role_does(case: str) -> None:
    rules = acl(case)
    assert rules is not None
    v = values(case)
    health = health_topic(CONTROL, DEVICE.device)
    # gateway_core assigns devices at run time: a gateway reports (and clears) whichever it is given
    for gw in (v["gateway"], v["other"]):
        for topic in (health, health_topic(CONTROL, "oven-9")):
            assert decide(rules, gw, "publish", topic) == "allow", (gw, topic)
    for user in ("ingestion", "core", "normalizer"):
        assert decide(rules, user, "publish", health) == "deny", user
    assert decide(rules, v["gateway"], "publish", f"{CONTROL}/status/devices") == "deny"
    assert decide(rules, v["gateway"], "publish", f"{health}/x") == "deny"
    assert decide(rules, v["gateway"], "subscribe", health_filter(CONTROL)) == "deny"  # reports are core's to read


@pytest.mark.parametrize("case", ACL_CASES)
def test_gateway_core_subscribes_what_the_web_console_reads_and_writes_none_of_it(case: str) -> None:
    rules = acl(case)
    assert rules is not None
    prefix = values(case)["prefix"]
    tags = (f"{prefix}/" if prefix else "") + "/".join(["+"] * LEVELS)  # the live stream's per-tag filter
    for topic in (health_filter(CONTROL), batch_filter(ROOT), tags, pc.status_filter(CONTROL)):
        assert decide(rules, "core", "subscribe", topic) == "allow", topic
    # EMQX checks the filter as written: nothing wider than what gateway_core subscribes
    for topic in ("#", f"{CONTROL}/#", f"{ROOT}/#", "nexus/ack/v1/+", f"{ROOT}/windows/v1/#", "+/+/+/+/+"):
        assert decide(rules, "core", "subscribe", topic) == "deny", topic
    tag = DEVICE.tag("temp").topic(prefix)
    for topic in (batch_topic(DEVICE, ROOT), tag, health_topic(CONTROL, DEVICE.device)):
        assert decide(rules, "core", "publish", topic) == "deny", topic


@pytest.mark.parametrize("case", ACL_CASES)
def test_every_role_keeps_what_it_had(case: str) -> None:
    rules = acl(case)
    assert rules is not None
    v = values(case)
    gw = v["gateway"]
    tag = DEVICE.tag("temp").topic(v["prefix"])
    allowed = [
        (gw, "publish", batch_topic(DEVICE, ROOT)), (gw, "publish", tag),
        (gw, "publish", pc.status_topic(CONTROL, gw)), (gw, "publish", pc.sync_request_topic(CONTROL)),
        (gw, "subscribe", ack_topic(gw, ROOT)), (gw, "subscribe", pc.device_filter(CONTROL)),
        ("ingestion", "subscribe", "$share/ingestion/" + batch_filter(ROOT)),
        ("ingestion", "publish", ack_topic(gw, ROOT)), ("core", "publish", pc.device_topic(CONTROL, DEVICE.device)),
        ("core", "publish", pc.status_topic(CONTROL, gw)),
        ("core", "subscribe", pc.sync_request_topic(CONTROL)),
    ]
    refused = [
        (gw, "publish", ack_topic(gw, ROOT)), (gw, "publish", pc.device_topic(CONTROL, DEVICE.device)),
        ("ingestion", "publish", batch_topic(DEVICE, ROOT)), ("core", "publish", ack_topic(gw, ROOT)),
        ("normalizer", "publish", pc.status_topic(CONTROL, gw)),
    ]
    if v["identity"]:  # its own status and confirmations alone
        refused += [(gw, "publish", pc.status_topic(CONTROL, OTHER_POD)), (gw, "subscribe", ack_topic(OTHER_POD, ROOT))]
    assert [a for a in allowed if decide(rules, *a) != "allow"] == []
    assert [r for r in refused if decide(rules, *r) != "deny"] == []


@pytest.mark.parametrize("case", [c for c in ACL_CASES if any(n == "core" for n, _, _ in daemon_containers(docs(c)))])
def test_the_live_streams_subscriptions_as_nexus_core_is_configured_are_granted(case: str) -> None:
    """gateway_core's own LiveHub, with the settings the chart gives its container, in both live.changes modes."""
    rules = acl(case)
    assert rules is not None
    core = next(c for name, c, _ in daemon_containers(docs(case)) if name == "core")
    live = {k: env_value(core, f"NEXUS_CORE_LIVE_{k.upper()}") for k in ("uns_prefix", "topic_root")}
    assert live["topic_root"] == ROOT and live["uns_prefix"] == values(case)["prefix"]
    control = env_value(core, "NEXUS_CORE_CONTROL_ROOT")
    assert control == CONTROL
    topics = {health_filter(control)}
    for changes in ("batches", "tags"):
        hub = LiveHub(LiveSettings(uns_prefix=live["uns_prefix"] or "", topic_root=ROOT, changes=changes))
        topics |= {t for t, _ in hub.subscriptions()}
    assert len(topics) == 3  # health, batches, per-tag
    assert [t for t in sorted(topics) if decide(rules, "core", "subscribe", t) != "allow"] == []
