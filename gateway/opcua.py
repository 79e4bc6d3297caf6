"""OPC UA driver (asyncua): batched polling or subscriptions, security, browse-path addressing.

A tag's ``node`` is a node id (``ns=2;s=Line1.Speed``), a node id by namespace URI
(``nsu=urn:acme:plant;s=Line1.Speed``) or a browse path from the Root folder
(``0:Objects/2:Plant/2:Speed``, namespace URIs allowed: ``urn:acme:plant:Speed`` or
``<http://acme.com/plant/>:Speed``). URIs and browse paths are resolved at every :meth:`connect`,
so a server that restarted with other namespace indexes is followed without a gateway restart.

Every connect builds a new asyncua client, session and (``mode = "subscribe"``) subscription: the
poller's reconnect is the one recovery path, instead of asyncua's own reconnect underneath it.
See docs/drivers/opcua.md for the config keys.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeNotif
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua.status_codes import code_to_name_doc
from cryptography import x509

from gateway import driver
from gateway.config import DeviceConfig, TagConfig, choice, get, int_in, parse_type
from gateway.errors import ConfigError, PermanentError, TemporaryError
from gateway.values import INT_RANGES, check_write
from proto.points import Point, Quality, Status

log = logging.getLogger("gateway.opcua")
T = TypeVar("T")


class _NoCredentials(logging.Filter):
    """asyncua logs every request at DEBUG, ActivateSession with its user token included."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.args, tuple) and record.args
                    and isinstance(record.args[0], ua.ActivateSessionRequest))


logging.getLogger("asyncua.client.ua_client.UASocketProtocol").addFilter(_NoCredentials())

DEVICE_KEYS = frozenset({"endpoint", "mode", "security_policy", "security_mode", "certificate", "private_key",
                         "server_certificate", "username", "password", "publishing_interval_ms",
                         "session_timeout_ms", "buffer_size"})
TAG_KEYS = frozenset({"node", "type", "length", "sampling_interval_ms", "deadband", "deadband_type", "queue_size"})
POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")
_SUBSCRIBE_KEYS = ("sampling_interval_ms", "deadband", "deadband_type", "queue_size")
#: canonical type -> OPC UA built-in type (also its DataType node id i=1..12)
VARIANTS = {"bool": ua.VariantType.Boolean, "int8": ua.VariantType.SByte, "uint8": ua.VariantType.Byte,
            "int16": ua.VariantType.Int16, "uint16": ua.VariantType.UInt16, "int32": ua.VariantType.Int32,
            "uint32": ua.VariantType.UInt32, "int64": ua.VariantType.Int64, "uint64": ua.VariantType.UInt64,
            "float32": ua.VariantType.Float, "float64": ua.VariantType.Double, "string": ua.VariantType.String}
_NODE_ID = re.compile(r"(ns|nsu|i|s|g|b)=")
_BAD_NODE = ua.StatusCodes.BadNodeIdUnknown
_LOGIN_REFUSED = {ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenInvalid,
                  ua.StatusCodes.BadIdentityTokenRejected}


@dataclass(frozen=True, kw_only=True)
class OpcUaConnection:
    endpoint: str  #: opc.tcp://host:port/path
    mode: str = "poll"  #: "poll": one batched Read per interval; "subscribe": monitored items
    security_policy: str = "None"  #: one of POLICIES
    security_mode: str = "None"  #: None | Sign | SignAndEncrypt
    certificate: str | None = None  #: client application certificate (DER or PEM) for signing/encryption
    private_key: str | None = None  #: its private key (PEM or DER)
    server_certificate: str | None = None  #: pin the server's certificate; else taken from GetEndpoints
    application_uri: str = "urn:nexus-edge:gateway"  #: from the certificate's URI SAN when there is one
    username: str | None = None  #: UserName login (with password); anonymous without
    password: str | None = field(default=None, repr=False)  #: never logged
    publishing_interval_ms: int = 500  #: subscription publishing interval
    session_timeout_ms: int = 60_000  #: requested session timeout
    buffer_size: int = 10_000  #: subscribe mode: changes kept between two read() calls


