"""The chart's secured options, each on and off: broker TLS and credentials, one broker identity per gateway,
PostgreSQL over TLS, nexus-core's HTTPS and users. Each daemon's settings are loaded (``nexus.settings.load``,
as the daemon does at start) from the env of its rendered container, with its volumes laid out in a temp folder
the way the kubelet would mount them: a file a setting names must be in a volume, from the Secret key it is."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest

from devtools import render_k8s
from nexus.settings import load
from tests.deploy.render import ROLES, by_kind, docs, workloads
from tests.deploy.test_chart import DAEMONS, pod_spec

#: what the kubelet puts into metadata.name (a Deployment pod: <deployment>-<template hash>-<5 characters>)
POD_NAMES = {"gateway": "nexus-edge-gateway-7d9c8b6f4-x2kq9", "normalizer": "nexus-edge-normalizer-0"}
TOKEN_KEY = "k" * 48


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A CA and one certificate with its key (openssl), as the keys of cert-manager's Secrets."""
    d = tmp_path_factory.mktemp("pki")
    run = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
    subprocess.run([*run, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-subj", "/CN=test-ca",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", d / "tls.key", "-out", d / "tls.csr", "-subj", "/CN=nexus-edge-emqx"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", d / "tls.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
                    "-CAcreateserial", "-out", d / "tls.crt", "-days", "2"], check=True, capture_output=True)
    return {name: (d / name).read_bytes() for name in ("ca.crt", "tls.crt", "tls.key")}


def secret_value(secret: str, key: str, pki: dict[str, bytes]) -> bytes:
    """A stand-in for the Secrets the chart expects to exist: certificates under their usual keys."""
    if key in pki:
        return pki[key]
    if key == "ca.pem":  # file-mode-identity's mqtt.tls.caKey
        return pki["ca.crt"]
    if key == "gateway-token-key":
        return TOKEN_KEY.encode()
    return f"{secret}-{key}-0123456789abcdef0123456789abcdef".encode()


class Pod:
    """One pod of a rendered workload, its volumes laid out in ``root`` as the kubelet would mount them."""

    def __init__(self, objs: list[dict[str, Any]], workload: dict[str, Any], root: Path,
                 pki: dict[str, bytes]) -> None:
        self.spec = pod_spec(workload)
        self.component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        self.name = POD_NAMES.get(self.component, f"{workload['metadata']['name']}-5f6d7c8b9-abcde")
        self.root, self.pki = root, pki
        self.config_maps = {c["metadata"]["name"]: c["data"] for c in by_kind(objs, "ConfigMap")}
        self.volumes: dict[str, Path] = {}
        for vol in self.spec.get("volumes", []):
            folder = root / "volumes" / vol["name"]
            folder.mkdir(parents=True)
            self.volumes[vol["name"]] = folder
            if "secret" in vol:
                items = vol["secret"].get("items")
                assert items, f"{vol['name']}: a Secret volume lists the keys it needs (no private key by accident)"
                assert vol["secret"]["defaultMode"] == 0o440
                for item in items:
                    (folder / item["path"]).write_bytes(secret_value(vol["secret"]["secretName"], item["key"], pki))
            elif "configMap" in vol:
                for key, text in self.config_maps.get(vol["configMap"]["name"], {}).items():
                    (folder / key).write_text(text)

    def local(self, container: dict[str, Any], path: str) -> Path:
        """Where ``path`` of the container is in the temp folder: under the mount that holds it."""
        for m in sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
            base = m["mountPath"].rstrip("/")
            if path == base or path.startswith(base + "/"):
                assert "subPath" not in m, path
                return self.volumes[m["name"]] / path[len(base) + 1:]
        raise AssertionError(f"{container['name']}: {path} is in no volume it mounts")

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        """The container's environment as the kubelet sets it, paths moved into the temp folder."""
        out: dict[str, str] = {}
        for e in container.get("env", []):
            if "value" in e:
                value = str(e["value"])
            elif "fieldRef" in e["valueFrom"]:
                assert e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
                value = self.name
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                value = secret_value(ref["name"], ref["key"], self.pki).decode()
            if value.startswith(("/etc/", "/run/", "/secret/", "/var/lib/nexus")):
                value = str(self.local(container, value))
            out[e["name"]] = value
        return out

    def run_init_containers(self) -> None:
        for c in self.spec.get("initContainers", []):
            assert c["command"] == ["python", "-c"], c["name"]
            subprocess.run([sys.executable, "-c", c["args"][0]], env=self.env(c), check=True, timeout=30)


