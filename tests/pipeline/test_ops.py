"""Every daemon serves /healthz, /readyz and /metrics on its ops port."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.local import free_port
from tests.support.daemons import gateway_env, http_get, ingestion_env
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


def test_ingestion_ops_endpoints(broker, db, prefix, daemons) -> None:
    port = free_port()
    ing = daemons("ingestion", ingestion_env(broker, db, prefix, NEXUS_INGESTION_OPS_PORT=str(port)))
    wait_for(lambda: http_get(port, "/readyz")[0] == 200, 20, what=f"ingestion ready\n{ing.output()}")
    assert http_get(port, "/healthz") == (200, "ok\n")
    status, body = http_get(port, "/readyz")
    assert '"mqtt":true' in body and '"db":true' in body
    status, body = http_get(port, "/metrics")
    assert status == 200
    for name in ("nexus_ingest_points_stored_total", "nexus_ingest_batch_points", "nexus_ingest_copy_seconds",
                 "nexus_ingest_pending_points", "nexus_ingest_dead_letters_total", "nexus_mqtt_reconnects"):
        assert name in body, name
    assert http_get(port, "/nope")[0] == 404
    assert ing.stop() == 0


def test_ingestion_not_ready_while_database_is_unreachable(broker, prefix, daemons) -> None:
    port = free_port()
    dead_dsn = f"postgresql://nexus@127.0.0.1:{free_port()}/nope"
    ing = daemons("ingestion", ingestion_env(broker, dead_dsn, prefix, NEXUS_INGESTION_OPS_PORT=str(port)))
    wait_for(lambda: http_get(port, "/healthz")[0] == 200, 20, what=f"healthz\n{ing.output()}")
    status, body = http_get(port, "/readyz")
    assert status == 503 and '"db":false' in body
    assert ing.stop() == 0


def test_gateway_ops_endpoints_and_bad_quality_when_device_down(tmp_path: Path, broker, prefix, daemons) -> None:
    port = free_port()
    plant = tmp_path / "plant.toml"
    plant.write_text(f"""
[plant]
enterprise = "acme"
site = "s"
area = "a"
line = "l"
[[devices]]
id = "ghost"
port = {free_port()}
interval_ms = 100
  [[devices.tags]]
  name = "t"
  address = 0
""")
    gw = daemons("gateway", gateway_env(broker, plant, prefix, NEXUS_GATEWAY_OPS_PORT=str(port)))
    wait_for(lambda: http_get(port, "/readyz")[0] == 200, 20, what=f"gateway ready\n{gw.output()}")
    wait_for(lambda: 'nexus_gateway_read_errors_total{device="ghost"}' in http_get(port, "/metrics")[1], 20,
             what="read errors counted")
    body = http_get(port, "/metrics")[1]
    assert 'nexus_gateway_device_connected{device="ghost"} 0.0' in body
    for name in ("nexus_gateway_skipped_polls_total", "nexus_gateway_poll_seconds", "nexus_gateway_publish_queue_depth",
                 "nexus_gateway_points_published_total"):
        assert name in body, name
    assert gw.stop() == 0


def test_gateway_refuses_invalid_plant_config_with_a_clear_message(tmp_path: Path, broker, prefix, daemons) -> None:
    plant = tmp_path / "plant.toml"
    plant.write_text('[[devices]]\nid = "x"\nenterprise="e"\nsite="s"\narea="a"\nline="l"\nprotocol = "profibus"\n')
    gw = daemons("gateway", gateway_env(broker, plant, prefix))
    assert gw.proc is not None and gw.proc.wait(20) == 2
    assert "devices[0]: 'protocol' is 'profibus'; expected one of modbus_tcp" in gw.output()