@dataclass(frozen=True, kw_only=True)
class NodeAddress:
    text: str  #: as configured, for messages
    node_id: ua.NodeId | None = None  #: a node id (its namespace index is looked up if namespace_uri is set)
    namespace_uri: str | None = None  #: ``nsu=`` node ids: the namespace, looked up at connect
    path: tuple[tuple[int | str, str], ...] = ()  #: browse path from Root: (namespace index or URI, name)
    sampling_interval_ms: float = -1.0  #: -1: the publishing interval
    deadband: float = 0.0  #: subscribe: DataChangeFilter deadband, 0 for none
    deadband_type: str = "absolute"  #: absolute | percent (of the variable's EURange)
    queue_size: int = 10  #: server-side queue per monitored item


def _file(d: dict[str, Any], key: str, where: str) -> str | None:
    path = get(d, key, str, where, None)
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"'{key}' file not found: {path}", where=where)
    return path


def _certificate_uri(path: str, where: str) -> str | None:
    """The application URI in the certificate's SubjectAltName: the server checks it against ours."""
    data = Path(path).read_bytes()
    try:
        load = x509.load_pem_x509_certificate if data.startswith(b"-----") else x509.load_der_x509_certificate
        san = load(data).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise ConfigError(f"'certificate' is not a PEM or DER certificate: {exc}", where=where) from exc
    return next(iter(san.get_values_for_type(x509.UniformResourceIdentifier)), None)


def parse_connection(d: dict[str, Any], where: str, protocol: str) -> OpcUaConnection:
    endpoint = get(d, "endpoint", str, where)
    url = urlparse(endpoint)
    try:
        valid = url.scheme == "opc.tcp" and bool(url.hostname) and url.port != 0
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise ConfigError(f"'endpoint' {endpoint!r} is not an opc.tcp://host:port[/path] URL", where=where)
    policy = choice(get(d, "security_policy", str, where, "None"), POLICIES, "security_policy", where)
    mode = choice(get(d, "security_mode", str, where, "None" if policy == "None" else "SignAndEncrypt"),
                  SECURITY_MODES, "security_mode", where)
    cert, key, server_cert = (_file(d, k, where) for k in ("certificate", "private_key", "server_certificate"))
    if (policy == "None") != (mode == "None"):
        raise ConfigError(f"'security_mode' {mode!r} does not go with 'security_policy' {policy!r}: use None "
                          "with None, or Sign/SignAndEncrypt with a security policy", where=where)
    if policy != "None" and not (cert and key):
        raise ConfigError(f"'certificate' and 'private_key' are required with security_policy {policy!r}", where=where)
    if policy == "None" and (cert or key or server_cert):
        raise ConfigError("'certificate', 'private_key' and 'server_certificate' need a 'security_policy'",
                          where=where)
    username, password = get(d, "username", str, where, None), get(d, "password", str, where, None)
    if (username is None) != (password is None):
        raise ConfigError("'username' and 'password' go together", where=where)
    return OpcUaConnection(
        endpoint=endpoint, mode=choice(get(d, "mode", str, where, "poll"), ("poll", "subscribe"), "mode", where),
        security_policy=policy, security_mode=mode, certificate=cert, private_key=key,
        server_certificate=server_cert,
        application_uri=(cert and _certificate_uri(cert, where)) or OpcUaConnection.application_uri,
        username=username, password=password,
        publishing_interval_ms=int_in(d, "publishing_interval_ms", 10, 3_600_000, where, 500),
        session_timeout_ms=int_in(d, "session_timeout_ms", 1000, 86_400_000, where, 60_000),
        buffer_size=int_in(d, "buffer_size", 100, 10_000_000, where, 10_000))


def parse_node(text: str, where: str) -> NodeAddress:
    """A node id or a browse path (see the module docstring); namespaces are resolved at connect."""
    if not text.strip():
        raise ConfigError("'node' is empty", where=where)
    if _NODE_ID.match(text):
        try:
            nid = ua.NodeId.from_string(text)
        except ua.UaStringParsingError as exc:
            raise ConfigError(f"'node' {text!r} is not a valid node id; expected e.g. 'ns=2;s=Line1.Speed', "
                              "'ns=2;i=1001' or 'nsu=urn:acme:plant;s=Line1.Speed'", where=where) from exc
        uri = getattr(nid, "NamespaceUri", None)
        return NodeAddress(text=text, node_id=ua.NodeId(nid.Identifier, nid.NamespaceIndex, nid.NodeIdType),
                           namespace_uri=uri)
    path: list[tuple[int | str, str]] = []
    for i, elem in enumerate(re.split(r"/(?![^<]*>)", text.removeprefix("/")), 1):
        m = re.fullmatch(r"<([^>]+)>:(.+)|(\d+):(.+)", elem)
        if m:
            ns: int | str = m[1] if m[1] else int(m[3])
            name = m[2] or m[4]
        else:
            ns, _, name = elem.rpartition(":")
            ns = ns or 0
        if not name:
            raise ConfigError(f"'node' {text!r}: browse path element {i} {elem!r} has no name", where=where)
        if elem.startswith("<") and not m:
            raise ConfigError(f"'node' {text!r}: browse path element {i} {elem!r} is not <uri>:name", where=where)
        path.append((ns, name))
    return NodeAddress(text=text, path=tuple(path))