def daemon_pods(case: str, tmp_path: Path, pki: dict[str, bytes]) -> list[tuple[Pod, dict[str, Any], Any]]:
    """(pod, daemon container, settings loaded from its env the way the daemon loads them) per daemon."""
    objs = docs(case)
    out = []
    for i, w in enumerate(workloads(objs)):
        containers = [c for c in pod_spec(w)["containers"] if c["name"] in DAEMONS]
        if not containers:
            continue
        pod = Pod(objs, w, tmp_path / str(i), pki)
        pod.run_init_containers()
        c = containers[0]
        prefix, cls = DAEMONS[c["name"]]
        out.append((pod, c, load(cls, env_prefix=prefix, env=pod.env(c))))
    return out


def jwt_claims(token: str, key: bytes) -> dict[str, Any]:
    head, body, sig = token.split(".")
    pad = "=" * (-len(sig) % 4)
    want = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(base64.urlsafe_b64decode(sig + pad), want), "bad signature"
    assert json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))) == {"alg": "HS256", "typ": "JWT"}
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims


def emqx_config(case: str) -> dict[str, str]:
    cm = next(c for c in by_kind(docs(case), "ConfigMap") if c["metadata"]["name"].endswith("-emqx"))
    data: dict[str, str] = cm["data"]
    return data


def test_secured_every_daemon_loads_tls_credentials_and_files_from_its_secrets(
        tmp_path: Path, pki: dict[str, bytes]) -> None:
    pods = daemon_pods("secured", tmp_path, pki)
    assert sorted(c["name"] for _, c, _ in pods) == ["core", "gateway", "ingestion", "normalizer", "operator"]
    for pod, c, s in pods:
        if c["name"] == "operator":
            # the bundled nexus-core on HTTPS, its CA (only ca.crt of core-tls) for aiohttp's default context
            assert s.core.url == "https://nexus-edge-core:8080"
            ca = Path(pod.env(c)["SSL_CERT_FILE"])
            assert ca.read_bytes() == pki["ca.crt"] and sorted(p.name for p in ca.parent.iterdir()) == ["ca.crt"]
            continue
        m = s.mqtt
        assert (m.host, m.port, m.tls_enabled) == ("nexus-edge-emqx", 8883, True), c["name"]
        # the broker's CA from the EMQX certificate Secret (ca.crt alone), the role's client certificate
        assert m.ca_file.read_bytes() == pki["ca.crt"] and sorted(p.name for p in m.ca_file.parent.iterdir()) == [
            "ca.crt"]
        assert (m.cert_file.read_bytes(), m.key_file.read_bytes()) == (pki["tls.crt"], pki["tls.key"])
        m.tls_context()  # the key is the certificate's, the CA parses: what the daemon checks at start
        role = c["name"]
        vols = {v["name"]: v for v in pod.spec["volumes"]}
        assert vols["mqtt-client"]["secret"]["secretName"] == f"{role}-mqtt-cert"
        assert vols["mqtt-ca"]["secret"]["secretName"] == "emqx-tls"
        if c["name"] == "gateway":
            assert m.username == pod.name  # its own identity (below), not the shared user
        else:
            assert m.username == role
            assert m.password == secret_value("nexus-mqtt", f"{role}-password", pki).decode()
        if c["name"] in ("ingestion", "core"):
            env = pod.env(c)
            assert env["PGSSLMODE"] == "verify-full"
            assert Path(env["PGSSLROOTCERT"]).read_bytes() == pki["ca.crt"]
            assert Path(env["PGSSLCERT"]).read_bytes() == pki["tls.crt"]
            assert Path(env["PGSSLKEY"]).read_bytes() == pki["tls.key"]
        if c["name"] == "core":
            assert s.http.scheme == "https" and s.http.tls_cert_file.read_bytes() == pki["tls.crt"]
            assert s.http.tls_ca_file is None  # no client certificates: the operator has none
            assert s.http.uvicorn_tls()["ssl_keyfile"] == str(s.http.tls_key_file)
            assert s.admin_user == "ops-admin"
            assert s.admin_password == secret_value("core-admin-user", "password", pki).decode()
            assert s.auth.jwt_secret == secret_value("core-jwt", "jwt-secret", pki).decode()
            assert s.live.uns_prefix == "v1"  # the gateways' uns_prefix
    gw_settings = next(s for _, c, s in pods if c["name"] == "gateway")
    assert gw_settings.uns_prefix == "v1"


