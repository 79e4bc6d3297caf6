"""The Sparkplug B host application of ingestion, as a state machine without I/O (Sparkplug 3.0).

:class:`Host` reads every ``spBv1.0/...`` message of the edge nodes and answers what to store (points on
UNS device paths, :class:`HostResult.points`), what to publish (rebirth requests, :class:`HostResult.commands`)
and what could not be read (:attr:`HostResult.error`: the message goes to the dead letters). Per edge node it
keeps the births' alias table and datatypes, the bdSeq and the last seq:

- **births**: NBIRTH resets the node (its devices must be born again); DBIRTH declares a device's metrics;
  the birth values are stored like data, except one no newer than a value this host already stored for that
  metric (a rebirth repeats the current values);
- **never guess**: DATA of a node or device not born, a metric alias no birth declared, or a seq that is
  not the previous + 1 (mod 256) ask for a rebirth (NCMD ``Node Control/Rebirth`` = true, at most once per
  :data:`REBIRTH_EVERY_MS` per node); DATA that cannot be read is a dead letter, readable DATA after a seq
  gap is stored (its values are right; what was lost in the gap is not guessed);
- **deaths**: an NDEATH whose bdSeq is the NBIRTH's (an older one is a stale will: ignored) and a DDEATH
  store one BAD point per metric of the node / device at the death's time (reason "edge node offline" /
  "device offline"): the historian shows the tags stale from then on;
- **UNS paths**: group / edge node / device / metric are mapped to enterprise / site / area / line / device /
  tag by :class:`PathMap` (documented in docs/sparkplug.md); a metric name's ``/`` folders become ``.``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from proto.errors import ContractError
from proto.points import Point, Status
from proto.sparkplug import (
    BDSEQ,
    REBIRTH,
    DataType,
    Metric,
    Payload,
    SparkplugError,
    UnknownMetricError,
    decode_payload,
    encode_payload,
)
from proto.sparkplug.mapping import metric_to_point
from proto.sparkplug.topics import HostTopic, MessageType, Topic, build_topic, parse_topic
from proto.uns import DevicePath, validate_level

log = logging.getLogger("ingestion.sparkplug")

REBIRTH_EVERY_MS = 5_000  #: a node is asked for a rebirth at most this often
NODE_CONTROL = "Node Control/"  #: metrics of the node's own control (not plant values): not stored


@dataclass(frozen=True, kw_only=True)
class PathMap:
    """Where a Sparkplug metric lands in the UNS: each level a template of ``{group}``, ``{node}`` and
    ``{device}`` (the node's own metrics have ``node_device`` as their device)."""

    enterprise: str = "{group}"
    site: str = "{node}"
    area: str = "sparkplug"
    line: str = "{node}"
    device: str = "{device}"
    node_device: str = "node"

    def device_path(self, group: str, node: str, device: str | None) -> DevicePath:
        names = {"group": group, "node": node, "device": device if device is not None else self.node_device}
        return DevicePath(*(validate_level(t.format(**names), what=level) for t, level in (
            (self.enterprise, "enterprise"), (self.site, "site"), (self.area, "area"), (self.line, "line"),
            (self.device, "device"))))

    @staticmethod
    def tag(metric_name: str) -> str:
        return validate_level(metric_name.replace("/", "."), what="tag")


@dataclass(frozen=True)
class Command:
    topic: str
    payload: bytes


@dataclass
class HostResult:
    points: list[tuple[DevicePath, list[Point]]] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    error: str | None = None  #: the message could not be read: a dead letter with this reason
    rebirths: int = 0


@dataclass
class _Declared:
    name: str
    datatype: DataType
    unit: str | None


@dataclass
class _Node:
    bd_seq: int | None = None
    seq: int | None = None  #: of the last message
    born: bool = False
    metrics: dict[str | None, dict[str, _Declared]] = field(default_factory=dict)  #: device (None: node) -> name
    aliases: dict[int, tuple[str | None, str]] = field(default_factory=dict)  #: alias -> (device, name)
    asked_at: int = -REBIRTH_EVERY_MS  #: when a rebirth was last asked (ms)
    #: (device, metric name) -> the newest timestamp stored; kept across births, so that a birth repeating a
    #: value already stored (a rebirth's current values) does not store it twice
    newest: dict[tuple[str | None, str], int] = field(default_factory=dict)


class Host:
    def __init__(self, host_id: str, paths: PathMap | None = None) -> None:
        self.host_id = host_id
        self.paths = paths or PathMap()
        self.nodes: dict[tuple[str, str], _Node] = {}

    def on_message(self, topic: str, payload: bytes, *, now_ms: int | None = None) -> HostResult:
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        res = HostResult()
        try:
            t = parse_topic(topic)
            if isinstance(t, HostTopic) or t.message_type in (MessageType.NCMD, MessageType.DCMD):
                return res  # STATE of hosts, commands to nodes: not ours to store
            node = self.nodes.setdefault((t.group_id, t.edge_node_id), _Node())
            self._handle(t, node, payload, now, res)
        except ContractError as exc:
            res.error = f"{type(exc).__name__}: {exc}"
        return res

    # -- per message type --------------------------------------------------------------------------------
    def _handle(self, t: Topic, node: _Node, payload: bytes, now: int, res: HostResult) -> None:
        kind = t.message_type
        if kind == MessageType.NBIRTH:
            p = decode_payload(payload)
            node.bd_seq = next((m.value for m in p.metrics if m.name == BDSEQ), None)  # type: ignore[assignment]
            node.metrics, node.aliases, node.born, node.seq = {}, {}, True, p.seq
            self._declare(node, None, p.metrics)
            self._store(t, None, node, p, p.metrics, res, birth=True)
            return
        if kind == MessageType.NDEATH:
            p = decode_payload(payload)
            bd = next((m.value for m in p.metrics if m.name == BDSEQ), None)
            if node.bd_seq is not None and bd is not None and bd != node.bd_seq:
                log.info("sparkplug: NDEATH of %s/%s with bdSeq %s, not the birth's %s: a stale will, ignored",
                         t.group_id, t.edge_node_id, bd, node.bd_seq)
                return
            # at its arrival: a will's own timestamp is that of the CONNECT that registered it (Sparkplug 3.0,
            # 5.x "Edge Node Session Establishment": not useful to a host)
            for device in list(node.metrics):
                self._dead(t, device, node, now, "edge node offline", res)
            node.born = False
            return
        if not node.born:
            self._rebirth(t, node, now, res, "no NBIRTH seen")
            if kind in (MessageType.NDATA, MessageType.DDATA):
                res.error = f"SparkplugError: {kind} of {t.edge_node_id} before its NBIRTH: rebirth asked"
            return
        try:
            p = decode_payload(payload, declared=self._types(node, t.device_id)) if kind != MessageType.DBIRTH \
                else decode_payload(payload)
        except UnknownMetricError as exc:  # a birth we did not see (lost, or metrics added since): never guess
            self._rebirth(t, node, now, res, str(exc))
            raise
        if p.seq is not None and node.seq is not None and p.seq != (node.seq + 1) % 256:
            self._rebirth(t, node, now, res, f"seq {p.seq} after {node.seq}")
        node.seq = p.seq if p.seq is not None else node.seq
        if kind == MessageType.DBIRTH:
            self._declare(node, t.device_id, p.metrics)
            self._store(t, t.device_id, node, p, p.metrics, res, birth=True)
        elif kind == MessageType.DDEATH:
            self._dead(t, t.device_id, node, p.timestamp or now, "device offline", res)
        elif kind == MessageType.DDATA and t.device_id not in node.metrics:
            self._rebirth(t, node, now, res, f"DDATA of device {t.device_id} before its DBIRTH")
            res.error = f"SparkplugError: DDATA of {t.device_id} before its DBIRTH: rebirth asked"
        else:  # NDATA, DDATA
            self._store(t, t.device_id, node, p, p.metrics, res)

    def _types(self, node: _Node, device: str | None) -> dict[int | str, DataType]:
        out: dict[int | str, DataType] = {}
        for alias, (dev, name) in node.aliases.items():
            if dev == device:
                out[alias] = node.metrics[dev][name].datatype
        for name, d in node.metrics.get(device, {}).items():
            out[name] = d.datatype
        return out

    def _declare(self, node: _Node, device: str | None, metrics: Sequence[Metric]) -> None:
        declared = node.metrics[device] = {}
        for m in metrics:
            if m.name is None:
                raise SparkplugError("a birth metric without a name")
            unit = m.properties.get("engUnit")
            declared[m.name] = _Declared(m.name, m.datatype, unit.value if unit and isinstance(unit.value, str)
                                         else None)
            if m.alias is not None:
                node.aliases[m.alias] = (device, m.name)

    def _store(self, t: Topic, device: str | None, node: _Node, p: Payload, metrics: Sequence[Metric],
               res: HostResult, *, birth: bool = False) -> None:
        """The metrics' points; a birth's value no newer than one this host stored for the metric is left out
        (the birth repeats the current value, which a DATA message or an earlier birth brought)."""
        path = self.paths.device_path(t.group_id, t.edge_node_id, device)
        points = []
        newest = node.newest
        for m in metrics:
            name = m.name
            if name is None and m.alias is not None:
                name = node.aliases.get(m.alias, (None, None))[1]
            if name is None or name == BDSEQ or name.startswith(NODE_CONTROL):
                continue
            declared = node.metrics.get(device, {}).get(name)
            try:
                point = metric_to_point(m, tag=self.paths.tag(name), timestamp=p.timestamp,
                                        unit=declared.unit if declared else None)
            except ContractError as exc:  # one metric without a point form: said, the others stored
                log.warning("sparkplug: metric %r of %s not stored: %s", name[:100], path.path, exc)
                continue
            key = (device, name)
            seen = newest.get(key)
            if birth and seen is not None and point.ts <= seen:
                continue
            if seen is None or point.ts > seen:
                newest[key] = point.ts
            points.append(point)
        if points:
            res.points.append((path, points))

    def _dead(self, t: Topic, device: str | None, node: _Node, ts: int, reason: str, res: HostResult) -> None:
        declared = node.metrics.get(device, {})
        path = self.paths.device_path(t.group_id, t.edge_node_id, device)
        points = [Point(self.paths.tag(name), None, ts, Status.BAD_NOT_CONNECTED, d.unit, reason)
                  for name, d in declared.items() if name != BDSEQ and not name.startswith(NODE_CONTROL)]
        if points:
            res.points.append((path, points))

    def _rebirth(self, t: Topic, node: _Node, now: int, res: HostResult, why: str) -> None:
        if now - node.asked_at < REBIRTH_EVERY_MS:
            return
        node.asked_at = now
        log.warning("sparkplug: %s/%s: %s; rebirth asked", t.group_id, t.edge_node_id, why)
        payload = encode_payload(Payload(timestamp=now, metrics=[Metric(REBIRTH, DataType.BOOLEAN, True)]))
        res.commands.append(Command(build_topic(t.group_id, MessageType.NCMD, t.edge_node_id), payload))
        res.rebirths += 1