def parse_tag(d: dict[str, Any], where: str, conn: OpcUaConnection) -> tuple[NodeAddress, str, int]:
    """``type`` is required: the historian, transforms and write checks need it before any connect
    (use :func:`discover` to fill it in from the server's DataType)."""
    address = parse_node(get(d, "node", str, where), where)
    if "type" not in d:
        raise ConfigError("'type' is required", where=where)
    dtype = parse_type(d, where)
    length = int_in(d, "length", 0, 65_535, where, 0)
    if length and dtype != "string":
        raise ConfigError(f"'length' only applies to string tags, not {dtype}", where=where)
    used = [k for k in _SUBSCRIBE_KEYS if k in d]
    if used and conn.mode != "subscribe":
        raise ConfigError(f"{used} only apply with mode = \"subscribe\"", where=where)
    deadband = get(d, "deadband", float, where, 0.0)
    deadband_type = choice(get(d, "deadband_type", str, where, "absolute"), ("absolute", "percent"),
                           "deadband_type", where)
    if deadband < 0 or (deadband_type == "percent" and deadband > 100):
        raise ConfigError(f"'deadband' {deadband} outside 0..{100 if deadband_type == 'percent' else 'inf'}",
                          where=where)
    if deadband and dtype in ("bool", "string"):
        raise ConfigError(f"'deadband' needs a numeric tag, not {dtype}", where=where)
    sampling = get(d, "sampling_interval_ms", float, where, -1.0)
    if sampling < 0 and sampling != -1:
        raise ConfigError(f"'sampling_interval_ms' {sampling} must be >= 0 (or -1: the publishing interval)",
                          where=where)
    return replace(address, sampling_interval_ms=sampling, deadband=deadband, deadband_type=deadband_type,
                   queue_size=int_in(d, "queue_size", 0, 65_535, where, 10)), dtype, length


def status_name(code: int) -> str:
    """``BadSensorFailure`` for 0x808A0000 (info bits ignored); hex when the code is unknown."""
    known = code_to_name_doc.get(code & 0xFFFF0000)
    return known[0] if known else f"0x{code:08X}"


def _ms(ts: datetime | None) -> int | None:
    """Unix ms, or None for a missing timestamp (OPC UA's null DateTime is 1601-01-01)."""
    ms = int(ts.timestamp() * 1000) if ts is not None else 0
    return ms if ms > 0 else None


def _coerce(value: Any, dtype: str) -> Any:
    """The raw Python value for a ``dtype`` tag; ValueError when the server's value cannot be one."""
    if dtype == "string":
        if isinstance(value, str):
            return value
    elif dtype == "bool":
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if dtype in INT_RANGES:
            lo, hi = INT_RANGES[dtype]
            if float(value).is_integer() and lo <= value <= hi:
                return int(value)
            raise ValueError(f"{value!r} does not fit a {dtype} tag")
        return float(value)
    raise ValueError(f"a {type(value).__name__} value does not fit a {dtype} tag")


def to_point(tag: TagConfig, dv: ua.DataValue) -> Point:
    """One value as a Point: the OPC UA status is the point's status, the source timestamp its time."""
    ts = _ms(dv.SourceTimestamp) or _ms(dv.ServerTimestamp) or int(time.time() * 1000)
    status = dv.StatusCode.value if dv.StatusCode is not None else 0
    if Quality.of(status) is Quality.BAD:
        return Point(tag.name, None, ts, status, tag.unit, status_name(status))
    value = dv.Value.Value if dv.Value is not None else None
    if value is None:
        return Point(tag.name, None, ts, Status.BAD_WAITING_FOR_INITIAL_DATA, tag.unit, "no value (null)")
    try:
        value = _coerce(value, tag.type)
    except ValueError as exc:
        return Point(tag.name, None, ts, ua.StatusCodes.BadTypeMismatch, tag.unit, f"BadTypeMismatch: {exc}")
    return Point(tag.name, value, ts, status, tag.unit, None if status == 0 else status_name(status))


