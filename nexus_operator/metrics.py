"""Prometheus metrics of the operator (served on the ops port's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

RECONCILES = Counter(
    "nexus_operator_reconciles_total",
    "Reconciles of NexusDevice resources by result "
    "(applied, unchanged, repaired, refused, not_owned, incomplete, unavailable)",
    ["result"],
)
REPAIRS = Counter(
    "nexus_operator_drift_repairs_total", "Devices re-applied because they differed from their resource"
)
DELETES = Counter("nexus_operator_deletes_total", "Finalizer runs by result (deleted, gone, not_owned)", ["result"])
