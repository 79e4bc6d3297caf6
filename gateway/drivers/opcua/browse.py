"""OPC UA discovery: browse a server's address space for the variables a plant config can read."""

from __future__ import annotations

import logging
import re
from typing import Any

from asyncua import Client, ua

from gateway.drivers.opcua.client import VARIANTS, bounded, node_id, open_client, resolve, shutdown
from gateway.drivers.opcua.config import OpcUaConnection, parse_node
from gateway.errors import PermanentError

log = logging.getLogger("gateway.drivers.opcua.driver")

_HAS_PROPERTY = node_id(ua.ObjectIds.HasProperty)
#: DataType node ids (namespace 0) of the built-in types and common subtypes -> canonical type
_DATA_TYPES = {int(v): k for k, v in VARIANTS.items()} | {
    ua.ObjectIds.Duration: "float64", ua.ObjectIds.Counter: "uint32", ua.ObjectIds.IntegerId: "uint32",
    ua.ObjectIds.UtcTime: "datetime"}


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
        ident = dt_id.Identifier if isinstance(dt_id, ua.NodeId) and dt_id.NamespaceIndex == 0 else None
        dtype = _DATA_TYPES.get(ident) if isinstance(ident, int) else None
        if dtype is None or (rank.Value is not None and rank.Value.Value not in (-1, None)):
            log.info("discover: skipping %s (%s): unsupported data type or not a scalar", name, nid.to_string())
            continue
        text = nid.to_string()
        if nid.NamespaceIndex:
            text = f"nsu={namespaces[nid.NamespaceIndex]};" + text.split(";", 1)[1]
        tags.append({"name": re.sub(r"[/+#]", "_", name).lstrip("$"), "node": text, "type": dtype})
    return tags