async def bounded(what: str, aw: Awaitable[T], timeout: float, device_id: str = "") -> T:
    """``aw`` within ``timeout``; transport failures and service faults as :class:`TemporaryError`."""
    try:
        async with asyncio.timeout(timeout):
            return await aw
    except TimeoutError as exc:
        raise TemporaryError(f"{what} timed out after {int(timeout * 1000)} ms", device_id=device_id) from exc
    except ua.UaStatusCodeError as exc:
        raise TemporaryError(f"{what} failed: {status_name(exc.code)}", device_id=device_id) from exc
    except (OSError, ua.UaError) as exc:  # ConnectionError is an OSError
        raise TemporaryError(f"{what} failed: {exc or type(exc).__name__}", device_id=device_id) from exc


def _pki_file(path: str | None) -> Any:
    """asyncua reads only ``*.pem`` as PEM; decide by content so ``.crt``/``.key`` files work too."""
    if path is None:
        return None
    return uacrypto.CertProperties(path, "pem" if Path(path).read_bytes().startswith(b"-----") else "der")


async def open_client(conn: OpcUaConnection, timeout: float) -> Client:
    """A connected client with ``conn``'s security and login, each step bounded by ``timeout``."""
    # the watchdog reads ServerStatus every `timeout` s (itself bounded by `timeout`): a silent
    # peer is noticed within 2 x timeout, a closed socket at once
    client = Client(conn.endpoint, timeout=timeout, watchdog_intervall=timeout)
    client.name = client.description = "NEXUS Edge gateway"
    client.application_uri = conn.application_uri
    client.session_timeout = conn.session_timeout_ms
    if conn.username is not None and conn.password is not None:
        client.set_user(conn.username)
        client.set_password(conn.password)
    try:
        if conn.security_policy != "None":
            policy = getattr(security_policies, f"SecurityPolicy{conn.security_policy}")
            await bounded(f"GetEndpoints from {conn.endpoint}", client.set_security(
                policy, _pki_file(conn.certificate), _pki_file(conn.private_key),
                server_certificate=_pki_file(conn.server_certificate),
                mode=getattr(ua.MessageSecurityMode, conn.security_mode)), timeout)
        await bounded(f"connect to {conn.endpoint}", client.connect(), timeout)
    except BaseException as exc:  # cancelled too: never leave asyncua's tasks and socket behind
        await shutdown(client, timeout)
        if isinstance(exc, TemporaryError):
            raise _explained(exc, conn) from exc.__cause__
        if isinstance(exc, Exception):  # a bad key or certificate, a crypto failure: still "cannot connect"
            raise TemporaryError(f"connect to {conn.endpoint} failed: {exc!r}") from exc
        raise
    return client


def _explained(exc: TemporaryError, conn: OpcUaConnection) -> TemporaryError:
    """Say what to fix when the server refused the login or has no endpoint with our security."""
    if getattr(exc.__cause__, "code", None) in _LOGIN_REFUSED:
        who = f"user {conn.username!r}" if conn.username else "anonymous login"
        return TemporaryError(f"{exc}: {who} refused, check username/password")
    if "No matching endpoints" in str(exc.__cause__):
        return TemporaryError(f"connect to {conn.endpoint} failed: the server has no endpoint with security_policy "
                              f"{conn.security_policy!r} and security_mode {conn.security_mode!r}")
    return exc


async def shutdown(client: Client, timeout: float) -> None:
    """Close session and socket, never raising; a dead transport is only torn down locally."""
    try:
        async with asyncio.timeout(timeout):
            if client.state is UaClientState.CONNECTED:
                await client.disconnect()
            else:
                await client.close_session()  # stops asyncua's watchdog and renew tasks too
    except Exception as exc:  # noqa: BLE001 - closing must not fail; the socket is dropped below
        log.debug("closing the session failed: %r", exc)
    client.disconnect_socket()


