"""The Sparkplug B edge node of a gateway, as a state machine without I/O (Sparkplug 3.0).

:class:`EdgeNode` turns what happens to the gateway (a new MQTT session, the primary host's STATE, devices
assigned and removed, points read, NCMD/DCMD received) into the messages to publish (:class:`Out`) and the
writes to do (:class:`WriteRequest`); the gateway's Sparkplug task (``gateway/sparkplug/session.py``) does
the MQTT side. The rules it keeps (docs/sparkplug.md lists each with the specification's section):

- **bdSeq**: one number per MQTT session, 0..255 wrapping, kept on disk (:class:`BdSeqStore`) so it never
  repeats after a restart; :meth:`EdgeNode.new_session` takes the next one and gives the NDEATH to register
  as the will (QoS 1, not retained, the bdSeq metric alone, by name); the NBIRTH carries the same number. A
  rebirth never changes it.
- **seq**: 0..255 wrapping on every NBIRTH, DBIRTH, NDATA, DDATA and DDEATH of the session; NBIRTH is 0.
- **aliases**: unique across the node and its devices, declared in the births with names and datatypes;
  DATA carries the alias alone (no name, no datatype); NDEATH never uses one.
- **births**: NBIRTH (bdSeq, ``Node Control/Rebirth``) then one DBIRTH per device with every metric's
  current value (or null), datatype, unit and quality; an NCMD rebirth sends them all again (new seq from
  0, same bdSeq); a device whose tags change is born again (DDEATH, DBIRTH).
- **primary host**: with ``primary_host_id`` set, nothing is born before the host's STATE says online
  with a timestamp newer than any seen; an offline STATE newer than the online one makes the session end
  (NDEATH sent, disconnect, reconnect: :attr:`Out.disconnect`). Points read while not born are kept
  (bounded) and sent after the births with ``is_historical``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proto.points import Point, Status, Value
from proto.sparkplug import (
    BDSEQ,
    REBIRTH,
    DataType,
    Metric,
    Payload,
    SparkplugError,
    bdseq_metric,
    decode_payload,
    encode_payload,
    ndeath_payload,
)
from proto.sparkplug.mapping import datatype_for, point_to_metric
from proto.sparkplug.topics import MessageType, build_topic, decode_state

log = logging.getLogger("gateway.sparkplug")

#: points kept per device while not born (host offline, before the first birth): beyond, the oldest go
MAX_HELD_POINTS = 100_000


@dataclass(frozen=True)
class Out:
    """One message to publish. ``disconnect``: after publishing, end the MQTT session (and start a new one)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    disconnect: bool = False
    points: int = 0  #: metrics of a DDATA (for the counts)


@dataclass(frozen=True)
class TagDef:
    """A device tag as a metric: its name, canonical type (proto.types) and unit."""

    name: str
    type: str
    unit: str | None = None
    writable: bool = False


@dataclass(frozen=True)
class WriteRequest:
    """A DCMD metric for the gateway's write path (validation, the normalizer's inverse, the driver)."""

    device: str
    tag: str
    value: Value


