"""OPC UA driver against real asyncua servers (gateway.drivers.opcua.simulator), each in its own process so that
outages are real: the server process is killed (or frozen) and a new one started on the same port."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from devtools.local import free_port
from gateway.config import DeviceConfig, parse_plant
from gateway.drivers import make_driver
from gateway.drivers.base import Driver
from gateway.drivers.opcua.browse import discover
from gateway.drivers.opcua.client import ua_node_id
from gateway.drivers.opcua.config import NodeRef, parse_node_id
from gateway.drivers.opcua.simulator import (
    BROKEN_STATUS,
    NS_URI,
    SHAKY_STATUS,
    STAMP,
    TYPES,
    make_certificate,
)
from gateway.errors import ConfigError, PermanentError, TemporaryError, WriteRefused
from gateway.poller import DevicePoller
from gateway.readings import DeviceBatch
from proto.points import Point, Quality, Status
from tests.support import ROOT
from tests.support.wait import until

STAMP_MS = int(STAMP.timestamp() * 1000)
CANONICAL = {"Bool": "bool", "Int8": "int8", "UInt8": "uint8", "Int16": "int16", "UInt16": "uint16",
             "Int32": "int32", "UInt32": "uint32", "Int64": "int64", "UInt64": "uint64", "Float": "float32",
             "Double": "float64", "String": "string"}


class SimProcess:
    """``python -m gateway.drivers.opcua.simulator`` on a fixed port; start() waits for its READY line."""

    def __init__(self, port: int, log: Path, *args: str) -> None:
        self.port, self.log, self.args = port, log, args
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/nexus/sim"
        self.ns = 0

    def start(self, *extra: str) -> SimProcess:
        with open(self.log, "a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.drivers.opcua.simulator", "--port", str(self.port), *self.args, *extra],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the simulator prints READY within ~2 s, or exits
        if not line.startswith("READY"):
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r}; see {self.log}")
        self.ns = int(line.rsplit("ns=", 1)[1])
        return self

    def kill(self) -> None:
        """SIGKILL: the kernel resets the connections, nothing is closed politely."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGCONT)  # in case a test froze it
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path_factory.mktemp("opcua") / "sim.log").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    server_cert, server_key = make_certificate(d, "server", "urn:nexus-edge:sim:server", server=True)
    client_cert, client_key = make_certificate(d, "gateway", "urn:acme:nexus:gateway", server=False)
    return {"server_cert": server_cert, "server_key": server_key, "cert": client_cert, "key": client_key}


@pytest.fixture(scope="module")
def secure_sim(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Path]) -> Iterator[SimProcess]:
    s = SimProcess(free_port(), tmp_path_factory.mktemp("opcua-secure") / "sim.log",
                   "--certificate", str(certs["server_cert"]), "--private-key", str(certs["server_key"]),
                   "--user", "operator:s3cret", "--secure-only").start()
    yield s
    s.stop()


def device(endpoint: str, tags: list[dict[str, Any]], **keys: Any) -> DeviceConfig:
    """A device parsed like a plant config file: exercises the protocol registry and parse_*."""
    doc = {"plant": {"enterprise": "acme", "site": "berlin", "area": "press", "line": "l1"},
           "devices": [{"id": "ua1", "protocol": "opcua", "endpoint": endpoint, "interval_ms": 100,
                        **keys, "tags": tags}]}
    return parse_plant(doc).devices[0]


def node(path: str) -> str:
    """A node id by namespace URI: the plant's index is not known in advance."""
    return f"nsu={NS_URI};s=Plant.{path}"


async def read_until(drv: Driver, tags: set[str], timeout: float = 5.0) -> dict[str, list[Any]]:
    """Every point per tag read within ``timeout`` until each of ``tags`` was seen (subscribe mode)."""
    seen: dict[str, list[Any]] = {}

    async def read() -> bool:
        for p in await drv.read():
            seen.setdefault(p.tag, []).append(p)
        return tags <= set(seen)

    await until(read, timeout, 0.05, what=lambda: f"points for {tags - set(seen)}")
    return seen