async def resolve(client: Client, addresses: list[NodeAddress], timeout: float) -> list[ua.NodeId | str]:
    """Each address as a node id with today's namespace indexes, or the reason it does not resolve."""
    namespaces: list[str] = await bounded("read NamespaceArray", client.get_namespace_array(), timeout)

    def index(ns: int | str) -> int:
        if isinstance(ns, int):
            return ns
        if ns not in namespaces:
            raise LookupError(f"namespace {ns!r} is not on the server")
        return namespaces.index(ns)

    out: list[ua.NodeId | str] = []
    paths: dict[int, ua.BrowsePath] = {}
    for i, a in enumerate(addresses):
        try:
            if a.node_id is not None:
                ns = index(a.namespace_uri) if a.namespace_uri else a.node_id.NamespaceIndex
                out.append(ua.NodeId(a.node_id.Identifier, ns, a.node_id.NodeIdType))
                continue
            elements = [ua.RelativePathElement(ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                                               IsInverse=False, IncludeSubtypes=True,
                                               TargetName=ua.QualifiedName(name, index(ns)))
                        for ns, name in a.path]
        except LookupError as exc:
            out.append(str(exc))
            continue
        paths[i] = ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.RootFolder),
                                 RelativePath=ua.RelativePath(Elements=elements))
        out.append("")
    if paths:
        results = await bounded("TranslateBrowsePathsToNodeIds",
                                client.uaclient.translate_browsepaths_to_nodeids(list(paths.values())), timeout)
        for i, res in zip(paths, results, strict=True):
            if res.StatusCode.is_good() and res.Targets:
                t = res.Targets[0].TargetId
                out[i] = ua.NodeId(t.Identifier, t.NamespaceIndex, t.NodeIdType)
            else:
                out[i] = f"browse path {addresses[i].text!r} not found: {status_name(res.StatusCode.value)}"
    return out


class _Changes:
    """asyncua's subscription callbacks for one connection; stale ones are ignored once it is replaced."""

    def __init__(self, drv: Driver, tags: dict[int, TagConfig]) -> None:
        self.drv, self.tags, self.active = drv, tags, True

    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        tag = self.tags.get(data.monitored_item.ClientHandle)
        if self.active and tag is not None:
            self.drv.buffer(to_point(tag, data.monitored_item.Value))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        if self.active and status.Status.is_bad() and self.drv.lost is None:
            self.drv.lost = f"subscription ended: {status_name(status.Status.value)}"

    async def connection_lost(self, exc: Exception) -> None:
        if self.active and self.drv.lost is None:
            self.drv.lost = f"connection lost: {exc or type(exc).__name__}"