def test_off_by_default_no_tls_no_secret_files_and_the_shared_role_users(tmp_path: Path, pki: dict[str, bytes]) -> None:
    for case in ("defaults", "prod", "dev"):
        for pod, c, s in daemon_pods(case, tmp_path / case, pki):
            assert not [m for m in c.get("volumeMounts", []) if m["mountPath"].startswith("/etc/nexus-tls")]
            assert not pod.spec.get("initContainers")
            env = pod.env(c)
            assert not {k for k in env if k.startswith("PGSSL") or k == "SSL_CERT_FILE"}
            if c["name"] == "operator":
                continue
            assert (s.mqtt.port, s.mqtt.tls_enabled) == (1883, False), (case, c["name"])
            role = c["name"]
            if case == "prod":
                assert s.mqtt.username == role and s.mqtt.password
            else:
                assert s.mqtt.username is None and s.mqtt.password is None
            if role == "core":
                assert s.http.scheme == "http" and s.admin_password is None and s.auth.jwt_secret is None
                assert s.live.uns_prefix == ""


def test_each_gateway_is_its_own_broker_user_with_a_token_for_that_name_alone(
        tmp_path: Path, pki: dict[str, bytes]) -> None:
    pods = daemon_pods("secured", tmp_path, pki)
    pod, c, s = next(p for p in pods if p[1]["name"] == "gateway")
    claims = jwt_claims(s.mqtt.password, TOKEN_KEY.encode())
    assert claims["username"] == s.mqtt.username == s.gateway_id == pod.name
    assert claims["exp"] - claims["iat"] == 30 * 86400  # mqtt.gatewayIdentity.tokenTtlDays
    # the key is mounted into the init container alone; the gateway reads the file it wrote
    assert not [m for m in c["volumeMounts"] if m["name"] == "gateway-token-key"]
    assert not [e for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    toml = Path(pod.env(c)["NEXUS_GATEWAY_CONFIG"])
    assert toml.stat().st_mode & 0o077 == 0
    # the broker: its JWT authenticator checks the claim against the user name, its ACL gives each gateway
    # its own ack, status and sync topics (and no confirmations to publish)
    conf = emqx_config("secured")
    assert 'verify_claims { username = "${username}" }' in conf["authn.conf"]
    acl = conf["acl.conf"]
    regex = re.search(r'\{username, \{re, "([^"]+)"\}\}', acl)
    assert regex and re.fullmatch(regex.group(1), pod.name)
    assert not [u for u in ROLES[1:] if re.fullmatch(regex.group(1), u)]
    for topic in ("nexus/ack/v1/${username}", "$nexus/status/gateways/${username}",
                  "$nexus/config/sync/response/${username}"):
        assert f'"{topic}"' in acl
    assert '"nexus/ack/v1/+"' not in acl.split("ingestion")[0]  # before the ingestion rules: the gateways'
    first = acl.strip().splitlines()[1]
    assert first.startswith("{deny, {username, {re,") and '"nexus/ack/v1/#"' in first


def test_file_mode_identity_with_a_chart_made_secret_and_an_external_tls_broker(
        tmp_path: Path, pki: dict[str, bytes]) -> None:
    objs = docs("file-mode-identity")
    secret = next(o for o in by_kind(objs, "Secret"))
    assert secret["metadata"]["name"] == "nexus-edge-mqtt"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    keys = set(secret["data"])
    assert keys == {f"{r}-password" for r in ROLES} | {"gateway-token-key"}
    assert all(len(base64.b64decode(v)) == 48 for v in secret["data"].values())
    for w in workloads(objs):  # every reference to it names a key it has
        for c in pod_spec(w)["containers"] + pod_spec(w).get("initContainers", []):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == "nexus-edge-mqtt":
                    assert ref["key"] in keys
        for v in pod_spec(w).get("volumes", []):
            if v.get("secret", {}).get("secretName") == "nexus-edge-mqtt":
                assert {i["key"] for i in v["secret"]["items"]} <= keys
    for _, c, s in daemon_pods("file-mode-identity", tmp_path, pki):
        m = s.mqtt
        assert (m.host, m.port, m.tls_insecure_no_hostname_check) == ("broker.example", 8883, True)
        assert m.ca_file.read_bytes() == pki["ca.crt"] and m.cert_file is None
        if c["name"] == "gateway":
            assert m.username == s.gateway_id == "edge.gw-1"
            assert jwt_claims(m.password, TOKEN_KEY.encode()).keys() == {"username", "iat"}  # no expiry: ttl 0
        else:
            assert m.username == c["name"] and m.password


def test_emqx_tls_listener_from_a_cert_manager_secret(tmp_path: Path) -> None:
    objs = docs("secured")
    conf = emqx_config("secured")["emqx.conf"]
    assert "listeners.tcp.default.enable = false" in conf
    ssl = conf[conf.index("listeners.ssl.default {"):]
    for line in ('bind = "0.0.0.0:8883"', 'versions = ["tlsv1.3", "tlsv1.2"]', "verify = verify_peer",
                 "fail_if_no_peer_cert = true"):
        assert line in ssl
    emqx = next(w for w in by_kind(objs, "StatefulSet") if w["metadata"]["name"].endswith("-emqx"))
    spec = pod_spec(emqx)
    container = spec["containers"][0]
    certs = next(v for v in spec["volumes"] if v["name"] == "certs")["secret"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "certs")["mountPath"]
    assert certs["secretName"] == "emqx-tls"
    for key in ("ca.crt", "tls.crt", "tls.key"):
        assert f'"{mount}/{key}"' in ssl and {"key": key, "path": key} in certs["items"]
    assert [p["containerPort"] for p in container["ports"] if p["name"].startswith("mqtt")] == [8883]
    svc = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == "nexus-edge-emqx")
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"] if p["name"].startswith("mqtt")] == [("mqtts", 8883)]
    policy = next(p for p in by_kind(objs, "NetworkPolicy") if p["metadata"]["name"] == "nexus-edge-emqx")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8883, "protocol": "TCP"}]
    gw_policy = next(p for p in by_kind(objs, "NetworkPolicy") if p["metadata"]["name"] == "nexus-edge-gateway")
    assert {"port": 8883, "protocol": "TCP"} in [p for rule in gw_policy["spec"]["egress"]
                                                 for p in rule.get("ports", [])]
    # the plain listener kept next to it
    plain = emqx_config("emqx-tls-and-plain")["emqx.conf"]
    assert 'bind = "0.0.0.0:1883"' in plain and 'bind = "0.0.0.0:8883"' in plain
    svc = next(s for s in by_kind(docs("emqx-tls-and-plain"), "Service") if s["metadata"]["name"] == "nexus-edge-emqx")
    assert {p["name"] for p in svc["spec"]["ports"]} >= {"mqtt", "mqtts"}