async def write_raw(endpoint: str, path: str, variant: ua.Variant) -> None:
    """Change a value the way another OPC UA client would."""
    async with Client(endpoint) as c:
        idx = await c.get_namespace_index(NS_URI)
        await c.get_node(f"ns={idx};s=Plant.{path}").write_value(variant)


# --- config -------------------------------------------------------------------------------------

EP = "opc.tcp://127.0.0.1:4840"
TAG = {"name": "t", "node": "ns=2;s=X", "type": "float64"}


@pytest.mark.parametrize(("device_keys", "tag_keys", "message"), [
    ({"bogus": 1}, {}, "devices[0]: unknown key(s) ['bogus']"),
    ({}, {"adress": 3}, "devices[0].tags[0]: unknown key(s) ['adress']"),
    ({"endpoint": "http://plc:4840"}, {},
     "devices[0]: 'endpoint' 'http://plc:4840' is not an opc.tcp://host:port[/path] URL"),
    ({"mode": "push"}, {}, "devices[0]: 'mode' is 'push'; expected one of poll, subscribe"),
    ({"security_policy": "Basic128Rsa15"}, {},
     ("devices[0]: 'security_policy' is 'Basic128Rsa15'; expected one of None, Basic256Sha256, "
     "Aes128Sha256RsaOaep, Aes256Sha256RsaPss")),
    ({"security_mode": "Sign"}, {},
     ("devices[0]: 'security_mode' 'Sign' does not go with 'security_policy' 'None': use None with None, "
     "or Sign/SignAndEncrypt with a security policy")),
    ({"security_policy": "Basic256Sha256", "security_mode": "None"}, {},
     ("devices[0]: 'security_mode' 'None' does not go with 'security_policy' 'Basic256Sha256': use None with "
     "None, or Sign/SignAndEncrypt with a security policy")),
    ({"security_policy": "Basic256Sha256"}, {},
     "devices[0]: 'certificate' and 'private_key' are required with security_policy 'Basic256Sha256'"),
    ({"certificate": "/nonexistent/cert.der"}, {}, "devices[0]: 'certificate' file not found: /nonexistent/cert.der"),
    ({"username": "operator"}, {}, "devices[0]: 'username' and 'password' go together"),
    ({}, {"node": "ns=x;s=Speed"},
     ("devices[0].tags[0]: 'node' 'ns=x;s=Speed' is not a valid node id; expected e.g. 'ns=2;s=Line1.Speed', "
     "'ns=2;i=1001' or 'nsu=urn:acme:plant;s=Line1.Speed'")),
    ({}, {"node": "i=abc"}, ("devices[0].tags[0]: 'node' 'i=abc' is not a valid node id (numeric identifier 'abc' "
                            "is not an integer in 0..4294967295); expected e.g. 'ns=2;s=Line1.Speed', "
                            "'ns=2;i=1001' or 'nsu=urn:acme:plant;s=Line1.Speed'")),
    ({}, {"node": "0:Objects/2:"}, "devices[0].tags[0]: 'node' '0:Objects/2:': browse path element 2 '2:' has no name"),
    ({}, {"node": "0:Objects/<urn:a>Plant"},
     "devices[0].tags[0]: 'node' '0:Objects/<urn:a>Plant': browse path element 2 '<urn:a>Plant' is not <uri>:name"),
    ({}, {"node": " "}, "devices[0].tags[0]: 'node' is empty"),
    ({}, {"type": None}, "devices[0].tags[0]: 'type' is required"),
    ({}, {"type": "decimal"}, ("devices[0].tags[0]: 'type' is 'decimal'; expected one of bool, int8, uint8, int16, "
     "uint16, int32, uint32, int64, uint64, float32, float64, string, datetime")),
    ({}, {"deadband": 0.5}, "devices[0].tags[0]: ['deadband'] only apply with mode = \"subscribe\""),
    ({"mode": "subscribe"}, {"type": "string", "deadband": 1}, ("devices[0].tags[0]: 'deadband' needs a numeric tag, "
     "not string")),
    ({"mode": "subscribe"}, {"type": "datetime", "deadband": 1}, ("devices[0].tags[0]: 'deadband' needs a numeric "
     "tag, not datetime")),
    ({"mode": "subscribe"}, {"deadband": 120, "deadband_type": "percent"},
     "devices[0].tags[0]: 'deadband' 120.0 outside 0..100"),
    ({"mode": "subscribe"}, {"deadband_type": "relative"},
     "devices[0].tags[0]: 'deadband_type' is 'relative'; expected one of absolute, percent"),
    ({"mode": "subscribe"}, {"sampling_interval_ms": -5},
     "devices[0].tags[0]: 'sampling_interval_ms' -5.0 must be >= 0 (or -1: the publishing interval)"),
    ({}, {"length": 8}, "devices[0].tags[0]: 'length' only applies to string tags, not float64"),
])
def test_config_errors(device_keys: dict[str, Any], tag_keys: dict[str, Any], message: str) -> None:
    tag = {k: v for k, v in {**TAG, **tag_keys}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        device(device_keys.pop("endpoint", EP), [tag], **device_keys)
    assert str(err.value) == message


def test_config_addresses(certs: dict[str, Path]) -> None:
    dev = device(EP, [
        {"name": "a", "node": "ns=3;i=1001", "type": "int32"},
        {"name": "b", "node": "nsu=urn:acme:plant;s=Line1.Speed", "type": "float64"},
        {"name": "c", "node": "/0:Objects/2:Plant/urn:acme:plant:Line 1/<http://acme.com/ua/>:Speed", "type": "real"},
        {"name": "d", "node": "Objects/3:x:y", "type": "int16", "queue_size": 1, "deadband": 2.5,
         "sampling_interval_ms": 50},
        {"name": "e", "node": "i=2261", "type": "string", "length": 16},
    ], mode="subscribe", security_policy="Basic256Sha256", certificate=str(certs["cert"]),
        private_key=str(certs["key"]), username="u", password="hunter2")
    a, b, c, d, e = (t.address for t in dev.tags)
    assert (a.node_id, a.namespace_uri) == (NodeRef("i", 1001, 3), None)
    assert (b.node_id, b.namespace_uri) == (NodeRef("s", "Line1.Speed", 0), "urn:acme:plant")
    assert c.path == ((0, "Objects"), (2, "Plant"), ("urn:acme:plant", "Line 1"), ("http://acme.com/ua/", "Speed"))
    assert dev.tags[2].type == "float32"
    assert d.path == ((0, "Objects"), (3, "x:y"))
    assert (d.queue_size, d.deadband, d.deadband_type, d.sampling_interval_ms) == (1, 2.5, "absolute", 50.0)
    assert (e.node_id, e.queue_size, e.deadband, e.sampling_interval_ms) == (NodeRef("i", 2261), 10, 0.0, -1.0)
    assert dev.tags[4].length == 16
    conn = dev.conn
    assert (conn.security_mode, conn.application_uri) == ("SignAndEncrypt", "urn:acme:nexus:gateway")
    assert "hunter2" not in repr(conn) and conn.password == "hunter2"  # never in logs of the settings


@pytest.mark.parametrize("text", ["ns=3;i=1001", "i=2261", "ns=2;s=Line1.Speed", "s=a;b=c", "ns=65535;s=x y",
                                  "ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a", "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
                                  "nsu=urn:acme:plant;i=7", "i=4294967295"])
def test_node_ids_are_parsed_as_asyncua_does(text: str) -> None:
    """The config parses node ids without asyncua (gateway_core validates with it); the driver's
    asyncua node id must be the one asyncua itself reads from the same text."""
    ref, uri = parse_node_id(text)
    theirs = ua.NodeId.from_string(text)
    ours = ua_node_id(ref)
    assert (ours, ours.NodeIdType, uri) == (theirs, theirs.NodeIdType, getattr(theirs, "NamespaceUri", None))


@pytest.mark.parametrize("text", ["ns=x;i=1", "i=-1", "i=4294967296", "g=nope", "b=!!", "s=", "ns=65536;i=1"])
def test_bad_node_ids_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a valid node id"):
        device(EP, [{"name": "a", "node": text, "type": "int32"}])


# --- values -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_every_type_exact(sim: SimProcess, mode: str) -> None:
    tags = [{"name": n, "node": node(f"Types.{n}"), "type": t} for n, t in CANONICAL.items()]
    drv = make_driver(device(sim.endpoint, tags, mode=mode))
    await drv.connect()
    try:
        seen = await read_until(drv, set(CANONICAL))
    finally:
        await drv.close()
    got = {name: points[0] for name, points in seen.items()}
    assert {n: p.value for n, p in got.items()} == {n: v for n, (v, _) in TYPES.items()}
    for n, p in got.items():  # exact Python types too: no float for an int, no int for a bool
        assert type(p.value) is type(TYPES[n][0]) and p.status == Status.GOOD and p.reason is None
        assert abs(p.ts - time.time() * 1000) < 60_000


async def test_a_poll_group_reads_only_its_nodes(sim: SimProcess) -> None:
    names = list(CANONICAL)
    tags = [{"name": n, "node": node(f"Types.{n}"), "type": t, **({"poll_group": "fast"} if n in names[:2] else {})}
            for n, t in CANONICAL.items()]
    drv = make_driver(device(sim.endpoint, tags, poll_groups={"fast": 50}))
    await drv.connect()
    try:
        points = await drv.read_tags(frozenset(names[:2]))
    finally:
        await drv.close()
    assert [(p.tag, p.value) for p in points] == [(n, TYPES[n][0]) for n in names[:2]]


def test_subscriptions_refuse_poll_groups() -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="'poll_groups' need a polling driver"):
        device("opc.tcp://127.0.0.1:4840", [], mode="subscribe", poll_groups={"fast": 50})


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_status_codes_and_timestamps(sim: SimProcess, mode: str) -> None:
    tags = [{"name": "broken", "node": node("Faults.Broken"), "type": "float64"},
            {"name": "shaky", "node": node("Faults.Shaky"), "type": "int32"},
            {"name": "stamped", "node": node("Faults.Stamped"), "type": "float64"},
            {"name": "server_stamped", "node": node("Faults.ServerStamped"), "type": "float64"},
            {"name": "wrong_type", "node": node("Types.String"), "type": "float64"},
            {"name": "no_namespace", "node": "nsu=urn:nope;s=X", "type": "float64"},
            {"name": "no_path", "node": f"0:Objects/{NS_URI}:Plant/{NS_URI}:Nope", "type": "float64"}]
    drv = make_driver(device(sim.endpoint, tags, mode=mode))
    await drv.connect()
    try:
        seen = await read_until(drv, {t["name"] for t in tags})
    finally:
        await drv.close()
    p = {name: points[0] for name, points in seen.items()}
    assert p["broken"][1:] == (None, STAMP_MS, BROKEN_STATUS, None, "BadSensorFailure")
    assert p["shaky"].value == 42 and p["shaky"].status == SHAKY_STATUS
    assert p["shaky"].quality is Quality.UNCERTAIN and p["shaky"].reason == "UncertainLastUsableValue"
    assert p["stamped"][1:] == (2.5, STAMP_MS, Status.GOOD, None, None)
    assert p["server_stamped"][1:] == (3.5, STAMP_MS, Status.GOOD, None, None)  # no source time: server's
    assert p["wrong_type"].value is None and p["wrong_type"].status == ua.StatusCodes.BadTypeMismatch
    assert p["wrong_type"].reason == "BadTypeMismatch: a str value does not fit a float64 tag"
    assert p["no_namespace"][3:] == (ua.StatusCodes.BadNodeIdUnknown, None, "namespace 'urn:nope' is not on the server")
    assert p["no_path"].status == ua.StatusCodes.BadNodeIdUnknown
    assert p["no_path"].reason == f"browse path '0:Objects/{NS_URI}:Plant/{NS_URI}:Nope' not found: BadNoMatch"
    assert set(drv.health()["unresolved"]) == {"no_namespace", "no_path"}


