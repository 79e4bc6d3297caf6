"""A simulated OPC UA server (asyncua) with a small plant, for tests and the demo.

Run it as its own process so tests can really kill it::

    python -m gateway.drivers.opcua.simulator --port 4840 [--extra-namespace urn:first] [--animate]
        [--certificate server.der --private-key server.pem --user operator:secret --secure-only]

It prints ``READY <endpoint>`` on stdout once it listens. The address space, all in namespace
:data:`NS_URI` with string node ids ``Plant.<folder>.<name>``::

    Objects/Plant/Types/{Bool, Int8, UInt8, ..., Double, String}   one read-only variable per type
    Objects/Plant/Setpoints/{Bool, Int16, UInt32, Int64, Float, Double, String}   writable
    Objects/Plant/Line1/{Speed, Level, Count, Running}             writable (animated with --animate)
    Objects/Plant/Faults/{Broken, Shaky, ReadOnly, Stamped, ServerStamped}
    Objects/Plant/Dates/{Value, Null, PreEpoch, Max, Setpoint}     DateTime variables; Setpoint writable

``--extra-namespace`` registers namespaces *before* the plant's, so its index moves (a restarted
server that loaded another model first): clients must resolve by URI or browse path.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.drivers.opcua.client import node_id
from nexus.runtime import sleep_or_stop

NS_URI = "urn:nexus-edge:sim:plant"
SERVER_URI = "urn:nexus-edge:sim:server"
VT = ua.VariantType

#: Plant.Types.<name>: (value, variant type); values chosen to hit each type's edges
TYPES: dict[str, tuple[Any, ua.VariantType]] = {
    "Bool": (True, VT.Boolean), "Int8": (-128, VT.SByte), "UInt8": (255, VT.Byte),
    "Int16": (-32768, VT.Int16), "UInt16": (65535, VT.UInt16), "Int32": (-2147483648, VT.Int32),
    "UInt32": (4294967295, VT.UInt32), "Int64": (-(2**63), VT.Int64), "UInt64": (2**64 - 1, VT.UInt64),
    "Float": (-1.5, VT.Float), "Double": (3.141592653589793, VT.Double), "String": ("Grüße, 温度", VT.String),
}
SETPOINTS: dict[str, tuple[Any, ua.VariantType]] = {
    "Bool": (False, VT.Boolean), "Int16": (0, VT.Int16), "UInt32": (0, VT.UInt32), "Int64": (0, VT.Int64),
    "Float": (0.0, VT.Float), "Double": (0.0, VT.Double), "String": ("", VT.String),
}
LINE: dict[str, tuple[Any, ua.VariantType]] = {
    "Speed": (0.0, VT.Double), "Level": (0.0, VT.Double), "Count": (0, VT.UInt32), "Running": (False, VT.Boolean),
}
#: Plant.Dates.<name>: DateTime values at the edges of the datetime tag type (microseconds: cut to ms)
DATES: dict[str, datetime] = {
    "Value": datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC),
    "Null": datetime(1601, 1, 1, tzinfo=UTC),  # OPC UA's null DateTime: 0 on the wire
    "PreEpoch": datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC),
    "Max": datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),  # MaxDateTime: Int64 max on the wire
    "Setpoint": datetime(2000, 1, 1, tzinfo=UTC),
}
#: source timestamp of Plant.Faults.Stamped (and server timestamp of ServerStamped)
STAMP = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
BROKEN_STATUS = ua.StatusCodes.BadSensorFailure
SHAKY_STATUS = ua.StatusCodes.UncertainLastUsableValue


class _Users(UserManager):
    """Username/password check; anonymous logins are refused by the endpoint's token policy."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


def make_certificate(directory: Path, name: str, app_uri: str, *, server: bool) -> tuple[Path, Path]:
    """A self-signed application certificate (DER) and its key (PEM) in ``directory``."""
    key = cert_gen.generate_private_key()
    usage = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(app_uri), x509.DNSName(socket.gethostname()),
                                    x509.DNSName("localhost")]
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, sans, extended=usage)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