class Driver(driver.Driver):
    """One OPC UA server. ``read()`` polls all tags in one Read, or drains subscription changes."""

    def __init__(self, device: DeviceConfig) -> None:
        super().__init__(device)
        self.conn: OpcUaConnection = device.conn
        self.timeout = device.timeout_ms / 1000
        self.client: Client | None = None
        self.nodes: dict[str, ua.NodeId] = {}  #: tag name -> node id resolved at connect
        self.unresolved: dict[str, str] = {}  #: tag name -> why its node did not resolve
        self.lost: str | None = None  #: why the connection is known to be dead (set by callbacks)
        self.overflows = 0  #: subscription changes dropped because read() was not called in time
        self.connects = 0
        self._changes: _Changes | None = None
        self._buffer: list[Point] = []
        self._reported_overflows = 0

    @property
    def connected(self) -> bool:
        return self.client is not None and self.lost is None and self.client.state is UaClientState.CONNECTED

    async def connect(self) -> None:
        await self.close()
        self.client = await open_client(self.conn, self.timeout)
        self.lost = None
        self._changes = _Changes(self, {})
        self.client.connection_lost_callback = self._changes.connection_lost
        try:
            tags = self.device.tags
            found = await resolve(self.client, [t.address for t in tags], self.timeout)
            self.nodes = {t.name: n for t, n in zip(tags, found, strict=True) if isinstance(n, ua.NodeId)}
            self.unresolved = {t.name: n for t, n in zip(tags, found, strict=True) if isinstance(n, str)}
            for name, reason in self.unresolved.items():
                log.warning("tag %s: %s", name, reason, extra={"device": self.device.id, "tag": name})
            if self.conn.mode == "subscribe":
                await self._subscribe()
        except BaseException:
            await self.close()
            raise
        self.connects += 1

    async def _subscribe(self) -> None:
        """One subscription, one monitored item per resolved tag (client handle = tag index + 1)."""
        assert self.client is not None and self._changes is not None
        self._changes.tags = tags = {i: t for i, t in enumerate(self.device.tags, 1) if t.name in self.nodes}
        sub = await bounded("CreateSubscription", self.client.create_subscription(
            self.conn.publishing_interval_ms, self._changes), self.timeout)
        results = await bounded("CreateMonitoredItems", sub.create_monitored_items(
            [self._item(handle, tag) for handle, tag in tags.items()]), self.timeout) if tags else []
        now = int(time.time() * 1000)
        for tag, res in zip(tags.values(), results, strict=True):
            if isinstance(res, ua.StatusCode):  # refused item, e.g. BadFilterNotAllowed
                self.buffer(Point(tag.name, None, now, res.value, tag.unit, f"monitoring refused: {res.name}"))
        for t in self.device.tags:
            if t.name in self.unresolved:
                self.buffer(Point(t.name, None, now, _BAD_NODE, t.unit, self.unresolved[t.name]))

    def _item(self, handle: int, tag: TagConfig) -> ua.MonitoredItemCreateRequest:
        a: NodeAddress = tag.address
        params = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=a.sampling_interval_ms,
                                         QueueSize=a.queue_size, DiscardOldest=True)
        if a.deadband:
            params.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValue,
                                                DeadbandType=1 if a.deadband_type == "absolute" else 2,
                                                DeadbandValue=a.deadband)
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=self.nodes[tag.name], AttributeId=ua.AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)

    def buffer(self, point: Point) -> None:
        """Keep a change for the next read(); when full, keep only the newest per tag and count the rest."""
        if len(self._buffer) >= self.conn.buffer_size:
            newest = {p.tag: p for p in self._buffer}
            self.overflows += len(self._buffer) - len(newest)
            self._buffer = list(newest.values())
            if len(self._buffer) >= self.conn.buffer_size:  # more tags than room: drop the oldest
                self._buffer.pop(0)
                self.overflows += 1
        self._buffer.append(point)

    async def read(self) -> list[Point]:
        if self.conn.mode == "subscribe" and self._buffer:
            return self._drain()  # changes that arrived before a loss are still real data
        if not self.connected or self.client is None:
            self.lost = self.lost or (f"connection {self.client.state.value}" if self.client else "not connected")
            raise TemporaryError(self.lost, device_id=self.device.id)
        if self.conn.mode == "subscribe":
            return self._drain()
        tags = [t for t in self.device.tags if t.name in self.nodes]
        params = ua.ReadParameters(TimestampsToReturn=ua.TimestampsToReturn.Both, NodesToRead=[
            ua.ReadValueId(NodeId=self.nodes[t.name], AttributeId=ua.AttributeIds.Value) for t in tags])
        try:
            values = await bounded("read", self.client.uaclient.read(params), self.timeout, self.device.id) \
                if tags else []
        except TemporaryError as exc:
            self.lost = str(exc)
            raise
        points = {t.name: to_point(t, dv) for t, dv in zip(tags, values, strict=True)}
        now = int(time.time() * 1000)
        return [points.get(t.name) or Point(t.name, None, now, _BAD_NODE, t.unit, self.unresolved.get(t.name))
                for t in self.device.tags]

    def _drain(self) -> list[Point]:
        points, self._buffer = self._buffer, []
        if self.overflows > self._reported_overflows:
            log.warning("subscription buffer overflowed: %d changes dropped so far (kept the newest per tag)",
                        self.overflows, extra={"device": self.device.id})
            self._reported_overflows = self.overflows
        return points

    async def write(self, tag: TagConfig, value: Any) -> None:
        value = check_write(tag.type, value, length=tag.length)
        if tag.name in self.unresolved:
            raise PermanentError(f"write to {tag.name} refused: {self.unresolved[tag.name]}", device_id=self.device.id)
        if not self.connected or self.client is None:
            raise TemporaryError(f"write to {tag.name}: {self.lost or 'not connected'}", device_id=self.device.id)
        node = self.nodes[tag.name]
        dv = ua.DataValue(ua.Variant(value, VARIANTS[tag.type]))
        results = await bounded(f"write to {tag.name}", self.client.uaclient.write_attributes(
            [node], [dv], ua.AttributeIds.Value), self.timeout, self.device.id)
        if not results[0].is_good():
            raise PermanentError(f"write to {tag.name} ({node.to_string()}) refused: {status_name(results[0].value)}",
                                 device_id=self.device.id)

    async def close(self) -> None:
        client, self.client = self.client, None
        if self._changes is not None:
            self._changes.active = False
            self._changes = None
        if client is not None:
            await shutdown(client, self.timeout)

    def health(self) -> dict[str, Any]:
        return {"connected": self.connected, "mode": self.conn.mode, "connects": self.connects,
                "lost": self.lost, "unresolved": dict(self.unresolved), "buffered": len(self._buffer),
                "overflows": self.overflows}


_HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
#: DataType node ids (namespace 0) of the built-in types and common subtypes -> canonical type
_DATA_TYPES = {int(v): k for k, v in VARIANTS.items()} | {
    ua.ObjectIds.Duration: "float64", ua.ObjectIds.Counter: "uint32", ua.ObjectIds.IntegerId: "uint32"}


async def discover(conn: OpcUaConnection, root: str, *, timeout_ms: int = 5000, max_depth: int = 10,
                   max_tags: int = 10_000) -> list[dict[str, Any]]:
    """Browse the subtree under ``root`` (a node id or browse path) and return one tag mapping per
    scalar variable of a supported type, ready for ``[[devices.tags]]``::

        {"name": "Line1.Speed", "node": "nsu=urn:acme:plant;s=Plant.Line1.Speed", "type": "float64"}

    Names are the browse names below ``root`` joined by dots; nodes are written with their namespace
    URI so they survive a server that re-numbers its namespaces. Properties (HasProperty) are skipped.
    Raises :class:`PermanentError` when ``root`` does not resolve, ``TemporaryError`` when the server
    cannot be reached.
    """
    timeout = timeout_ms / 1000
    client = await open_client(conn, timeout)
    try:
        namespaces: list[str] = await bounded("read NamespaceArray", client.get_namespace_array(), timeout)
        [start] = await resolve(client, [parse_node(root, "root")], timeout)
        if isinstance(start, str):
            raise PermanentError(start)
        found: list[tuple[str, ua.NodeId]] = []
        level: list[tuple[str, ua.NodeId]] = [("", start)]
        seen = {start}
        for _ in range(max_depth):
            if not level or len(found) >= max_tags:
                break
            results = await bounded("browse", client.browse_nodes([client.get_node(n) for _, n in level]), timeout)
            nxt: list[tuple[str, ua.NodeId]] = []
            for (prefix, _), (_, res) in zip(level, results, strict=True):
                for ref in res.References:
                    nid = ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType)
                    if not ref.IsForward or ref.ReferenceTypeId == _HAS_PROPERTY or nid in seen:
                        continue
                    seen.add(nid)
                    name = f"{prefix}.{ref.BrowseName.Name}" if prefix else ref.BrowseName.Name
                    if ref.NodeClass == ua.NodeClass.Variable:
                        found.append((name, nid))
                    if ref.NodeClass in (ua.NodeClass.Object, ua.NodeClass.Variable):
                        nxt.append((name, nid))
            level = nxt
        return await _describe(client, found[:max_tags], namespaces, timeout) if found else []
    finally:
        await shutdown(client, timeout)


async def _describe(client: Client, found: list[tuple[str, ua.NodeId]], namespaces: list[str],
                    timeout: float) -> list[dict[str, Any]]:
    """Tag mappings for the variables whose DataType and ValueRank (scalar) we support."""
    nodes = [client.get_node(n) for _, n in found]
    dtypes = await bounded("read DataType", client.read_attributes(nodes, ua.AttributeIds.DataType), timeout)
    ranks = await bounded("read ValueRank", client.read_attributes(nodes, ua.AttributeIds.ValueRank), timeout)
    tags = []
    for (name, nid), dt, rank in zip(found, dtypes, ranks, strict=True):
        dt_id = dt.Value.Value if dt.Value is not None else None
        dtype = _DATA_TYPES.get(dt_id.Identifier) if isinstance(dt_id, ua.NodeId) and \
            dt_id.NamespaceIndex == 0 else None
        if dtype is None or (rank.Value is not None and rank.Value.Value not in (-1, None)):
            log.info("discover: skipping %s (%s): unsupported data type or not a scalar", name, nid.to_string())
            continue
        text = nid.to_string()
        if nid.NamespaceIndex:
            text = f"nsu={namespaces[nid.NamespaceIndex]};" + text.split(";", 1)[1]
        tags.append({"name": re.sub(r"[/+#]", "_", name).lstrip("$"), "node": text, "type": dtype})
    return tags
