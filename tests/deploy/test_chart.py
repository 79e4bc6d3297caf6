"""The chart rendered by Helm itself: Kubernetes schemas of a current version, and the invariants the
daemons need (probes, resources, non-root, read-only root, selectors, ports, env names, grace periods)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import typing
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

import gateway.daemon
from devtools import render_k8s
from gateway.settings import Settings as GatewaySettings
from gateway_core.settings import HttpSettings
from gateway_core.settings import Settings as CoreSettings
from ingestion import metrics as ingestion_metrics
from ingestion.settings import Settings as IngestionSettings
from nexus.common import MqttSettings
from nexus_operator.resources import DEVICES, GROUP, PLANTS
from nexus_operator.settings import Settings as OperatorSettings
from normalizer.settings import Settings as NormalizerSettings
from tests.deploy.render import CASES, by_kind, docs, matches, workloads

ROOT = Path(__file__).resolve().parents[2]
#: the Kubernetes version the manifests are validated against (kubernetes-validate's newest schemas)
K8S_VERSION = "1.37.0"
#: container -> (env prefix, settings class): the daemons of the image
DAEMONS: dict[str, tuple[str, type[Any]]] = {
    "gateway": ("NEXUS_GATEWAY", GatewaySettings),
    "ingestion": ("NEXUS_INGESTION", IngestionSettings),
    "core": ("NEXUS_CORE", CoreSettings),
    "normalizer": ("NEXUS_NORMALIZER", NormalizerSettings),
    "operator": ("NEXUS_OPERATOR", OperatorSettings),
}
#: the one workload that calls the Kubernetes API, so the one with a ServiceAccount token
TOKEN_WORKLOADS = ("operator",)
#: environment names a daemon container may set that are not its settings: Python's, libpq's password (the
#: bundled TimescaleDB's, kept out of the DSN) and TLS defaults (db.tls), OpenSSL's CA file (the operator)
FOREIGN_ENV = {"PYTHONDONTWRITEBYTECODE", "PGPASSWORD", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY",
               "SSL_CERT_FILE"}
ALL_CASES = sorted(CASES)
#: cluster-scoped kinds of the renders (kustomize gives them no namespace)
CLUSTER_KINDS = ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding")


def env_names(cls: type[Any], prefix: str) -> set[str]:
    """Every environment name ``nexus.settings.build`` reads for ``cls``: <PREFIX>_<FIELD>, nested."""
    hints = typing.get_type_hints(cls)
    names: set[str] = {f"{prefix}_CONFIG"}
    for f in dataclasses.fields(cls):
        name = f"{prefix}_{f.name}".upper()
        if dataclasses.is_dataclass(hints[f.name]):
            names |= env_names(hints[f.name], name)
        else:
            names.add(name)
    return names


def pod_spec(w: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = w["spec"]["template"]["spec"]
    return spec


def daemon_containers(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for w in workloads(objs):
        for c in pod_spec(w)["containers"]:
            if c["name"] in DAEMONS and c.get("command", [""])[0].startswith("nexus-"):
                out.append((c["name"], c, w))
    return out


def env_value(container: dict[str, Any], name: str) -> str | None:
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return None


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_object_validates_against_the_kubernetes_schemas(case: str) -> None:
    objs = docs(case)
    assert objs
    for obj in objs:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            # a CRD kind: no schema in kubernetes-validate; its required shape checked here
            assert obj["kind"] == "ServiceMonitor" and obj["spec"]["selector"]["matchLabels"]
            assert all(e["port"] for e in obj["spec"]["endpoints"])
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{case}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("case", ["defaults", "operator-clusterwide", "secured"])
def test_helm_lint_finds_nothing(case: str) -> None:
    report = helm_python.lint(str(render_k8s.CHART), CASES[case], strict=True, kube_version=f"v{K8S_VERSION}")
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not bad and not report.get("errors"), report


def test_k8s_folder_is_what_the_chart_renders() -> None:
    assert render_k8s.differences() == [], "k8s/ drifted from helm/nexus-edge: run `make k8s`"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("profile", render_k8s.PROFILES)
def test_kustomize_builds_each_profile(profile: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / profile)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    want = docs(profile)
    assert len(built) == len(want) + 1  # + the Namespace
    assert all(d["metadata"].get("namespace") == render_k8s.NAMESPACE for d in built if d["kind"] not in CLUSTER_KINDS)


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_workload_has_probes_resources_and_runs_non_root_read_only(case: str) -> None:
    for w in workloads(docs(case)):
        spec = pod_spec(w)
        where = f"{case}: {w['kind']}/{w['metadata']['name']}"
        component = w["metadata"]["labels"]["app.kubernetes.io/component"]
        assert spec["automountServiceAccountToken"] is (component in TOKEN_WORKLOADS), where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
        for c in spec["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{where}: {c['name']} has no {probe}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_daemons_probe_healthz_and_readyz_on_their_ops_port(case: str) -> None:
    for name, c, _ in daemon_containers(docs(case)):
        ops = next(p for p in c["ports"] if p["name"] == "ops")
        # the daemons' default ops port is 0 (off): the chart must set it, to the port it declares
        assert env_value(c, f"{DAEMONS[name][0]}_OPS_PORT") == str(ops["containerPort"])
        assert env_value(c, f"{DAEMONS[name][0]}_OPS_HOST") == "0.0.0.0"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}


def test_ports_agree_with_the_daemons_settings_defaults() -> None:
    values = yaml.safe_load((render_k8s.CHART / "values.yaml").read_text())
    assert values["core"]["http"]["port"] == HttpSettings().port
    assert values["mqtt"]["port"] == MqttSettings().port
    assert values["mqtt"]["maxInflight"] == MqttSettings().max_inflight
    objs = docs("prod")
    core = next(c for n, c, _ in daemon_containers(objs) if n == "core")
    http = next(p for p in core["ports"] if p["name"] == "http")
    assert env_value(core, "NEXUS_CORE_HTTP_PORT") == str(http["containerPort"]) == str(HttpSettings().port)
    emqx = next(w for w in by_kind(objs, "StatefulSet") if w["metadata"]["name"].endswith("-emqx"))
    mqtt = next(p for p in pod_spec(emqx)["containers"][0]["ports"] if p["name"] == "mqtt")
    for _, c, _ in daemon_containers(objs):
        prefix = next(p for p, _ in DAEMONS.values() if env_value(c, f"{p}_MQTT_PORT"))
        assert env_value(c, f"{prefix}_MQTT_PORT") == str(mqtt["containerPort"])


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_env_name_is_a_setting_of_its_daemon(case: str) -> None:
    for name, c, w in daemon_containers(docs(case)):
        prefix, cls = DAEMONS[name]
        known = env_names(cls, prefix) | FOREIGN_ENV
        unknown = {e["name"] for e in c.get("env", [])} - known
        assert not unknown, f"{case}: {w['metadata']['name']} sets {sorted(unknown)}, not settings of {cls}"


def test_env_names_are_derived_the_way_settings_load_them() -> None:
    names = env_names(IngestionSettings, "NEXUS_INGESTION")
    assert {"NEXUS_INGESTION_DB_DSN", "NEXUS_INGESTION_BATCH_MAX_PENDING_POINTS", "NEXUS_INGESTION_MQTT_HOST",
            "NEXUS_INGESTION_DRAIN_DEADLINE"} <= names
    assert "NEXUS_INGESTION_DB" not in names  # a section is not a setting


@pytest.mark.parametrize("case", ALL_CASES)
def test_hpa_and_pdb_selectors_match_pods(case: str) -> None:
    objs = docs(case)
    pods = {(w["kind"], w["metadata"]["name"]): w for w in workloads(objs)}
    hpas = by_kind(objs, "HorizontalPodAutoscaler")
    scaled = set()
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in pods, f"{case}: {hpa['metadata']['name']} scales nothing"
        assert "replicas" not in pods[(ref["kind"], ref["name"])]["spec"]  # the HPA owns the count
        scaled.add((ref["kind"], ref["name"]))
    for pdb in by_kind(objs, "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        hit = [k for k, w in pods.items() if matches(sel, w["spec"]["template"]["metadata"]["labels"])]
        assert len(hit) == 1, f"{case}: {pdb['metadata']['name']} selects {hit}"
        w = pods[hit[0]]
        assert hit[0] in scaled or w["spec"].get("replicas", 1) > 1, f"{case}: PDB on a single replica"
    for key, w in pods.items():  # every workload with more than one replica has a PDB
        many = key in scaled or w["spec"].get("replicas", 1) > 1
        labels = w["spec"]["template"]["metadata"]["labels"]
        has = any(matches(p["spec"]["selector"]["matchLabels"], labels) for p in by_kind(objs, "PodDisruptionBudget"))
        assert has == many, f"{case}: {key} replicas>1={many} but PDB={has}"
    for svc in by_kind(objs, "Service"):
        sel = svc["spec"]["selector"]
        assert any(matches(sel, w["spec"]["template"]["metadata"]["labels"]) for w in pods.values()), svc
    for np in by_kind(objs, "NetworkPolicy"):
        sel = np["spec"]["podSelector"]["matchLabels"]
        assert any(matches(sel, w["spec"]["template"]["metadata"]["labels"]) for w in pods.values()), np


def test_prod_autoscaling_is_2_to_10_on_cpu_70_and_memory_80_and_pending_points() -> None:
    for case in ("prod", "prod-pending-points"):
        hpas = {h["metadata"]["name"].rsplit("-", 1)[1]: h for h in by_kind(docs(case), "HorizontalPodAutoscaler")}
        assert set(hpas) == {"gateway", "ingestion"}
        for hpa in hpas.values():
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
            targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
                       for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
            assert targets == {"cpu": 70, "memory": 80}
    custom = [m for m in hpas["ingestion"]["spec"]["metrics"] if m["type"] == "Pods"]
    assert [m["pods"]["metric"]["name"] for m in custom] == [ingestion_metrics.PENDING_POINTS._name]


def test_grace_periods_cover_each_daemons_drain_deadline() -> None:
    margin = yaml.safe_load((render_k8s.CHART / "values.yaml").read_text())["terminationGraceMarginSeconds"]
    # the gateway: devices stop (5 s), queue sent (SHUTDOWN_DEADLINE), confirmations (SHUTDOWN_DEADLINE),
    # offline status (2 s): gateway/daemon.py, gateway/fleet.py, gateway/managed.py
    floors = {"gateway": 5 + 2 * gateway.daemon.SHUTDOWN_DEADLINE + 2,
              "core": CoreSettings(admin_key=None).mqtt_timeout}
    for case in ("prod", "normalizer-devices"):
        for name, c, w in daemon_containers(docs(case)):
            grace = pod_spec(w)["terminationGracePeriodSeconds"]
            prefix, cls = DAEMONS[name]
            if name in ("ingestion", "normalizer"):
                deadline = float(env_value(c, f"{prefix}_DRAIN_DEADLINE") or cls().drain_deadline)
                assert grace == deadline + margin, (name, grace)
            else:
                assert floors[name] + margin <= grace <= floors[name] + margin + 15, (name, grace)


def test_timescaledb_preloads_timescaledb_and_plans_for_ssds() -> None:
    db = next(w for w in by_kind(docs("prod"), "StatefulSet") if w["metadata"]["name"].endswith("-timescaledb"))
    args = pod_spec(db)["containers"][0]["args"]
    settings = dict(a.split("=", 1) for a in args if a != "-c")
    assert settings["shared_preload_libraries"] == "timescaledb"
    assert settings["random_page_cost"] == "1.1"
    claim = db["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "200Gi"


def test_emqx_is_a_three_node_dns_cluster_with_our_delivery_settings_and_acls() -> None:
    objs = docs("prod")
    emqx = next(w for w in by_kind(objs, "StatefulSet") if w["metadata"]["name"].endswith("-emqx"))
    assert emqx["spec"]["replicas"] == 3
    conf = next(c for c in by_kind(objs, "ConfigMap") if c["metadata"]["name"].endswith("-emqx"))["data"]
    text = conf["emqx.conf"]
    headless = emqx["spec"]["serviceName"]
    assert f'name = "{headless}.{render_k8s.NAMESPACE}.svc.cluster.local"' in text
    for line in ("discovery_strategy = dns", "record_type = srv", "shared_subscription = true",
                 f"max_inflight = {MqttSettings().max_inflight}", "max_mqueue_len = 10000", "no_match = deny"):
        assert line in text
    acl = conf["acl.conf"]
    for topic in ("$share/ingestion/nexus/batch/v1/#", "nexus/ack/v1/+", "$nexus/status/gateways/+",
                  "$nexus/config/devices/+", "$nexus/cmd/+/+/set", "raw/batch/v1/#"):
        assert f'"{topic}"' in acl
    assert acl.rstrip().endswith("{deny, all}.")
    node = next(e for e in pod_spec(emqx)["containers"][0]["env"] if e["name"] == "EMQX_NODE__NAME")
    assert node["value"] == f"emqx@$(POD_NAME).{headless}.{render_k8s.NAMESPACE}.svc.cluster.local"


def test_grafana_gets_the_historians_provisioning_files_as_they_are() -> None:
    objs = docs("prod")
    cms = {c["metadata"]["name"].rsplit("-", 1)[1]: c["data"] for c in by_kind(objs, "ConfigMap")}
    grafana = ROOT / "grafana"
    assert cms["provisioning"]["datasources.yaml"].strip() == \
        (grafana / "provisioning/datasources/nexus.yaml").read_text().strip()
    dashboards = {p.name: p.read_text().strip() for p in (grafana / "dashboards").glob("*.json")}
    assert {k: v.strip() for k, v in cms["dashboards"].items()} == dashboards


def test_external_broker_and_database_by_address() -> None:
    objs = docs("external-everything")
    assert not [w for w in workloads(objs) if w["metadata"]["name"].endswith(("-emqx", "-timescaledb"))]
    for name, c, _ in daemon_containers(objs):
        prefix = DAEMONS[name][0]
        assert env_value(c, f"{prefix}_MQTT_HOST") == "broker.example"
        dsn = next((e for e in c["env"] if e["name"] == f"{prefix}_DB_DSN"), None)
        if dsn is not None:
            assert dsn["valueFrom"]["secretKeyRef"] == {"name": "nexus-db", "key": "dsn"}


def _operator_objects(case: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    objs = docs(case)
    deploy = next(w for w in workloads(objs) if w["metadata"]["labels"]["app.kubernetes.io/component"] == "operator")
    roles = [o for o in objs if o["kind"] in ("Role", "ClusterRole")]
    bindings = [o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    return deploy, roles, bindings


@pytest.mark.parametrize("case", ["operator", "operator-clusterwide"])
def test_the_operators_rbac_is_least_privilege_for_its_crds(case: str) -> None:
    deploy, roles, bindings = _operator_objects(case)
    container = pod_spec(deploy)["containers"][0]
    account = pod_spec(deploy)["serviceAccountName"]
    crds = {(o["spec"]["group"], o["spec"]["names"]["plural"]) for o in docs(case)
            if o["kind"] == "CustomResourceDefinition"}
    assert crds == {(GROUP, DEVICES), (GROUP, PLANTS)}
    want = [
        {"apiGroups": [GROUP], "resources": [DEVICES], "verbs": ["list", "watch", "patch"]},
        {"apiGroups": [GROUP], "resources": [f"{DEVICES}/status"], "verbs": ["patch"]},
        {"apiGroups": [GROUP], "resources": [PLANTS], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    assert roles and all(r["rules"] == want for r in roles)
    if case == "operator-clusterwide":
        assert [r["kind"] for r in roles] == ["ClusterRole"] and env_value(container, "NEXUS_OPERATOR_CLUSTERWIDE")
        assert env_value(container, "NEXUS_OPERATOR_CORE_URL") == "https://core.example:8080"
    else:
        # one Role per watched namespace, the namespaces the operator is told to watch
        assert [r["kind"] for r in roles] == ["Role", "Role"]
        assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(
            (env_value(container, "NEXUS_OPERATOR_NAMESPACES") or "").split(",")) == ["plant-a", "plant-b"]
        assert env_value(container, "NEXUS_OPERATOR_CORE_URL") == "http://nexus-edge-core:8080"
    for b in bindings:
        ref = (b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
        assert ref in [(r["kind"], r["metadata"]["name"], r["metadata"].get("namespace")) for r in roles]
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": render_k8s.NAMESPACE}]
    assert len(bindings) == len(roles)
    # one replica, never two at once (kopf runs standalone, without peering)
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"] == {"type": "Recreate"}
    # every other ServiceAccount stays tokenless
    for sa in by_kind(docs(case), "ServiceAccount"):
        if sa["metadata"]["name"] != account:
            assert sa["automountServiceAccountToken"] is False, sa["metadata"]["name"]


def test_the_operator_may_reach_nexus_core_whatever_api_from_allows() -> None:
    objs = docs("operator")
    core = next(p for p in by_kind(objs, "NetworkPolicy") if p["metadata"]["name"] == "nexus-edge-core")
    peers = [f for rule in core["spec"]["ingress"] for f in rule.get("from", [])]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nexus-edge", "app.kubernetes.io/instance":
            "nexus-edge", "app.kubernetes.io/component": "operator"}}} in peers


def test_the_operator_is_off_by_default_and_its_crds_are_always_there() -> None:
    for case in ("defaults", "dev", "prod"):
        objs = docs(case)
        assert not [o for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "operator"]
        assert {o["metadata"]["name"] for o in by_kind(objs, "CustomResourceDefinition")} == {
            f"{DEVICES}.{GROUP}", f"{PLANTS}.{GROUP}"}


def test_the_operator_needs_a_nexus_core_to_talk_to() -> None:
    with pytest.raises(helm_python.errors.HelmRenderError, match=r"operator\.enabled needs nexus-core"):
        render_k8s.render({"operator": {"enabled": True}, "core": {"enabled": False}})
