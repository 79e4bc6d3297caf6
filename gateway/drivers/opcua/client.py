"""OPC UA sessions: open a client with security and login, bound each service call, close without
raising, and resolve configured node addresses with the server's current namespace indexes.

Shared by the driver (:mod:`gateway.drivers.opcua.driver`) and discovery (:mod:`gateway.drivers.opcua.browse`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua.status_codes import code_to_name_doc

from gateway.drivers.opcua.config import NodeAddress, NodeRef, OpcUaConnection
from gateway.errors import TemporaryError

log = logging.getLogger("gateway.drivers.opcua")
T = TypeVar("T")

#: canonical type -> OPC UA built-in type (also its DataType node id i=1..12)
VARIANTS = {"bool": ua.VariantType.Boolean, "int8": ua.VariantType.SByte, "uint8": ua.VariantType.Byte,
            "int16": ua.VariantType.Int16, "uint16": ua.VariantType.UInt16, "int32": ua.VariantType.Int32,
            "uint32": ua.VariantType.UInt32, "int64": ua.VariantType.Int64, "uint64": ua.VariantType.UInt64,
            "float32": ua.VariantType.Float, "float64": ua.VariantType.Double, "string": ua.VariantType.String,
            "datetime": ua.VariantType.DateTime}
_KINDS = {"i": ua.NodeIdType.Numeric, "s": ua.NodeIdType.String, "g": ua.NodeIdType.Guid,
          "b": ua.NodeIdType.ByteString}


def node_id(identifier: int | str | bytes | UUID, namespace: int = 0, kind: ua.NodeIdType | None = None) -> ua.NodeId:
    """``ua.NodeId`` from plain values. asyncua annotates NodeId's fields with marker classes (``ua.Int16``,
    ``ua.String``, ...) that the plain ints and strings it takes do not match; this is the one place that says so."""
    return ua.NodeId(identifier, namespace, kind)  # type: ignore[arg-type]


def ua_node_id(ref: NodeRef, namespace: int | None = None) -> ua.NodeId:
    """The configured node id as asyncua's, in ``namespace`` (default: the configured index)."""
    return node_id(ref.identifier, ref.namespace if namespace is None else namespace, _KINDS[ref.kind])


class _NoCredentials(logging.Filter):
    """asyncua logs every request at DEBUG, ActivateSession with its user token included."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.args, tuple) and record.args
                    and isinstance(record.args[0], ua.ActivateSessionRequest))


logging.getLogger("asyncua.client.ua_client.UASocketProtocol").addFilter(_NoCredentials())

_LOGIN_REFUSED = {ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenInvalid,
                  ua.StatusCodes.BadIdentityTokenRejected}


def status_name(code: int) -> str:
    """``BadSensorFailure`` for 0x808A0000 (info bits ignored); hex when the code is unknown."""
    known = code_to_name_doc.get(code & 0xFFFF0000)
    return known[0] if known else f"0x{code:08X}"


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
                ns = index(a.namespace_uri) if a.namespace_uri else a.node_id.namespace
                out.append(ua_node_id(a.node_id, ns))
                continue
            # IsInverse, IncludeSubtypes: asyncua annotates them with its ua.Boolean marker class; it takes bool
            elements = [ua.RelativePathElement(ReferenceTypeId=node_id(ua.ObjectIds.HierarchicalReferences),
                                               IsInverse=False, IncludeSubtypes=True,  # type: ignore[arg-type]
                                               TargetName=ua.QualifiedName(name, index(ns)))
                        for ns, name in a.path]
        except LookupError as exc:
            out.append(str(exc))
            continue
        paths[i] = ua.BrowsePath(StartingNode=node_id(ua.ObjectIds.RootFolder),
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