class BdSeqStore:
    """The last bdSeq used, in a small file written atomically (a restart continues from it)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def next(self) -> int:
        last = -1
        if self.path is not None:
            with contextlib.suppress(OSError, ValueError):
                last = int(self.path.read_text().strip())
        value = (last + 1) % 256 if 0 <= last <= 255 else 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        return value


@dataclass
class _Device:
    tags: dict[str, TagDef]
    aliases: dict[str, int]  #: tag -> alias
    last: dict[str, Point] = field(default_factory=dict)  #: tag -> newest point (the birth's values)
    born: bool = False
    held: deque[Point] = field(default_factory=lambda: deque(maxlen=MAX_HELD_POINTS))


class EdgeNode:
    def __init__(self, group_id: str, edge_node_id: str, *, primary_host_id: str | None = None,
                 bdseq: BdSeqStore | None = None, data_qos: int = 0, max_held: int = MAX_HELD_POINTS) -> None:
        build_topic(group_id, MessageType.NBIRTH, edge_node_id)  # validates both ids
        self.group_id, self.edge_node_id = group_id, edge_node_id
        self.primary_host_id = primary_host_id or None
        self.store = bdseq or BdSeqStore(None)
        self.data_qos = data_qos
        self.max_held = max_held  #: points kept per device while not born
        self.bd_seq = -1  #: of the current session; -1 before the first
        self.seq = -1  #: of the last message sent; the next is (seq + 1) % 256
        self.born = False  #: NBIRTH sent in this session
        self.connected = False
        self.host_online = self.primary_host_id is None
        self.host_ts = -1  #: newest STATE timestamp seen
        self.devices: dict[str, _Device] = {}
        self._next_alias = 1  # 0 stays free: some hosts read it as "no alias"
        self.dropped_held = 0  #: points not kept while unborn (MAX_HELD_POINTS reached)

    # -- topics ------------------------------------------------------------------------------------------
    def topic(self, kind: MessageType, device: str | None = None) -> str:
        return build_topic(self.group_id, kind, self.edge_node_id, device)

    def command_filters(self) -> list[str]:
        """What to subscribe to: NCMD, every DCMD of this node, and the primary host's STATE."""
        out = [self.topic(MessageType.NCMD), f"spBv1.0/{self.group_id}/DCMD/{self.edge_node_id}/+"]
        if self.primary_host_id:
            out.append(f"spBv1.0/STATE/{self.primary_host_id}")
        return out

    # -- the session -------------------------------------------------------------------------------------
    def new_session(self) -> Out:
        """Before connecting: the next bdSeq, and the NDEATH to register as the will."""
        self.bd_seq = self.store.next()
        self.connected = self.born = False
        self.host_online = self.primary_host_id is None
        for d in self.devices.values():
            d.born = False
        return Out(self.topic(MessageType.NDEATH), ndeath_payload(self.bd_seq), qos=1)

    def on_connected(self) -> list[Out]:
        """Connected (and subscribed): the births, unless a primary host must say online first."""
        self.connected = True
        return self._births() if self.host_online else []

    def on_disconnected(self) -> None:
        self.connected = self.born = False
        for d in self.devices.values():
            d.born = False

    def shutdown(self) -> list[Out]:
        """A clean stop: the NDEATH ourselves (the broker does not send a will on a normal DISCONNECT)."""
        if not self.connected:
            return []
        self.born = False
        return [Out(self.topic(MessageType.NDEATH), ndeath_payload(self.bd_seq), qos=1)]

    # -- devices -----------------------------------------------------------------------------------------
    def set_device(self, device: str, tags: Sequence[TagDef]) -> list[Out]:
        """A device assigned, or its tags changed: (re)born with its metrics."""
        build_topic(self.group_id, MessageType.DBIRTH, self.edge_node_id, device)
        old = self.devices.get(device)
        defs = {t.name: t for t in tags}
        for t in tags:
            datatype_for(t.type)  # an unknown type is refused now, not at the birth
        out: list[Out] = []
        if old is not None and old.tags == defs:
            return out
        if old is not None and old.born:
            out.append(self._death(device))
        aliases = {name: (old.aliases[name] if old and name in old.aliases else self._alias()) for name in defs}
        dev = _Device(defs, aliases, last={k: v for k, v in (old.last if old else {}).items() if k in defs},
                      held=old.held if old is not None else deque(maxlen=self.max_held))
        self.devices[device] = dev
        if self.born:
            out += self._device_birth(device)
        return out

    def remove_device(self, device: str) -> list[Out]:
        dev = self.devices.get(device)
        out = [self._death(device)] if dev is not None and dev.born else []
        self.devices.pop(device, None)
        return out

    def device_down(self, device: str) -> list[Out]:
        """The device stopped answering (its tags BAD): DDEATH; the next good read is born again."""
        dev = self.devices.get(device)
        if dev is None or not dev.born:
            return []
        return [self._death(device)]

    # -- data --------------------------------------------------------------------------------------------
    def data(self, device: str, points: Iterable[Point]) -> list[Out]:
        """DDATA for the points of ``device`` (alias only); kept for later while not born."""
        dev = self.devices.get(device)
        if dev is None:
            return []
        pts = [p for p in points if p.tag in dev.tags]
        for p in pts:
            dev.last[p.tag] = p
        if not self.born:
            if len(dev.held) + len(pts) > self.max_held:
                self.dropped_held += len(dev.held) + len(pts) - self.max_held
            dev.held.extend(pts)
            return []
        if not dev.born:  # down: born again by its first reading that is not BAD (older ones follow as history)
            if not any(p.status < Status.BAD for p in pts):
                return []
            dev.held.extend(pts)
            return self._device_birth(device)
        return [self._ddata(device, dev, pts, historical=False)] if pts else []

    def current(self, device: str, tag: str) -> Point | None:
        """The newest point of ``device``'s ``tag`` (what its birth would say), None for an unknown one."""
        dev = self.devices.get(device)
        if dev is None or tag not in dev.tags:
            return None
        return dev.last.get(tag) or _unread(tag, dev.tags[tag].unit, _now_ms())

    def _ddata(self, device: str, dev: _Device, points: Sequence[Point], *, historical: bool) -> Out:
        metrics = [point_to_metric(p, datatype_for(dev.tags[p.tag].type), alias=dev.aliases[p.tag],
                                   with_unit=False, historical=historical) for p in points]
        payload = Payload(timestamp=_now_ms(), seq=self._next_seq(), metrics=metrics)
        return Out(self.topic(MessageType.DDATA, device), encode_payload(payload, with_datatypes=False),
                   qos=self.data_qos, points=len(points))

    # -- commands and host state -------------------------------------------------------------------------
    def on_message(self, topic: str, payload: bytes) -> tuple[list[Out], list[WriteRequest]]:
        """An NCMD, a DCMD or the primary host's STATE; a message we cannot read is logged and dropped."""
        try:
            if topic.startswith("spBv1.0/STATE/"):
                return self._on_state(payload), []
            if topic == self.topic(MessageType.NCMD):
                return self._on_ncmd(payload), []
            device = topic.rsplit("/", 1)[-1]
            return [], self._on_dcmd(device, payload)
        except SparkplugError as exc:
            log.warning("sparkplug: message on %s ignored: %s", topic[:200], exc)
            return [], []

    def _on_state(self, payload: bytes) -> list[Out]:
        state = decode_state(payload)
        ts = state.timestamp if state.timestamp is not None else self.host_ts + 1  # 2.x: no timestamp
        if ts < self.host_ts:  # the same one again is the retained STATE of a new session: read
            log.info("sparkplug: STATE of %s older than one seen (%s < %s): ignored", self.primary_host_id, ts,
                     self.host_ts)
            return []
        self.host_ts = ts
        was, self.host_online = self.host_online, state.online
        if state.online and not was and self.connected:
            log.info("sparkplug: primary host %s online: births", self.primary_host_id)
            return self._births()
        if not state.online and was and self.born:
            log.info("sparkplug: primary host %s offline: NDEATH, new session", self.primary_host_id)
            self.born = False
            return [Out(self.topic(MessageType.NDEATH), ndeath_payload(self.bd_seq), qos=1, disconnect=True)]
        return []

    def _on_ncmd(self, payload: bytes) -> list[Out]:
        decoded = decode_payload(payload, declared={REBIRTH: DataType.BOOLEAN})
        if any(m.name == REBIRTH and m.value is True for m in decoded.metrics) and self.connected \
                and self.host_online:
            log.info("sparkplug: rebirth asked: NBIRTH and %d DBIRTH again", len(self.devices))
            return self._births()
        return []

    def _on_dcmd(self, device: str, payload: bytes) -> list[WriteRequest]:
        dev = self.devices.get(device)
        if dev is None:
            raise SparkplugError(f"DCMD for unknown device {device!r}")
        by_alias = {a: t for t, a in dev.aliases.items()}
        declared: dict[int | str, DataType] = {}
        for t, a in dev.aliases.items():
            declared[a] = declared[t] = datatype_for(dev.tags[t].type)
        out = []
        for m in decode_payload(payload, declared=declared).metrics:
            tag = m.name if m.name in dev.tags else by_alias.get(m.alias) if m.alias is not None else None
            if tag is None:
                log.warning("sparkplug: DCMD for %s names unknown metric %s / alias %s: ignored", device, m.name,
                            m.alias)
                continue
            out.append(WriteRequest(device, tag, m.value))  # type: ignore[arg-type]
        return out

    # -- births and deaths -------------------------------------------------------------------------------
    def _births(self) -> list[Out]:
        self.seq = -1
        metrics = [bdseq_metric(self.bd_seq), Metric(REBIRTH, DataType.BOOLEAN, False)]
        payload = Payload(timestamp=_now_ms(), seq=self._next_seq(), metrics=metrics)
        out = [Out(self.topic(MessageType.NBIRTH), encode_payload(payload))]
        self.born = True
        for device in self.devices:
            out += self._device_birth(device)
        return out

    def _device_birth(self, device: str) -> list[Out]:
        dev = self.devices[device]
        now = _now_ms()
        metrics = []
        for name, t in dev.tags.items():
            p = dev.last.get(name) or _unread(name, t.unit, now)
            if p.unit is None and t.unit:
                p = p._replace(unit=t.unit)
            metrics.append(point_to_metric(p, datatype_for(t.type), name=name, alias=dev.aliases[name]))
        payload = Payload(timestamp=now, seq=self._next_seq(), metrics=metrics)
        dev.born = True
        out = [Out(self.topic(MessageType.DBIRTH, device), encode_payload(payload))]
        if dev.held:  # read while not born: sent now, as history, but for the newest of each tag (in the birth)
            held = [p for p in dev.held if p is not dev.last.get(p.tag)]
            dev.held.clear()
            for i in range(0, len(held), 500):
                out.append(self._ddata(device, dev, held[i:i + 500], historical=True))
        return out

    def _death(self, device: str) -> Out:
        self.devices[device].born = False
        payload = Payload(timestamp=_now_ms(), seq=self._next_seq())
        return Out(self.topic(MessageType.DDEATH, device), encode_payload(payload))

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def _alias(self) -> int:
        a = self._next_alias
        self._next_alias += 1
        return a


def _unread(tag: str, unit: str | None, ts: int) -> Point:
    """What a birth says of a tag with no reading yet: no value, BAD, and why."""
    return Point(tag, None, ts, Status.BAD, unit, "no value read yet")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


__all__ = ["BDSEQ", "BdSeqStore", "EdgeNode", "Out", "TagDef", "WriteRequest"]
