"""What the operator gives kopf: handlers on its registry for the right resources and events, kopf's own
settings, and the settings of the process (a bad one named at start, as every daemon does)."""

from __future__ import annotations

import subprocess
import sys

import kopf
import pytest

from nexus_operator import handlers
from nexus_operator.settings import Settings
from tests.support import ROOT


def test_every_handler_is_on_the_registry() -> None:
    registry = kopf.OperatorRegistry()
    handlers.register(registry, Settings(namespaces=("plant-a",), drift_interval=30.0))
    changing = {(h.fn.__name__, str(h.reason)) for h in registry._changing.get_all_handlers()}
    assert {name for name, _ in changing} == {"apply_device", "remove_device"}
    timers = registry._spawning.get_all_handlers()
    assert [(h.fn.__name__, h.interval, h.initial_delay) for h in timers] == [("check_device", 30.0, 30.0)]
    assert [h.fn.__name__ for h in registry._indexing.get_all_handlers()] == ["index_plant"]
    activities = {h.fn.__name__ for h in registry._activities.get_all_handlers()}
    assert {"startup", "login", "_cleanup"} <= activities
    for h in [*registry._changing.get_all_handlers(), *timers]:
        assert (h.selector.group, h.selector.version, h.selector.any_name) == (
            "edge.nexus.io", "v1alpha1", "nexusdevices")


def test_kopf_settings() -> None:
    s = kopf.OperatorSettings()
    handlers.configure(s)
    assert s.persistence.finalizer == "edge.nexus.io/nexus-operator"
    assert s.peering.standalone is True and s.scanning.disabled is True
    assert isinstance(s.persistence.progress_storage, kopf.AnnotationsProgressStorage)


def test_retry_delays_are_capped_exponential() -> None:
    s = Settings(namespaces=("a",), retry_first=2.0, retry_cap=120.0)
    assert [s.retry_delay(n) for n in range(8)] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0, 120.0]
    assert s.retry_delay(10_000) == 120.0


@pytest.mark.parametrize(("env", "message"), [
    ({}, "setting namespaces: name the namespaces to watch, or set clusterwide"),
    ({"NEXUS_OPERATOR_NAMESPACES": "a", "NEXUS_OPERATOR_CLUSTERWIDE": "true"}, "not both"),
    ({"NEXUS_OPERATOR_NAMESPACES": "a", "NEXUS_OPERATOR_CORE_URL": "core:8080"}, "setting core.url"),
    ({"NEXUS_OPERATOR_NAMESPACES": "a", "NEXUS_OPERATOR_INSTANCE": "Not A Label"}, "setting instance"),
])
def test_a_bad_setting_is_named_at_start(env: dict[str, str], message: str) -> None:
    out = subprocess.run([sys.executable, "-m", "nexus_operator"], check=False, capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env})
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