@pytest.mark.parametrize("case", ["secured", "prod", "emqx-tls-and-plain"])
def test_emqx_init_container_writes_the_users_and_the_authentication_chain(case: str, tmp_path: Path) -> None:
    """The init container's script, run by sh with its paths moved into a temp folder."""
    objs = docs(case)
    emqx = next(w for w in by_kind(objs, "StatefulSet") if w["metadata"]["name"].endswith("-emqx"))
    init = pod_spec(emqx)["initContainers"][0]
    secret_dir, boot, config = tmp_path / "secret", tmp_path / "bootstrap", tmp_path / "config"
    for d in (secret_dir, boot, config):
        d.mkdir()
    for role in ROLES:
        (secret_dir / f"{role}-password").write_text(f"pw-{role}")
    (secret_dir / "gateway-token-key").write_text(TOKEN_KEY + "\n")
    (config / "authn.conf").write_text(emqx_config(case)["authn.conf"])
    script = init["args"][0].replace("/opt/emqx/bootstrap", str(boot)).replace("/secret/", f"{secret_dir}/")
    script = script.replace("/config/", f"{config}/")
    env = {e["name"]: e["value"] for e in init["env"]}
    subprocess.run(["sh", "-ec", script], env=env, check=True, timeout=30)
    users = (boot / "users.csv").read_text().splitlines()
    assert users == ["user_id,password,is_superuser"] + [f"{r},pw-{r},false" for r in ROLES]
    authn = (boot / "authn.conf").read_text()
    assert "@GATEWAY_TOKEN_KEY@" not in authn
    assert (f'secret = "{TOKEN_KEY}"' in authn) is (case == "secured")
    assert "mechanism = password_based" in authn
    assert "include \"/opt/emqx/bootstrap/authn.conf\"" in emqx_config(case)["emqx.conf"]