async def test_subscription_changes_deadband_and_overflow(sim: SimProcess) -> None:
    tags = [{"name": "speed", "node": node("Line1.Speed"), "type": "float64"},
            {"name": "level", "node": node("Line1.Level"), "type": "float64", "deadband": 5.0},
            {"name": "count", "node": node("Line1.Count"), "type": "uint32", "queue_size": 500}]
    drv = make_driver(device(sim.endpoint, tags, mode="subscribe", publishing_interval_ms=50, buffer_size=100))
    await drv.connect()
    try:
        await read_until(drv, {"speed", "level", "count"})  # the initial values
        async with Client(sim.endpoint) as c:
            ns = await c.get_namespace_index(NS_URI)
            speed, level, count = (c.get_node(f"ns={ns};s=Plant.Line1.{n}") for n in ("Speed", "Level", "Count"))
            for v in (1.0, 2.0, 3.0):
                await speed.write_value(ua.Variant(v, ua.VariantType.Double))
            for v in (1.0, 10.0, 12.0, 20.0):  # only changes of more than 5 from the last value are reported
                await level.write_value(ua.Variant(v, ua.VariantType.Double))
            changes: list[Point] = []

            async def all_arrived() -> bool:
                changes.extend(await drv.read())
                return [p.value for p in changes if p.tag == "level"][-1:] == [20.0] and \
                    [p.value for p in changes if p.tag == "speed"][-1:] == [3.0]

            await until(all_arrived, 5, interval=0.1, what="the speed and level changes")
            assert [p.value for p in changes if p.tag == "speed"] == [1.0, 2.0, 3.0]
            assert [p.value for p in changes if p.tag == "level"] == [10.0, 20.0]
            # 150 changes while nobody reads: the buffer (100) overflows, the newest value survives
            for v in range(1, 151):
                await count.write_value(ua.Variant(v, ua.VariantType.UInt32))
            await asyncio.sleep(0.5)
        counts = [p.value for p in await drv.read() if p.tag == "count"]
        assert counts[-1] == 150 and len(counts) < 100
        assert drv.health()["overflows"] == 150 - len(counts)
    finally:
        await drv.close()


