"""Unit tests of settings loading: defaults < TOML file < environment, with errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Settings as GatewaySettings
from ingestion.settings import BatchSettings, DbSettings
from ingestion.settings import Settings as IngestionSettings
from nexus.common import LogSettings, MqttSettings, OpsSettings
from nexus.settings import SettingsError, load

ING = "NEXUS_INGESTION"
GW = "NEXUS_GATEWAY"


def ing(env: dict[str, str] | None = None, config_file: Path | None = None) -> IngestionSettings:
    return load(IngestionSettings, env_prefix=ING, env={"NEXUS_INGESTION_WORKER_ID": "w1", **(env or {})},
                config_file=config_file)


def gw(env: dict[str, str] | None = None, config_file: Path | None = None) -> GatewaySettings:
    return load(GatewaySettings, env_prefix=GW, env={"NEXUS_GATEWAY_GATEWAY_ID": "gw1", **(env or {})},
                config_file=config_file)


def ing_err(env: dict[str, str] | None = None, config_file: Path | None = None) -> SettingsError:
    with pytest.raises(SettingsError) as ei:
        ing(env, config_file)
    return ei.value


def toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "settings.toml"
    p.write_text(text)
    return p


# ---------------------------------------------------------------- defaults


def test_ingestion_defaults() -> None:
    s = ing()
    assert s.worker_id == "w1"
    assert (s.share_group, s.topic_root, s.session_expiry) == ("ingestion", "nexus", 0)
    assert s.mqtt == MqttSettings()
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.keepalive, s.mqtt.username, s.mqtt.password) == (
        "127.0.0.1", 1883, 30, None, None)
    assert s.db == DbSettings()
    assert s.db.dsn == "postgresql://nexus@127.0.0.1:5432/nexus"
    assert s.batch == BatchSettings(max_points=5000, max_age_ms=50, max_pending_points=50_000)
    assert s.ops == OpsSettings(port=0)
    assert s.log == LogSettings(level="INFO", json=True)
    assert s.client_id == "nexus-ingestion-w1"


def test_gateway_defaults() -> None:
    s = gw()
    assert (s.gateway_id, s.plant, s.topic_root, s.uns_prefix, s.tag_topics) == (
        "gw1", "plant.toml", "nexus", "", True)
    assert (s.queue_size, s.max_points_per_message) == (1000, 1000)
    assert s.mqtt == MqttSettings()
    assert s.client_id == "nexus-gateway-gw1"


def test_explicit_client_id_wins() -> None:
    assert ing({"NEXUS_INGESTION_MQTT_CLIENT_ID": "custom"}).client_id == "custom"
    assert gw({"NEXUS_GATEWAY_MQTT_CLIENT_ID": "c2"}).client_id == "c2"


def test_load_ignores_process_environment_when_env_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_INGESTION_MQTT_PORT", "1999")
    assert ing().mqtt.port == 1883
    assert load(IngestionSettings, env_prefix=ING).mqtt.port == 1999  # env=None reads os.environ


# ---------------------------------------------------------------- TOML file and precedence


SETTINGS_TOML = """
share_group = "hist"
topic_root = "site7/edge"
session_expiry = 600

[mqtt]
host = "broker.local"
port = 1884
username = "ing"
connect_timeout = 2.5

[db]
dsn = "postgresql://x@db/nexus"
retention_days = 30

[batch]
max_points = 100
max_age_ms = 50
max_pending_points = 1000