class OpcUaSim:
    """The simulated server; :meth:`start` / :meth:`stop`, or run it with :func:`main`."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", extra_namespaces: tuple[str, ...] = (),
                 certificate: Path | None = None, private_key: Path | None = None,
                 users: dict[str, str] | None = None, secure_only: bool = False) -> None:
        self.endpoint = f"opc.tcp://{host}:{port}/nexus/sim"
        self.extra_namespaces = extra_namespaces
        self.certificate, self.private_key = certificate, private_key
        self.users, self.secure_only = users, secure_only
        self.server: Server | None = None
        self.ns = 0
        self.nodes: dict[str, Node] = {}  #: "Line1.Speed" -> node

    async def start(self) -> None:
        server = Server(user_manager=_Users(self.users) if self.users else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("NEXUS Edge OPC UA simulator")
        await server.set_application_uri(SERVER_URI)
        if self.certificate and self.private_key:
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
            policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt, ua.SecurityPolicyType.Basic256Sha256_Sign]
            server.set_security_policy(policies if self.secure_only else [ua.SecurityPolicyType.NoSecurity, *policies])
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        for uri in self.extra_namespaces:
            await server.register_namespace(uri)
        self.ns = await server.register_namespace(NS_URI)
        await self._build(server)
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def _build(self, server: Server) -> None:
        plant = await server.nodes.objects.add_object(node_id("Plant", self.ns), ua.QualifiedName("Plant", self.ns))
        for folder, variables, writable in (("Types", TYPES, False), ("Setpoints", SETPOINTS, True),
                                            ("Line1", LINE, True)):
            parent = await plant.add_object(node_id(f"Plant.{folder}", self.ns), ua.QualifiedName(folder, self.ns))
            for name, (value, vtype) in variables.items():
                await self._variable(parent, f"{folder}.{name}", name, ua.Variant(value, vtype), writable)
        dates = await plant.add_object(node_id("Plant.Dates", self.ns), ua.QualifiedName("Dates", self.ns))
        for name, when in DATES.items():
            await self._variable(dates, f"Dates.{name}", name, ua.Variant(when, VT.DateTime), name == "Setpoint")
        faults = await plant.add_object(node_id("Plant.Faults", self.ns), ua.QualifiedName("Faults", self.ns))
        await self._variable(faults, "Faults.ReadOnly", "ReadOnly", ua.Variant(7.25, VT.Double), False)
        broken = await self._variable(faults, "Faults.Broken", "Broken", ua.Variant(1.0, VT.Double), False)
        # asyncua annotates StatusCode and DataValue with its marker classes (ua.UInt32, ua.DateTime) that the
        # plain int and datetime it takes do not match: hence the arg-type ignores below
        await broken.write_value(
            ua.DataValue(StatusCode=ua.StatusCode(BROKEN_STATUS), SourceTimestamp=STAMP))  # type: ignore[arg-type]
        shaky = await self._variable(faults, "Faults.Shaky", "Shaky", ua.Variant(42, VT.Int32), False)
        await shaky.write_value(
            ua.DataValue(ua.Variant(42, VT.Int32), StatusCode=ua.StatusCode(SHAKY_STATUS)))  # type: ignore[arg-type]
        stamped = await self._variable(faults, "Faults.Stamped", "Stamped", ua.Variant(1.0, VT.Double), False)
        await stamped.write_value(
            ua.DataValue(ua.Variant(2.5, VT.Double), SourceTimestamp=STAMP, ServerTimestamp=None))  # type: ignore[arg-type]
        server_stamped = await self._variable(faults, "Faults.ServerStamped", "ServerStamped",
                                              ua.Variant(1.0, VT.Double), False)
        server.set_force_server_timestamp(False)  # so this one keeps STAMP as its server timestamp
        await server_stamped.write_value(ua.DataValue(ua.Variant(3.5, VT.Double), SourceTimestamp=None,
                                                      ServerTimestamp=STAMP))  # type: ignore[arg-type]
        server.set_force_server_timestamp(True)

    async def _variable(self, parent: Node, key: str, name: str, value: ua.Variant, writable: bool) -> Node:
        node = await parent.add_variable(node_id(f"Plant.{key}", self.ns), ua.QualifiedName(name, self.ns), value)
        if writable:
            await node.set_writable()
        self.nodes[key] = node
        return node

    async def animate_loop(self, stop: asyncio.Event, period: float = 1.0) -> None:
        """Move Line1's values like a running line, for the demo."""
        t = 0
        while not stop.is_set():
            t += 1
            speed = round(50 + 20 * math.sin(t / 10), 3)
            await self.nodes["Line1.Speed"].write_value(ua.Variant(speed, VT.Double))
            await self.nodes["Line1.Level"].write_value(ua.Variant(round(t % 100 * 1.0, 1), VT.Double))
            await self.nodes["Line1.Count"].write_value(ua.Variant(t, VT.UInt32))
            await self.nodes["Line1.Running"].write_value(ua.Variant(t % 30 < 25, VT.Boolean))
            await sleep_or_stop(period, stop)  # no hidden wait_for task


async def run(args: argparse.Namespace) -> None:
    users = dict(u.split(":", 1) for u in args.user) if args.user else None
    sim = OpcUaSim(args.port, host=args.host, extra_namespaces=tuple(args.extra_namespace),
                   certificate=args.certificate, private_key=args.private_key, users=users,
                   secure_only=args.secure_only)
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {sim.endpoint} ns={sim.ns}", flush=True)
    try:
        if args.animate:
            await sim.animate_loop(stop)
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gateway.drivers.opcua.simulator", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4840)
    p.add_argument("--extra-namespace", action="append", default=[], help="register before the plant namespace")
    p.add_argument("--certificate", type=Path, help="server certificate (enables Basic256Sha256)")
    p.add_argument("--private-key", type=Path)
    p.add_argument("--user", action="append", help="name:password; refuses anonymous logins")
    p.add_argument("--secure-only", action="store_true", help="no SecurityPolicy None endpoint")
    p.add_argument("--animate", action="store_true", help="change Line1 values every second")
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
