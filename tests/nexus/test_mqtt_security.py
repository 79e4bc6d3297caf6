"""Secured broker connections (nexus.mqtt) against a mosquitto started in the test, with certificates
made in the test by openssl: TLS with a CA file, client certificates, user names and passwords, ACLs.
Each failure gives one log line naming its cause (asserted on its text), the client retries with its
backoff and connects once the broker's side is fixed; a real daemon (the normalizer) stays up meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from devtools.local import BrokerTls, Mosquitto, free_port
from nexus.common import MqttSettings
from nexus.mqtt import Message, MqttClient, MqttError
from tests.nexus.certs import PASSPHRASE, Certs, Issued
from tests.support.daemons import Daemon, http_get
from tests.support.wait import until, wait_for


def tls_of(certs: Certs, server: Issued | None = None, *, require_certificate: bool = False) -> BrokerTls:
    s = server or certs.server
    return BrokerTls(cafile=certs.ca.cert, certfile=s.cert, keyfile=s.key, require_certificate=require_certificate)


@contextlib.contextmanager
def broker(folder: Path, **kw: Any) -> Iterator[Mosquitto]:
    mq = Mosquitto(folder, free_port(), **kw)
    mq.start()
    try:
        yield mq
    finally:
        mq.stop()


def settings(mq: Mosquitto, **kw: Any) -> MqttSettings:
    return MqttSettings(port=mq.port, reconnect_min=0.05, reconnect_max=0.2, connect_timeout=5, **kw)


@contextlib.asynccontextmanager
async def running(s: MqttSettings, client_id: str = "t", **kw: Any) -> AsyncIterator[MqttClient]:
    stop = asyncio.Event()
    client = MqttClient(s, client_id=client_id, **kw)
    task = asyncio.create_task(client.run_loop(stop), name=f"test[{client_id}].mqtt_loop")
    try:
        yield client
        assert not task.done(), "the client's loop ended by itself"
    finally:
        stop.set()
        await task


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nexus.mqtt" and r.levelno >= level]


async def failure(caplog: pytest.LogCaptureFixture, client: MqttClient, pattern: str) -> str:
    """The one warning matching ``pattern``, once the client has retried at least twice more (the same
    failure logged again only at DEBUG) without connecting."""
    await until(lambda: sum("failed again" in m for m in lines(caplog, logging.DEBUG)) >= 2, 15,
                what=lambda: f"two retries; log: {lines(caplog, logging.DEBUG)}")
    found = [m for m in lines(caplog) if re.search(pattern, m)]
    assert len(found) == 1 and not client.connected, lines(caplog)
    return found[0]


@pytest.fixture(autouse=True)
def _debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="nexus.mqtt")


async def test_tls_with_the_ca_file_connects_and_carries_every_message(tmp_path: Path, certs: Certs,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Also a burst: under TLS decrypted bytes may wait in OpenSSL's buffer, which no readable socket signals."""
    got: list[Message] = []
    with broker(tmp_path / "mq", tls=tls_of(certs)) as mq:
        s = settings(mq, ca_file=certs.ca.cert)
        async with running(s, "sub", subscriptions=[("burst/#", 1)], on_message=got.append) as sub, \
                running(dataclasses.replace(s, host="localhost"), "pub") as pub:
            await sub.wait_connected(5)
            await pub.wait_connected(5)
            await until(lambda: not sub._sub_mids, 5, what="SUBACK")
            futs = [await pub.publish(f"burst/{i}", b"%d" % i) for i in range(3000)]
            assert set(await asyncio.gather(*futs)) == {0}
            await until(lambda: len(got) == 3000, 10, what=lambda: f"3000 messages, got {len(got)}")
            assert sorted(int(m.payload) for m in got) == list(range(3000))
            assert sub._io.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert [m for m in lines(caplog) if "failed" in m] == []