# --- writes -------------------------------------------------------------------------------------

WRITES = {"Bool": ("bool", True), "Int16": ("int16", -1234), "UInt32": ("uint32", 4_000_000_000),
          "Int64": ("int64", -(2**40) - 1), "Float": ("float32", 0.15625), "Double": ("float64", 1e-300),
          "String": ("string", "ok ✓")}


async def test_writes(sim: SimProcess) -> None:
    tags = [{"name": n, "node": node(f"Setpoints.{n}"), "type": t, "writable": True} for n, (t, _) in WRITES.items()]
    tags += [{"name": "ro", "node": node("Faults.ReadOnly"), "type": "float64", "writable": True},
             {"name": "as_int32", "node": node("Setpoints.Int16"), "type": "int32", "writable": True}]
    dev = device(sim.endpoint, tags)
    drv = make_driver(dev)
    with pytest.raises(TemporaryError, match=r"^write to Bool: not connected$"):
        await drv.write(dev.tag_map["Bool"], True)
    await drv.connect()
    try:
        for name, (_, value) in WRITES.items():
            await drv.write(dev.tag_map[name], value)
        got = {p.tag: p.value for p in await drv.read()}
        assert {n: got[n] for n in WRITES} == {n: v for n, (_, v) in WRITES.items()}
        with pytest.raises(PermanentError) as err:
            await drv.write(dev.tag_map["ro"], 1.0)
        assert str(err.value) == f"write to ro (ns={sim.ns};s=Plant.Faults.ReadOnly) refused: BadUserAccessDenied"
        with pytest.raises(PermanentError) as err:
            await drv.write(dev.tag_map["as_int32"], 5)
        assert str(err.value) == f"write to as_int32 (ns={sim.ns};s=Plant.Setpoints.Int16) refused: BadTypeMismatch"
        with pytest.raises(WriteRefused, match=r"^70000 is outside the int16 range -32768\.\.32767$"):
            await drv.write(dev.tag_map["Int16"], 70000)
        assert {p.tag: p.value for p in await drv.read()}["Int16"] == -1234
    finally:
        await drv.close()


