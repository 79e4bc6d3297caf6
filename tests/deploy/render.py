"""The chart's renders the deploy tests check: the two profiles and each option on and off."""

from __future__ import annotations

import copy
import functools
from typing import Any

from devtools import render_k8s

#: the broker roles of mqtt.users
ROLES = ("gateway", "ingestion", "core", "normalizer")
#: name -> values over the chart's defaults (profiles first)
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "dev": render_k8s.profile_values("dev"),
    "prod": render_k8s.profile_values("prod"),
    "prod-pending-points": {**render_k8s.profile_values("prod"),
                            "ingestion": {"autoscaling": {"pendingPoints": {"enabled": True}}}},
    "normalizer-devices": {"normalizer": {"enabled": True, "replicas": 2, "devices": "[[devices]]\n"},
                           "mqtt": {"credentialsSecret": "nexus-mqtt"}},
    "servicemonitor": {"metrics": {"serviceMonitor": {"enabled": True}, "podAnnotations": False}},
    "external-everything": {"mqtt": {"host": "broker.example", "port": 8883}, "emqx": {"enabled": False},
                            "timescaledb": {"enabled": False},
                            "grafana": {"historian": {"host": "db.example",
                                                      "passwordSecret": {"name": "grafana-db"}}}},
    "no-grafana-no-netpol": {"grafana": {"enabled": False}, "networkPolicy": {"enabled": False}},
    "file-mode": {"gateway": {"configSource": "file", "autoscaling": {"enabled": False},
                              "spool": {"persistentVolumeClaim": "gw-spool"}}},
    "no-autoscaling": {"gateway": {"autoscaling": {"enabled": False}, "replicas": 1},
                       "ingestion": {"autoscaling": {"enabled": False}, "replicas": 1},
                       "emqx": {"replicas": 1, "acl": {"enabled": False}}},
    "no-spool-no-core": {"gateway": {"spool": {"enabled": False}}, "core": {"enabled": False},
                         "serviceAccount": {"create": False}},
    # Sparkplug B: the gateways edge nodes, ingestion the primary host, their topics in EMQX's ACL (shared user
    # and one identity per gateway)
    "sparkplug": {**render_k8s.profile_values("prod"), "sparkplug": {"enabled": True, "groupId": "plant-a"},
                  "mqtt": {"credentialsSecret": "nexus-mqtt"}},
    "sparkplug-identity": {"sparkplug": {"enabled": True}, "mqtt": {"credentialsSecret": "nexus-mqtt",
                                                                    "gatewayIdentity": {"enabled": True}}},
    # the nexus-operator: a Role in each watched namespace; clusterwide with an external nexus-core
    "operator": {**render_k8s.profile_values("prod"),
                 "operator": {"enabled": True, "namespaces": ["plant-a", "plant-b"]}},
    "operator-clusterwide": {"operator": {"enabled": True, "clusterwide": True,
                                          "coreUrl": "https://core.example:8080"},
                             "core": {"enabled": False}},
    # secured broker and database, each option on (docs/security.md, "In the chart"): TLS to the bundled
    # EMQX with client certificates for every role, one broker identity per gateway, PostgreSQL over TLS,
    # nexus-core on HTTPS with its users' settings, the operator calling it over HTTPS
    "secured": {**render_k8s.profile_values("prod"),
                "mqtt": {"credentialsSecret": "nexus-mqtt", "gatewayIdentity": {"enabled": True, "tokenTtlDays": 30},
                         "tls": {"enabled": True, "clientCertSecrets": {r: f"{r}-mqtt-cert" for r in ROLES}}},
                "emqx": {"replicas": 3, "cookieSecret": "nexus-emqx",
                         "tls": {"enabled": True, "secret": "emqx-tls", "verifyClients": True}},
                "db": {"tls": {"sslmode": "verify-full", "caSecret": "pg-ca", "clientCertSecret": "pg-client"}},
                "timescaledb": {"tls": {"secret": "timescaledb-tls"}},
                "gateway": {"unsPrefix": "v1"},
                "core": {"http": {"tls": {"secret": "core-tls"}},
                         "adminUser": {"name": "ops-admin", "passwordSecret": {"name": "core-admin-user"}},
                         "jwtSecret": {"name": "core-jwt"}},
                "normalizer": {"enabled": True},
                "operator": {"enabled": True}},
    # a chart-made credentials Secret; file mode with its own identity; an external TLS broker with a CA
    "file-mode-identity": {"mqtt": {"host": "broker.example", "createCredentials": True,
                                    "gatewayIdentity": {"enabled": True},
                                    "tls": {"enabled": True, "caSecret": "plant-ca", "caKey": "ca.pem",
                                            "insecureNoHostnameCheck": True}},
                           "emqx": {"enabled": False},
                           "gateway": {"configSource": "file", "autoscaling": {"enabled": False},
                                       "gatewayId": "edge.gw-1"}},
    # the bundled EMQX with TLS and its plain listener kept, the daemons on plain MQTT with created passwords
    "emqx-tls-and-plain": {"mqtt": {"createCredentials": True},
                           "emqx": {"tls": {"enabled": True, "secret": "emqx-tls", "plainListener": True}}},
}


@functools.cache
def _render(case: str) -> tuple[dict[str, Any], ...]:
    files = render_k8s.render(copy.deepcopy(CASES[case]))
    return tuple(render_k8s.documents(files))


def docs(case: str) -> list[dict[str, Any]]:
    """The objects of one case (a fresh copy: tests may not change the cache)."""
    return copy.deepcopy(list(_render(case)))


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