async def test_client_certificate_required_and_given(tmp_path: Path, certs: Certs,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with broker(tmp_path / "mq", tls=tls_of(certs, require_certificate=True)) as mq:
        s = settings(mq, ca_file=certs.ca.cert)
        for cert in (certs.client, certs.client_encrypted):
            pw = PASSPHRASE if cert is certs.client_encrypted else None
            async with running(settings(mq, ca_file=certs.ca.cert, cert_file=cert.cert, key_file=cert.key,
                                        key_password=pw)) as c:
                await c.wait_connected(5)
        async with running(s, "no-cert") as c:
            line = await failure(caplog, c, "requires a client certificate")
        assert line.startswith(f"mqtt connect to 127.0.0.1:{mq.port} failed: TLS: the broker requires a client "
                               "certificate (settings mqtt.cert_file, mqtt.key_file) (")
        assert "CERTIFICATE_REQUIRED" in line
        caplog.clear()
        async with running(settings(mq, ca_file=certs.ca.cert, cert_file=certs.stranger.cert,
                                    key_file=certs.stranger.key), "stranger") as c:
            line = await failure(caplog, c, "refused our client certificate")
        assert (f"failed: TLS: the broker refused our client certificate {certs.stranger.cert}: not signed by a CA "
                "it trusts") in line


async def test_a_wrong_ca_is_a_clear_error_retried(tmp_path: Path, certs: Certs,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with broker(tmp_path / "mq", tls=tls_of(certs)) as mq:
        async with running(settings(mq, ca_file=certs.other_ca.cert)) as c:
            line = await failure(caplog, c, "certificate verify failed")
    assert re.fullmatch(
        rf"mqtt connect to 127\.0\.0\.1:{mq.port} failed: certificate verify failed: [a-z -]+ \(broker certificate "
        rf"checked against CA file {re.escape(str(certs.other_ca.cert))}\); retry in \d+\.\d s", line), line


async def test_an_expired_server_certificate(tmp_path: Path, certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    with broker(tmp_path / "mq", tls=tls_of(certs, certs.expired)) as mq:
        async with running(settings(mq, ca_file=certs.ca.cert)) as c:
            line = await failure(caplog, c, "certificate verify failed")
    assert (f"failed: certificate verify failed: certificate has expired (broker certificate checked against CA file "
            f"{certs.ca.cert}); retry in") in line


async def test_a_host_name_mismatch_and_the_option_that_allows_it(tmp_path: Path, certs: Certs,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    with broker(tmp_path / "mq", tls=tls_of(certs, certs.elsewhere)) as mq:
        async with running(settings(mq, ca_file=certs.ca.cert)) as c:
            line = await failure(caplog, c, "mismatch")
        assert ("failed: certificate verify failed: IP address mismatch, certificate is not valid for '127.0.0.1'. "
                "The broker's certificate does not name mqtt.host '127.0.0.1'; connect by a name it lists, or set "
                "mqtt.tls_insecure_no_hostname_check (the chain is still verified); retry in") in line
        caplog.clear()
        async with running(settings(mq, ca_file=certs.ca.cert, tls_insecure_no_hostname_check=True)) as c:
            await c.wait_connected(5)
        assert lines(caplog)[0] == (f"mqtt TLS host name check is OFF (setting mqtt.tls_insecure_no_hostname_check): "
                                    f"any certificate from {certs.ca.cert} is accepted for 127.0.0.1")
        caplog.clear()  # the chain is still checked: another CA's broker stays refused
        async with running(settings(mq, ca_file=certs.other_ca.cert, tls_insecure_no_hostname_check=True)) as c:
            await failure(caplog, c, "certificate verify failed")


async def test_a_wrong_password_names_bad_credentials_never_the_password(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    with broker(tmp_path / "mq", users={"gw-a": "the-right-one"}) as mq:
        async with running(settings(mq, username="gw-a", password="pw-wrong-4711")) as c:
            line = await failure(caplog, c, "refused the connection")
            assert line.startswith(f"mqtt connect to 127.0.0.1:{mq.port} failed: broker refused the connection: not "
                                   "authorized (CONNACK 0x87) for user 'gw-a': bad user name or password, or not "
                                   "allowed to connect; retry in ")
            mq.set_users({"gw-a": "pw-wrong-4711"})  # the operator fixes the broker's side
            mq.reload()
            await c.wait_connected(10)
        assert any(re.fullmatch(r"mqtt connected after \d+ failed attempts", m) for m in lines(caplog, logging.INFO))
    assert "pw-wrong-4711" not in caplog.text and "the-right-one" not in caplog.text


async def test_a_plain_client_at_a_tls_listener_is_told(tmp_path: Path, certs: Certs,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with broker(tmp_path / "mq", tls=tls_of(certs)) as mq:
        async with running(settings(mq)) as c:
            line = await failure(caplog, c, "TLS listener")
    assert "if mqtt.port is a TLS listener, set mqtt.tls" in line


DYNSEC: dict[str, Any] = {
    "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True, "subscribe": False,
                         "unsubscribe": True},
    "clients": [{"username": "worker", "password": "pw-worker", "roles": [{"rolename": "worker"}]},
                {"username": "admin", "password": "pw-admin", "roles": [{"rolename": "admin"}]}],
    "groups": [],
    "roles": [{"rolename": "worker", "acls": [{"acltype": "subscribePattern", "topic": "allowed/#", "allow": True},
                                              {"acltype": "publishClientSend", "topic": "allowed/#", "allow": True}]},
              {"rolename": "admin", "acls": [
                  {"acltype": "publishClientSend", "topic": "$CONTROL/dynamic-security/#", "allow": True},
                  {"acltype": "subscribePattern", "topic": "$CONTROL/dynamic-security/#", "allow": True}]}],
}


async def test_an_acl_refusing_a_subscription_and_a_publish_names_the_topic(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """mosquitto's dynamic-security plugin refuses a denied SUBSCRIBE (SUBACK 0x87), unlike its ACL file; the
    client asks again with backoff and gets it once the role allows it."""
    got: list[Message] = []
    with broker(tmp_path / "mq", dynsec=DYNSEC) as mq:
        async with running(settings(mq, username="worker", password="pw-worker"), "worker",
                           subscriptions=[("allowed/a", 1), ("secret/#", 1)], on_message=got.append) as c, \
                running(settings(mq, username="admin", password="pw-admin"), "admin") as admin:
            await until(lambda: "secret/#" in c.refused_subscriptions, 5, what="the refusal")
            assert c.refused_subscriptions == {"secret/#": 1}
            refusal = [m for m in lines(caplog) if "subscription" in m]
            assert len(refusal) == 1 and re.fullmatch(
                r"mqtt subscription to secret/# refused by the broker: Not authorized \(SUBACK 0x87\); asking again "
                r"in \d+\.\d s", refusal[0]), refusal

            with pytest.raises(MqttError) as ei:
                await (await c.publish("secret/x", b"1"))
            assert (ei.value.code, str(ei.value)) == (0x87, "broker refused publish to secret/x: Not authorized "
                                                            "(PUBACK 0x87)")
            assert "mqtt broker refused publish to secret/x: Not authorized (PUBACK 0x87)" in lines(caplog)

            await admin.wait_connected(5)
            grant = {"commands": [{"command": "addRoleACL", "rolename": "worker", "acltype": "subscribePattern",
                                   "topic": "secret/#", "allow": True}]}
            assert await (await admin.publish("$CONTROL/dynamic-security/v1", orjson.dumps(grant))) in (0, 0x10)
            await until(lambda: c.connected and not c.refused_subscriptions and not c._sub_mids, 10,
                        what=lambda: f"the subscription granted; log: {lines(caplog, logging.INFO)}")
            await (await c.publish("allowed/a", b"ok"))
            await until(lambda: [m.payload for m in got] == [b"ok"], 5, what="the allowed message")


async def test_an_acl_file_refusing_a_publish_names_the_topic_and_the_drop(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The classic setup (password file + ACL file): PUBACK 0x87, after which mosquitto 2.0 drops the client."""
    with broker(tmp_path / "mq", users={"gw-a": "pw"}, acl="user gw-a\ntopic write nexus/batch/v1/#\n") as mq:
        async with running(settings(mq, username="gw-a", password="pw")) as c:
            await c.wait_connected(5)
            assert await (await c.publish("nexus/batch/v1/acme/b/a/l/d", b"x")) == 0x10  # allowed, nobody listens
            with pytest.raises(MqttError, match=r"^broker refused publish to nexus/ack/v1/gw-b: Not authorized "
                                                r"\(PUBACK 0x87\)$"):
                await (await c.publish("nexus/ack/v1/gw-b", b"x"))
            await until(lambda: any("mqtt disconnected" in m for m in lines(caplog)), 5, what="the drop")
            await c.wait_connected(5)  # and back
    assert "mqtt broker refused publish to nexus/ack/v1/gw-b: Not authorized (PUBACK 0x87)" in lines(caplog)
    assert ("mqtt disconnected: Unspecified error (right after the broker refused publish to nexus/ack/v1/gw-b; "
            "mosquitto then drops the client)") in lines(caplog)


# -- a real daemon: the normalizer (it needs only the broker) --------------------------------------------


def normalizer(daemons: Any, mq: Mosquitto, tmp_path: Path, **mqtt: str) -> tuple[Daemon, int]:
    ops = free_port()
    env = {"NEXUS_NORMALIZER_NORMALIZER_ID": "nz-sec", "NEXUS_NORMALIZER_OPS_PORT": str(ops),
           "NEXUS_NORMALIZER_MQTT_PORT": str(mq.port), "NEXUS_NORMALIZER_MQTT_RECONNECT_MIN": "0.1",
           "NEXUS_NORMALIZER_MQTT_RECONNECT_MAX": "0.5", "NEXUS_NORMALIZER_LOG_JSON": "false",
           "NEXUS_NORMALIZER_LOG_LEVEL": "DEBUG",
           **{f"NEXUS_NORMALIZER_MQTT_{k.upper()}": v for k, v in mqtt.items()}}
    return daemons("normalizer", env), ops


@pytest.mark.slow
def test_a_daemon_with_a_wrong_password_stays_up_and_connects_once_fixed(daemons: Any, tmp_path: Path,
                                                                         certs: Certs) -> None:
    with broker(tmp_path / "mq", tls=tls_of(certs), users={"normalizer": "old-pw"}) as mq:
        d, ops = normalizer(daemons, mq, tmp_path, username="normalizer", password="new-pw-0815",
                            ca_file=str(certs.ca.cert))
        wait_for(lambda: d.output().count("failed again: broker refused the connection") >= 4, 20,
                 what=lambda: f"retries\n{d.output()}")
        assert http_get(ops, "/healthz")[0] == 200 and http_get(ops, "/readyz")[0] == 503
        assert d.output().count("WARNING nexus.mqtt: mqtt connect to") == 2  # once per client: not per retry
        assert (f"mqtt connect to 127.0.0.1:{mq.port} failed: broker refused the connection: not authorized "
                "(CONNACK 0x87) for user 'normalizer': bad user name or password, or not allowed to connect; retry in"
                ) in d.output()
        mq.set_users({"normalizer": "new-pw-0815"})
        mq.reload()
        wait_for(lambda: http_get(ops, "/readyz")[0] == 200, 20, what=lambda: f"ready\n{d.output()}")
        assert "mqtt connected after" in d.output()
        assert d.stop() == 0
    assert "new-pw-0815" not in d.output() and "old-pw" not in d.output()


@pytest.mark.slow
def test_a_daemon_with_the_wrong_ca_stays_up_and_retries(daemons: Any, tmp_path: Path, certs: Certs) -> None:
    with broker(tmp_path / "mq", tls=tls_of(certs)) as mq:
        d, ops = normalizer(daemons, mq, tmp_path, ca_file=str(certs.other_ca.cert))
        wait_for(lambda: d.output().count("failed again: certificate verify failed") >= 6, 20,
                 what=lambda: f"retries\n{d.output()}")
        assert d.proc is not None and d.proc.poll() is None
        assert http_get(ops, "/healthz")[0] == 200 and http_get(ops, "/readyz")[0] == 503
        assert (f"WARNING nexus.mqtt: mqtt connect to 127.0.0.1:{mq.port} failed: certificate verify failed: "
                ) in d.output() and f"(broker certificate checked against CA file {certs.other_ca.cert})" in d.output()
        assert d.stop() == 0
