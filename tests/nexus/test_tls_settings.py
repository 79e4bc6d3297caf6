"""The broker's TLS and credential settings: loaded from env and TOML like every setting, checked at load
with an error naming the field, secrets kept out of repr; and the repeat counter of failure log lines."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from gateway_core.settings import HttpSettings
from ingestion.settings import Settings as IngestionSettings
from nexus.common import MqttSettings
from nexus.mqtt_failures import RepeatLog, connack_refusal
from nexus.settings import SettingsError, load
from tests.nexus.certs import PASSPHRASE, Certs


def ing(env: dict[str, str], config_file: Path | None = None) -> IngestionSettings:
    return load(IngestionSettings, env_prefix="NEXUS_INGESTION", env={"NEXUS_INGESTION_WORKER_ID": "w1", **env},
                config_file=config_file)


def refused(**kw: object) -> SettingsError:
    with pytest.raises(SettingsError) as ei:
        MqttSettings(**kw)  # type: ignore[arg-type]
    return ei.value


def test_tls_settings_from_env_and_toml(certs: Certs, tmp_path: Path) -> None:
    s = ing({"NEXUS_INGESTION_MQTT_CA_FILE": str(certs.ca.cert),
             "NEXUS_INGESTION_MQTT_CERT_FILE": str(certs.client.cert),
             "NEXUS_INGESTION_MQTT_KEY_FILE": str(certs.client.key), "NEXUS_INGESTION_MQTT_PORT": "8883"}).mqtt
    assert (s.ca_file, s.cert_file, s.key_file, s.port) == (certs.ca.cert, certs.client.cert, certs.client.key, 8883)
    assert s.tls_enabled and not s.tls  # implied by the CA file
    ctx = s.tls_context()
    assert (ctx.minimum_version, ctx.verify_mode, ctx.check_hostname) == (
        ssl.TLSVersion.TLSv1_2, ssl.CERT_REQUIRED, True)
    toml = tmp_path / "s.toml"
    toml.write_text(f'[mqtt]\ntls = true\ntls_insecure_no_hostname_check = true\nca_file = "{certs.ca.cert}"\n')
    s = ing({}, toml).mqtt
    assert s.tls and s.tls_insecure_no_hostname_check and s.tls_context().check_hostname is False
    assert s.tls_context().verify_mode == ssl.CERT_REQUIRED  # the chain is still verified
    assert MqttSettings(tls=True).tls_context().verify_mode == ssl.CERT_REQUIRED  # the system's CAs


def test_secrets_stay_out_of_repr_and_str(certs: Certs) -> None:
    s = MqttSettings(username="gw-a", password="hunter2-secret", ca_file=certs.ca.cert,
                     cert_file=certs.client_encrypted.cert, key_file=certs.client_encrypted.key,
                     key_password=PASSPHRASE)
    for text in (repr(s), str(s), repr(ing({"NEXUS_INGESTION_MQTT_USERNAME": "u",
                                            "NEXUS_INGESTION_MQTT_PASSWORD": "hunter2-secret"}))):
        assert "hunter2-secret" not in text and PASSPHRASE not in text
    assert "gw-a" in repr(s)


@pytest.mark.parametrize(("kw", "field", "text"), [
    ({"ca_file": "/nonexistent/ca.pem"}, "mqtt.ca_file", "/nonexistent/ca.pem does not exist"),
    ({"ca_file": "/"}, "mqtt.ca_file", "/ is not a file"),
    ({"tls": True, "key_file": "CLIENT_KEY"}, "mqtt.cert_file", "required with mqtt.key_file"),
    ({"cert_file": "CLIENT_CERT"}, "mqtt.key_file", "required with mqtt.cert_file"),
    ({"key_file": "CLIENT_KEY"}, "mqtt.key_file", "only with TLS"),
    ({"tls_insecure_no_hostname_check": True}, "mqtt.tls_insecure_no_hostname_check", "only with TLS"),
    ({"tls": True, "key_password": "x"}, "mqtt.key_password", "only with mqtt.key_file"),
    ({"ca_file": "CLIENT_KEY"}, "mqtt.ca_file", "holds no usable PEM CA certificate"),
    ({"cert_file": "ENC_CERT", "key_file": "ENC_KEY"}, "mqtt.key_password", "is encrypted: give its passphrase"),
    ({"cert_file": "ENC_CERT", "key_file": "ENC_KEY", "key_password": "wrong"}, "mqtt.key_password",
     "does not decrypt mqtt.key_file"),
    ({"cert_file": "CLIENT_CERT", "key_file": "SERVER_KEY"}, "mqtt.key_file", "is not the key of the certificate"),
])
def test_bad_tls_settings_are_refused_naming_the_field(certs: Certs, kw: dict[str, object], field: str,
                                                        text: str) -> None:
    files = {"CLIENT_CERT": certs.client.cert, "CLIENT_KEY": certs.client.key, "SERVER_KEY": certs.server.key,
             "ENC_CERT": certs.client_encrypted.cert, "ENC_KEY": certs.client_encrypted.key}
    kw = {k: (files[v] if isinstance(v, str) and v in files else Path(str(v)) if k.endswith("_file") else v)
          for k, v in kw.items()}
    err = refused(**kw)
    assert err.field == field and text in str(err), str(err)


def test_an_unreadable_file_is_named(certs: Certs, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.ca.cert.read_bytes())
    ca.chmod(0)
    assert "is not readable by this process" in str(refused(ca_file=ca))


def test_env_error_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"setting mqtt\.ca_file: /nope does not exist"):
        ing({"NEXUS_INGESTION_MQTT_CA_FILE": "/nope"})
    with pytest.raises(SettingsError, match=r"mqtt\.tls \(env NEXUS_INGESTION_MQTT_TLS\): expected a boolean"):
        ing({"NEXUS_INGESTION_MQTT_TLS": "sometimes"})


def test_rest_api_tls_settings(certs: Certs) -> None:
    h = HttpSettings(tls_cert_file=certs.server.cert, tls_key_file=certs.server.key, tls_ca_file=certs.ca.cert)
    assert h.scheme == "https"
    assert h.uvicorn_tls() == {"ssl_certfile": str(certs.server.cert), "ssl_keyfile": str(certs.server.key),
                               "ssl_keyfile_password": None, "ssl_ca_certs": str(certs.ca.cert),
                               "ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert HttpSettings().uvicorn_tls() == {} and HttpSettings().scheme == "http"
    for kw, field in [({"tls_key_file": certs.server.key}, "http.tls_key_file"),
                      ({"tls_cert_file": certs.server.cert}, "http.tls_key_file"),
                      ({"tls_cert_file": certs.client_encrypted.cert, "tls_key_file": certs.client_encrypted.key},
                       "http.tls_key_password"),
                      ({"tls_cert_file": certs.server.cert, "tls_key_file": certs.client.key}, "http.tls_key_file"),
                      ({"tls_cert_file": certs.server.cert, "tls_key_file": certs.server.key,
                        "tls_ca_file": Path("/nope")}, "http.tls_ca_file")]:
        with pytest.raises(SettingsError) as ei:
            HttpSettings(**kw)  # type: ignore[arg-type]
        assert ei.value.field == field, str(ei.value)
    enc = HttpSettings(tls_cert_file=certs.client_encrypted.cert, tls_key_file=certs.client_encrypted.key,
                       tls_key_password=PASSPHRASE)
    assert PASSPHRASE not in repr(enc) and enc.uvicorn_tls()["ssl_keyfile_password"] == PASSPHRASE


def test_connack_refusals_name_the_user_never_the_password() -> None:
    assert connack_refusal(0x86, "Bad user name or password", "gw-a") == (
        "broker refused the connection: bad user name or password (CONNACK 0x86) for user 'gw-a'")
    assert connack_refusal(0x87, "Not authorized", None) == (
        "broker refused the connection: not authorized (CONNACK 0x87) without a user name (settings mqtt.username, "
        "mqtt.password): bad user name or password, or not allowed to connect")
    assert connack_refusal(0x8A, "Banned", "gw-a") == "broker refused the connection: banned (CONNACK 0x8A)"


def test_repeat_log_logs_a_failure_once_then_every_interval_with_its_count() -> None:
    now = [0.0]
    r = RepeatLog(interval=300, max_keys=1, clock=lambda: now[0])
    assert r.note("a") == 0  # first: logged
    now[0] = 10
    assert r.note("a") is None and r.note("a") is None  # repeats within the interval: not logged
    now[0] = 301
    assert r.note("a") == 2  # logged again, with the two unlogged ones
    assert r.note("b") == 0  # another failure: logged at once (and, with one key, "a" is forgotten)
    assert r.note("a") == 0
    r.clear()
    assert r.note("a") == 0