def test_emqx_init_refuses_a_token_key_its_config_cannot_hold(tmp_path: Path) -> None:
    emqx = next(w for w in by_kind(docs("secured"), "StatefulSet") if w["metadata"]["name"].endswith("-emqx"))
    init = pod_spec(emqx)["initContainers"][0]
    (tmp_path / "secret").mkdir()
    (tmp_path / "bootstrap").mkdir()
    for role in ROLES:
        (tmp_path / "secret" / f"{role}-password").write_text("x")
    (tmp_path / "secret" / "gateway-token-key").write_text('bad"key')
    script = init["args"][0].replace("/opt/emqx/bootstrap", str(tmp_path / "bootstrap")).replace(
        "/secret/", f"{tmp_path}/secret/")
    r = subprocess.run(["sh", "-ec", script], env={e["name"]: e["value"] for e in init["env"]}, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "gateway-token-key: letters, digits" in r.stderr


def test_timescaledb_serves_tls_from_its_secret_only_when_asked() -> None:
    for case, on in (("secured", True), ("prod", False)):
        db = next(w for w in by_kind(docs(case), "StatefulSet") if w["metadata"]["name"].endswith("-timescaledb"))
        c = pod_spec(db)["containers"][0]
        args = [a for a in c["args"] if a != "-c"]
        assert ("ssl=on" in args) is on
        if on:
            mount = next(m for m in c["volumeMounts"] if m["name"] == "server-tls")["mountPath"]
            assert f"ssl_cert_file={mount}/tls.crt" in args and f"ssl_key_file={mount}/tls.key" in args


@pytest.mark.parametrize(("values", "message"), [
    ({"mqtt": {"gatewayIdentity": {"enabled": True}}}, r"gatewayIdentity needs broker credentials"),
    ({"mqtt": {"tls": {"enabled": True}}}, r"needs its TLS listener: emqx\.tls\.enabled"),
    ({"emqx": {"tls": {"enabled": True}}}, r"emqx\.tls\.enabled needs emqx\.tls\.secret"),
    ({"emqx": {"tls": {"enabled": True, "secret": "s"}}}, r"closes the plain port the daemons use"),
    ({"db": {"tls": {"sslmode": "verify_full"}}}, r"db\.tls\.sslmode must be"),
    ({"core": {"http": {"tls": {"clientCaSecret": "ca"}}}}, r"clientCaSecret .* needs core\.http\.tls\.secret"),
    ({"core": {"http": {"tls": {"secret": "t", "clientCaSecret": "ca"}}}, "operator": {"enabled": True}},
     r"the nexus-operator cannot show"),
    ({"mqtt": {"createCredentials": True, "gatewayIdentity": {"enabled": True},
               "users": {"ingestion": "nexus-edge-gateway-a-b"}}}, r"mqtt\.users\.ingestion .* looks like a gateway"),
])
def test_inconsistent_secured_options_are_refused_at_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.errors.HelmRenderError, match=message):
        render_k8s.render(values)


def test_every_secret_key_ref_and_volume_names_a_key(tmp_path: Path) -> None:
    """No reference without a key, no Secret volume projecting every key (e.g. a broker's private key)."""
    for case in ("secured", "file-mode-identity", "emqx-tls-and-plain"):
        for w in workloads(docs(case)):
            spec = pod_spec(w)
            for v in spec.get("volumes", []):
                if "secret" in v and v["name"] != "credentials":  # EMQX's init reads every role's password
                    assert v["secret"].get("items"), (case, w["metadata"]["name"], v["name"])
            for c in spec["containers"] + spec.get("initContainers", []):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    assert ref is None or (ref["name"] and ref["key"]), (case, e)


def test_file_mode_gateway_user_pattern_is_exactly_its_gateway_id() -> None:
    acl = render_k8s.render({"gateway": {"configSource": "file", "autoscaling": {"enabled": False},
                                         "gatewayId": "edge.gw-1"},
                             "mqtt": {"createCredentials": True, "gatewayIdentity": {"enabled": True}}})
    text = next(d for d in render_k8s.documents(acl) if d["kind"] == "ConfigMap"
                and d["metadata"]["name"].endswith("-emqx"))["data"]["acl.conf"]
    found = re.search(r'\{username, \{re, "((?:[^"\\]|\\.)+)"\}\}', text)
    assert found
    pattern = found.group(1).replace("\\\\", "\\")  # an Erlang string: \\ is one backslash
    assert re.fullmatch(pattern, "edge.gw-1") and not re.fullmatch(pattern, "edgeXgw-1")
    assert not re.fullmatch(pattern, "edge.gw-1-other")