# --- security -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("security_mode", "pin"), [("SignAndEncrypt", False), ("Sign", True)])
async def test_security_with_login(secure_sim: SimProcess, certs: dict[str, Path], security_mode: str,
                                   pin: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    conn: dict[str, Any] = {"security_policy": "Basic256Sha256", "security_mode": security_mode,
                            "certificate": str(certs["cert"]), "private_key": str(certs["key"]),
                            "username": "operator", "password": "s3cret"}
    if pin:
        conn["server_certificate"] = str(certs["server_cert"])
    tags = [{"name": "pi", "node": node("Types.Double"), "type": "float64"},
            {"name": "sp", "node": node("Setpoints.Double"), "type": "float64", "writable": True}]
    dev = device(secure_sim.endpoint, tags, timeout_ms=3000, **conn)
    drv = make_driver(dev)
    await drv.connect()
    try:
        await drv.write(dev.tag_map["sp"], 42.0)
        assert {p.tag: p.value for p in await drv.read()} == {"pi": 3.141592653589793, "sp": 42.0}
    finally:
        await drv.close()
    assert "Sending: ReadRequest" in caplog.text  # asyncua logs requests at DEBUG...
    assert "s3cret" not in caplog.text  # ...but never our ActivateSession with the password


async def test_security_refusals(secure_sim: SimProcess, certs: dict[str, Path]) -> None:
    secure = {"security_policy": "Basic256Sha256", "certificate": str(certs["cert"]),
              "private_key": str(certs["key"]), "timeout_ms": 3000}
    tags = [{"name": "pi", "node": node("Types.Double"), "type": "float64"}]
    cases = [({**secure, "username": "operator", "password": "wrong"},
              (f"connect to {secure_sim.endpoint} failed: BadUserAccessDenied: user 'operator' refused, "
              "check username/password")),
             (secure, (f"connect to {secure_sim.endpoint} failed: BadIdentityTokenRejected: anonymous login "
              "refused, check username/password")),
             ({"username": "operator", "password": "s3cret"},  # no security: the server has no such endpoint
              (f"connect to {secure_sim.endpoint} failed: the server has no endpoint with security_policy "
               "'None' and security_mode 'None'"))]
    for conn, message in cases:
        drv = make_driver(device(secure_sim.endpoint, tags, **conn))
        with pytest.raises(TemporaryError) as err:
            await drv.connect()
        assert str(err.value) == message
        assert not drv.connected
        await drv.close()


# --- discovery ----------------------------------------------------------------------------------

async def test_discover(sim: SimProcess) -> None:
    conn = device(sim.endpoint, []).conn
    tags = await discover(conn, f"0:Objects/{NS_URI}:Plant/{NS_URI}:Types")
    assert tags == [{"name": n, "node": node(f"Types.{n}"), "type": t} for n, t in CANONICAL.items()]
    everything = await discover(conn, f"nsu={NS_URI};s=Plant")
    assert {t["name"] for t in everything} >= {"Types.Bool", "Line1.Speed", "Faults.Broken", "Setpoints.String"}
    # the discovered mappings are plant config as they are
    drv = make_driver(device(sim.endpoint, tags))
    await drv.connect()
    try:
        assert {p.tag: p.value for p in await drv.read()} == {n: v for n, (v, _) in TYPES.items()}
    finally:
        await drv.close()
    with pytest.raises(PermanentError, match=r"^browse path '0:Objects/2:Nope' not found: BadNoMatch$"):
        await discover(conn, "0:Objects/2:Nope")


# --- outages ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["poll", "subscribe"])
async def test_outage_and_renumbered_namespaces(tmp_path: Path, mode: str) -> None:
    """Kill the server, see BAD points, start a new one whose namespace index moved: GOOD again."""
    server = SimProcess(free_port(), tmp_path / "sim.log").start()
    tags = [{"name": "speed", "node": f"0:Objects/{NS_URI}:Plant/<{NS_URI}>:Line1/{NS_URI}:Speed", "type": "float64"},
            {"name": "count", "node": node("Line1.Count"), "type": "uint32"}]
    # the circuit breaker's back-off is the poller's business: keep it closed to time the driver alone
    dev = device(server.endpoint, tags, mode=mode, timeout_ms=500, breaker_failures=1000)
    queue: asyncio.Queue[DeviceBatch] = asyncio.Queue()
    poller = DevicePoller(dev, queue)
    stop = asyncio.Event()

    async def points_until(pred: Any, timeout: float) -> dict[str, Any]:
        last: dict[str, Any] = {}

        async def next_batch() -> bool:
            nonlocal last
            last = {p.tag: p for p in (await queue.get()).points}
            return bool(pred(last))

        await until(next_batch, timeout, 0, what=lambda: f"a batch that matches (last: {last})")
        return last

    task = asyncio.create_task(poller.poll_loop(stop), name="test.poll_loop")
    try:
        await write_raw(server.endpoint, "Line1.Speed", ua.Variant(12.5, ua.VariantType.Double))
        await points_until(lambda p: p.get("speed") and p["speed"].value == 12.5, 5)
        assert server.ns == 2
        server.kill()
        bad = await points_until(lambda p: p.get("speed") and p["speed"].quality is Quality.BAD, 5)
        assert bad["speed"].value is None and bad["speed"].reason
        assert bad["count"].quality is Quality.BAD
        await asyncio.to_thread(server.start, "--extra-namespace", "urn:loaded:first",
                                "--extra-namespace", "urn:loaded:second")
        assert server.ns == 4
        t0 = time.monotonic()
        await points_until(lambda p: p.get("speed") and p["speed"].value == 0.0 and p["speed"].status == Status.GOOD, 5)
        await write_raw(server.endpoint, "Line1.Count", ua.Variant(77, ua.VariantType.UInt32))
        await points_until(lambda p: p.get("count") and p["count"].value == 77, 5 - (time.monotonic() - t0))
        assert poller.driver.health()["connects"] == 2
    finally:
        stop.set()
        await task
        server.stop()


async def test_frozen_server_detected(tmp_path: Path) -> None:
    """A server that stops answering (no FIN, no RST) is noticed by the watchdog within ~2 timeouts."""
    server = SimProcess(free_port(), tmp_path / "sim.log").start()
    tags = [{"name": "speed", "node": node("Line1.Speed"), "type": "float64"}]
    drv = make_driver(device(server.endpoint, tags, mode="subscribe", timeout_ms=1000))
    try:
        await drv.connect()
        await read_until(drv, {"speed"})
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(TemporaryError, match=r"^connection lost: "):
            while time.monotonic() - t0 < 5:
                await drv.read()
                await asyncio.sleep(0.05)
        assert time.monotonic() - t0 < 2.5
        assert not drv.connected
    finally:
        await drv.close()
        server.stop()
