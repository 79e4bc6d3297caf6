"""OPC UA configuration: connection and security settings, and node addressing of tags.

A tag's ``node`` is a node id (``ns=2;s=Line1.Speed``), a node id by namespace URI
(``nsu=urn:acme:plant;s=Line1.Speed``) or a browse path from the Root folder
(``0:Objects/2:Plant/2:Speed``, namespace URIs allowed: ``urn:acme:plant:Speed`` or
``<http://acme.com/plant/>:Speed``). Parsing here needs no server and imports no OPC UA library
(gateway_core validates configs with it): namespace URIs and browse paths are resolved at every
connect (:func:`gateway.drivers.opcua.client.resolve`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

from gateway.config import choice, get, int_in, parse_type
from gateway.errors import ConfigError
from proto.types import ALL_TYPES

DEVICE_KEYS = frozenset({"endpoint", "mode", "security_policy", "security_mode", "certificate", "private_key",
                         "server_certificate", "username", "password", "publishing_interval_ms",
                         "session_timeout_ms", "buffer_size"})
TAG_KEYS = frozenset({"node", "type", "length", "sampling_interval_ms", "deadband", "deadband_type", "queue_size"})
POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")
_SUBSCRIBE_KEYS = ("sampling_interval_ms", "deadband", "deadband_type", "queue_size")
_NODE_ID = re.compile(r"(ns|nsu|i|s|g|b)=")
#: a node id as text (OPC UA Part 6, 5.3.1.10): an optional namespace, then the identifier's kind and value
_NODE_ID_TEXT = re.compile(r"(?:ns=(\d+);|nsu=([^;]+);)?([isgb])=(.*)", re.S)


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node id as configured: ``kind`` i (numeric), s (string), g (GUID) or b (opaque bytes)."""

    kind: str
    identifier: int | str | UUID | bytes
    namespace: int = 0  #: the namespace index (replaced by the index of namespace_uri at connect)


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
    node_id: NodeRef | None = None  #: a node id (its namespace index is looked up if namespace_uri is set)
    namespace_uri: str | None = None  #: ``nsu=`` node ids: the namespace, looked up at connect
    path: tuple[tuple[int | str, str], ...] = ()  #: browse path from Root: (namespace index or URI, name)
    sampling_interval_ms: float = -1.0  #: -1: the publishing interval
    deadband: float = 0.0  #: subscribe: DataChangeFilter deadband, 0 for none
    deadband_type: str = "absolute"  #: absolute | percent (of the variable's EURange)
    queue_size: int = 10  #: server-side queue per monitored item


def _file(d: dict[str, Any], key: str, where: str) -> str | None:
    path: str | None = get(d, key, str, where, None)
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"'{key}' file not found: {path}", where=where)
    return path


def _certificate_uri(path: str, where: str) -> str | None:
    """The application URI in the certificate's SubjectAltName: the server checks it against ours."""
    from cryptography import x509  # only a device with a certificate needs it

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


def parse_node_id(text: str) -> tuple[NodeRef, str | None]:
    """``ns=2;s=Line1.Speed``, ``i=2261``, ``nsu=urn:x;g=<guid>``, ``ns=1;b=<base64>``: the node and
    its namespace URI (``nsu=``); ValueError saying what is wrong (empty when the text has not that form)."""
    m = _NODE_ID_TEXT.fullmatch(text)
    if m is None:
        raise ValueError("")  # not that form at all: the caller gives an example
    ns_index, uri, kind, raw = m[1], m[2], m[3], m[4]
    namespace = int(ns_index) if ns_index else 0
    if namespace > 65535:
        raise ValueError(f"namespace index {namespace} outside 0..65535")
    identifier: int | str | UUID | bytes
    if kind == "i":
        if not raw.isdigit() or int(raw) > 0xFFFF_FFFF:
            raise ValueError(f"numeric identifier {raw!r} is not an integer in 0..4294967295")
        identifier = int(raw)
    elif kind == "g":
        try:
            identifier = UUID(raw)
        except ValueError as exc:
            raise ValueError(f"GUID identifier {raw!r} is not a GUID") from exc
    elif kind == "b":
        try:
            identifier = base64.b64decode(raw, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"opaque identifier {raw!r} is not base64") from exc
    else:
        if not raw:
            raise ValueError("string identifier is empty")
        identifier = raw
    return NodeRef(kind, identifier, namespace), uri


def parse_node(text: str, where: str) -> NodeAddress:
    """A node id or a browse path (see the module docstring); namespaces are resolved at connect."""
    if not text.strip():
        raise ConfigError("'node' is empty", where=where)
    if _NODE_ID.match(text):
        try:
            ref, uri = parse_node_id(text)
        except ValueError as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise ConfigError(f"'node' {text!r} is not a valid node id{detail}; expected e.g. 'ns=2;s=Line1.Speed', "
                              "'ns=2;i=1001' or 'nsu=urn:acme:plant;s=Line1.Speed'", where=where) from exc
        return NodeAddress(text=text, node_id=ref, namespace_uri=uri)
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
    dtype = parse_type(d, where, allowed=ALL_TYPES)  # DateTime variables too
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
    if deadband and dtype in ("bool", "string", "datetime"):
        raise ConfigError(f"'deadband' needs a numeric tag, not {dtype}", where=where)
    sampling = get(d, "sampling_interval_ms", float, where, -1.0)
    if sampling < 0 and sampling != -1:
        raise ConfigError(f"'sampling_interval_ms' {sampling} must be >= 0 (or -1: the publishing interval)",
                          where=where)
    return replace(address, sampling_interval_ms=sampling, deadband=deadband, deadband_type=deadband_type,
                   queue_size=int_in(d, "queue_size", 0, 65_535, where, 10)), dtype, length


def polls(conn: OpcUaConnection) -> bool:
    """Poll mode reads on a schedule (poll groups allowed); subscriptions sample per tag instead."""
    return conn.mode == "poll"