[log]
level = "debug"
json = false
"""


def test_toml_file(tmp_path: Path) -> None:
    s = ing(config_file=toml(tmp_path, SETTINGS_TOML))
    assert (s.share_group, s.topic_root, s.session_expiry) == ("hist", "site7/edge", 600)
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.username, s.mqtt.connect_timeout) == ("broker.local", 1884, "ing", 2.5)
    assert s.mqtt.keepalive == 30  # untouched default
    assert (s.db.dsn, s.db.retention_days) == ("postgresql://x@db/nexus", 30)
    assert s.batch == BatchSettings(max_points=100, max_age_ms=50, max_pending_points=1000)
    assert (s.log.level, s.log.json) == ("debug", False)


def test_config_file_from_env(tmp_path: Path) -> None:
    path = toml(tmp_path, SETTINGS_TOML)
    s = ing({"NEXUS_INGESTION_CONFIG": str(path)})
    assert s.mqtt.port == 1884


def test_env_overrides_toml_overrides_default(tmp_path: Path) -> None:
    path = toml(tmp_path, SETTINGS_TOML)
    s = ing({"NEXUS_INGESTION_MQTT_PORT": "1885", "NEXUS_INGESTION_BATCH_MAX_POINTS": "200",
             "NEXUS_INGESTION_SHARE_GROUP": "g2", "NEXUS_INGESTION_DB_DSN": "postgresql://env/db",
             "NEXUS_INGESTION_MQTT_KEEPALIVE": "15"}, path)
    assert s.mqtt.port == 1885  # env beats TOML
    assert s.mqtt.host == "broker.local"  # TOML beats default
    assert s.mqtt.keepalive == 15  # env beats default
    assert s.batch.max_points == 200 and s.batch.max_pending_points == 1000
    assert s.share_group == "g2"
    assert s.db.dsn == "postgresql://env/db"


def test_gateway_env(tmp_path: Path) -> None:
    s = gw({"NEXUS_GATEWAY_PLANT": "/etc/plant.yaml", "NEXUS_GATEWAY_UNS_PREFIX": "uns/v1",
            "NEXUS_GATEWAY_TAG_TOPICS": "false", "NEXUS_GATEWAY_QUEUE_SIZE": "50",
            "NEXUS_GATEWAY_MQTT_HOST": "mq", "NEXUS_GATEWAY_OPS_PORT": "9100"})
    assert (s.plant, s.uns_prefix, s.tag_topics, s.queue_size) == ("/etc/plant.yaml", "uns/v1", False, 50)
    assert (s.mqtt.host, s.ops.port) == ("mq", 9100)


def test_empty_env_makes_optional_none(tmp_path: Path) -> None:
    path = toml(tmp_path, '[mqtt]\npassword = "secret"\n')
    assert ing(config_file=path).mqtt.password == "secret"
    assert ing({"NEXUS_INGESTION_MQTT_PASSWORD": ""}, path).mqtt.password is None


def test_float_and_int_conversion(tmp_path: Path) -> None:
    s = ing({"NEXUS_INGESTION_MQTT_CONNECT_TIMEOUT": "0.25", "NEXUS_INGESTION_MQTT_RECONNECT_MAX": "5"})
    assert s.mqtt.connect_timeout == 0.25 and s.mqtt.reconnect_max == 5.0
    assert type(s.mqtt.reconnect_max) is float
    s = ing(config_file=toml(tmp_path, "[mqtt]\nport = 1886.0\n"))  # an integral float is an int
    assert s.mqtt.port == 1886 and type(s.mqtt.port) is int


# ---------------------------------------------------------------- booleans


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True), (" True ", True),
     ("false", False), ("False", False), ("0", False), ("no", False), ("off", False)],
)
def test_bool_parsing(raw: str, expected: bool) -> None:
    assert ing({"NEXUS_INGESTION_LOG_JSON": raw}).log.json is expected
    assert gw({"NEXUS_GATEWAY_TAG_TOPICS": raw}).tag_topics is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "", "t"])
def test_bad_bool(raw: str) -> None:
    e = ing_err({"NEXUS_INGESTION_LOG_JSON": raw})
    assert e.field == "log.json (env NEXUS_INGESTION_LOG_JSON)"
    assert "expected a boolean (true/false)" in str(e)


def test_toml_bool_and_int_types(tmp_path: Path) -> None:
    e = ing_err(config_file=toml(tmp_path, "[mqtt]\nport = true\n"))
    assert e.field == "mqtt.port"
    assert str(e) == "setting mqtt.port: expected an integer, got True"
    e = ing_err(config_file=toml(tmp_path, "[mqtt]\nport = 1883.5\n"))
    assert str(e) == "setting mqtt.port: expected an integer, got 1883.5"
    assert ing(config_file=toml(tmp_path, "[log]\njson = 0\n")).log.json is False


# ---------------------------------------------------------------- errors naming the field


def test_bad_int_from_env_names_field_and_variable() -> None:
    e = ing_err({"NEXUS_INGESTION_MQTT_PORT": "abc"})
    assert e.field == "mqtt.port (env NEXUS_INGESTION_MQTT_PORT)"
    assert str(e).startswith("setting mqtt.port (env NEXUS_INGESTION_MQTT_PORT): bad value 'abc'")
    assert isinstance(e, ValueError)


def test_bad_int_from_toml_names_field(tmp_path: Path) -> None:
    e = ing_err(config_file=toml(tmp_path, '[batch]\nmax_points = "lots"\n'))
    assert e.field == "batch.max_points"
    assert "bad value 'lots'" in str(e)
    e = ing_err(config_file=toml(tmp_path, 'session_expiry = "1d"\n'))
    assert e.field == "session_expiry"


def test_bad_float_names_field() -> None:
    e = ing_err({"NEXUS_INGESTION_MQTT_CONNECT_TIMEOUT": "ten"})
    assert e.field == "mqtt.connect_timeout (env NEXUS_INGESTION_MQTT_CONNECT_TIMEOUT)"
    assert "bad value 'ten'" in str(e)


def test_unknown_toml_keys(tmp_path: Path) -> None:
    e = ing_err(config_file=toml(tmp_path, 'shared_group = "x"\n'))
    assert e.field == "Settings"
    assert "unknown key(s) ['shared_group']" in str(e)
    e = ing_err(config_file=toml(tmp_path, "[mqtt]\nprot = 1\n"))
    assert e.field == "mqtt"
    assert "unknown key(s) ['prot']" in str(e) and "'port'" in str(e)  # lists the known keys
    e = ing_err(config_file=toml(tmp_path, "[kafka]\nhost = 'x'\n"))
    assert "unknown key(s) ['kafka']" in str(e)


def test_section_must_be_a_table(tmp_path: Path) -> None:
    e = ing_err(config_file=toml(tmp_path, "mqtt = 5\n"))
    assert (e.field, str(e)) == ("mqtt", "setting mqtt: expected a table")


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"NEXUS_INGESTION_MQTT_PORT": "70000"}, "mqtt.port"),
        ({"NEXUS_INGESTION_MQTT_PORT": "-1"}, "mqtt.port"),
        ({"NEXUS_INGESTION_OPS_PORT": "65536"}, "ops.port"),
        ({"NEXUS_INGESTION_MQTT_KEEPALIVE": "0"}, "mqtt.keepalive"),
        ({"NEXUS_INGESTION_MQTT_MAX_INFLIGHT": "0"}, "mqtt.max_inflight"),
        ({"NEXUS_INGESTION_MQTT_MAX_INFLIGHT": "65536"}, "mqtt.max_inflight"),
        ({"NEXUS_INGESTION_BATCH_MAX_POINTS": "0"}, "batch.max_points"),
        ({"NEXUS_INGESTION_BATCH_MAX_AGE_MS": "-5"}, "batch.max_age_ms"),
        ({"NEXUS_INGESTION_BATCH_MAX_POINTS": "60000"}, "batch.max_pending_points"),
        ({"NEXUS_INGESTION_LOG_LEVEL": "verbose"}, "log.level"),
        ({"NEXUS_INGESTION_SHARE_GROUP": "a/b"}, "share_group/topic_root"),
        ({"NEXUS_INGESTION_SHARE_GROUP": ""}, "share_group/topic_root"),
        ({"NEXUS_INGESTION_TOPIC_ROOT": "a/#"}, "share_group/topic_root"),
        ({"NEXUS_INGESTION_WORKER_ID": ""}, "worker_id"),
    ],
)
def test_validation_errors_name_field(env: dict[str, str], field: str) -> None:
    e = ing_err(env)
    assert e.field == field
    assert str(e).startswith(f"setting {field}: ")


def test_port_range_message() -> None:
    e = ing_err({"NEXUS_INGESTION_MQTT_PORT": "70000"})
    assert str(e) == "setting mqtt.port: must be a TCP port 0..65535, got 70000"
    assert ing({"NEXUS_INGESTION_MQTT_PORT": "65535"}).mqtt.port == 65535
    assert ing({"NEXUS_INGESTION_OPS_PORT": "0"}).ops.port == 0


def test_batch_pending_must_cover_max_points() -> None:
    with pytest.raises(SettingsError) as ei:
        BatchSettings(max_points=100, max_pending_points=99)
    assert ei.value.field == "batch.max_pending_points"
    assert str(ei.value) == "setting batch.max_pending_points: must be >= batch.max_points"
    assert BatchSettings(max_points=100, max_pending_points=100).max_pending_points == 100


def test_log_level_case_insensitive() -> None:
    assert ing({"NEXUS_INGESTION_LOG_LEVEL": "warning"}).log.level == "warning"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"NEXUS_GATEWAY_GATEWAY_ID": "gw/1"}, "gateway_id"),
        ({"NEXUS_GATEWAY_UNS_PREFIX": "a//b"}, "uns_prefix"),
        ({"NEXUS_GATEWAY_TOPIC_ROOT": "$SYS"}, "topic_root"),
        ({"NEXUS_GATEWAY_CONTROL_ROOT": "$nexus/+"}, "control_root"),
        ({"NEXUS_GATEWAY_MAX_CONCURRENT_POLLS": "0"}, "max_concurrent_polls"),
        ({"NEXUS_GATEWAY_QUEUE_SIZE": "0"}, "queue_size"),
        ({"NEXUS_GATEWAY_MAX_POINTS_PER_MESSAGE": "-1"}, "max_points_per_message"),
        ({"NEXUS_GATEWAY_MQTT_PORT": "99999"}, "mqtt.port"),
    ],
)
def test_gateway_validation(env: dict[str, str], field: str) -> None:
    with pytest.raises(SettingsError) as ei:
        gw(env)
    assert ei.value.field == field


def test_config_file_errors(tmp_path: Path) -> None:
    e = ing_err(config_file=tmp_path / "missing.toml")
    assert e.field == "config" and "not found" in str(e)
    e = ing_err(config_file=toml(tmp_path, "[mqtt\n"))
    assert e.field == "config" and "is not valid TOML" in str(e)


def test_connect_timeout_must_be_positive() -> None:
    ing_err({"NEXUS_INGESTION_MQTT_CONNECT_TIMEOUT": "-1"})
