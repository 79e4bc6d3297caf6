"""Sparkplug B topics and the primary host's STATE messages.

Edge node and device messages::

    spBv1.0/<group_id>/<NBIRTH|NDATA|NDEATH|NCMD>/<edge_node_id>
    spBv1.0/<group_id>/<DBIRTH|DDATA|DDEATH|DCMD>/<edge_node_id>/<device_id>

The host application's state (Sparkplug 3.0), retained, QoS 1::

    spBv1.0/STATE/<host_id>    {"online": true, "timestamp": 1732370000123}

Sparkplug 2.x hosts published ``STATE/<host_id>`` with the plain text ``ONLINE`` or ``OFFLINE``;
:func:`parse_topic` and :func:`decode_state` recognise that and say so (``legacy``), so an edge node
can tell an old host from a broken message.

Every id is a non-empty UTF-8 string without ``+``, ``/`` or ``#`` (the specification's rule),
without NUL or control characters, of at most :data:`MAX_ID_BYTES` bytes.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

import orjson

from proto.errors import TopicError
from proto.points import MAX_TS_MS
from proto.sparkplug.errors import SparkplugError
from proto.sparkplug.values import describe

NAMESPACE = "spBv1.0"
#: the first level of a Sparkplug 2.x host's STATE topic (outside the namespace)
LEGACY_STATE = "STATE"
#: longest group, edge node, device or host id (bytes of UTF-8)
MAX_ID_BYTES = 256
#: a STATE message is tiny; a larger one is not a STATE message
MAX_STATE_BYTES = 1024
#: how a host publishes its STATE: retained, QoS 1 (its will the same, with ``online`` false)
STATE_QOS = 1
STATE_RETAIN = True


class MessageType(enum.StrEnum):
    """The message type level of an edge node or device topic."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"

    @property
    def is_device(self) -> bool:
        """True for the device messages (their topic ends with a device id)."""
        return self.value[0] == "D"


_TYPES = {t.value: t for t in MessageType}
#: NUL, C0 and C1 control characters, lone surrogates (not UTF-8)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class Topic(NamedTuple):
    """An edge node's (``device_id`` None) or a device's message topic."""

    group_id: str
    message_type: MessageType
    edge_node_id: str
    device_id: str | None = None

    @property
    def topic(self) -> str:
        return build_topic(self.group_id, self.message_type, self.edge_node_id, self.device_id)


class HostTopic(NamedTuple):
    """A host application's STATE topic; ``legacy``: the 2.x form ``STATE/<host_id>``."""

    host_id: str
    legacy: bool = False

    @property
    def topic(self) -> str:
        return legacy_state_topic(self.host_id) if self.legacy else state_topic(self.host_id)


def validate_id(value: str, *, what: str = "id") -> str:
    """``value`` if it can be a group, edge node, device or host id, else :class:`TopicError`."""
    if type(value) is not str:
        raise TopicError(f"{what} must be a string, got {describe(value)}", topic=describe(value))
    if value == "":
        raise TopicError(f"{what} is empty", topic=value)
    shown = describe(value)
    for bad, name in (("+", "'+' (MQTT wildcard)"), ("#", "'#' (MQTT wildcard)"), ("/", "'/' (level separator)")):
        if bad in value:
            raise TopicError(f"{what} {shown} contains {name}", topic=value[:MAX_ID_BYTES])
    if _CONTROL.search(value):
        raise TopicError(f"{what} {shown} contains a control character or a lone surrogate (not UTF-8)",
                         topic=value[:MAX_ID_BYTES])
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        raise TopicError(f"{what} {shown} is longer than {MAX_ID_BYTES} bytes", topic=value[:MAX_ID_BYTES])
    return value


def build_topic(group_id: str, message_type: MessageType | str, edge_node_id: str,
                device_id: str | None = None) -> str:
    """The topic of an edge node message (``device_id`` None) or a device message."""
    mtype = _TYPES.get(message_type)
    if mtype is None:
        raise TopicError(f"{describe(message_type)} is not a Sparkplug message type", topic=describe(message_type))
    validate_id(group_id, what="group_id")
    validate_id(edge_node_id, what="edge_node_id")
    if mtype.is_device:
        if device_id is None:
            raise TopicError(f"{mtype} topics need a device_id", topic=f"{group_id}/{mtype}/{edge_node_id}")
        return f"{NAMESPACE}/{group_id}/{mtype}/{edge_node_id}/{validate_id(device_id, what='device_id')}"
    if device_id is not None:
        raise TopicError(f"{mtype} topics have no device_id", topic=f"{group_id}/{mtype}/{edge_node_id}")
    return f"{NAMESPACE}/{group_id}/{mtype}/{edge_node_id}"


def state_topic(host_id: str) -> str:
    """``spBv1.0/STATE/<host_id>``: where a 3.0 host publishes its STATE."""
    return f"{NAMESPACE}/STATE/{validate_id(host_id, what='host_id')}"


def legacy_state_topic(host_id: str) -> str:
    """``STATE/<host_id>``: where a Sparkplug 2.x host published ONLINE / OFFLINE."""
    return f"{LEGACY_STATE}/{validate_id(host_id, what='host_id')}"


def node_filter(group_id: str | None = None) -> str:
    """The subscription for every edge node message (of one group, or of all)."""
    return f"{NAMESPACE}/{validate_id(group_id, what='group_id')}/#" if group_id is not None else f"{NAMESPACE}/#"


def parse_topic(topic: str) -> Topic | HostTopic:
    """The parts of a Sparkplug topic; :class:`TopicError` names what is wrong."""
    if type(topic) is not str:
        raise TopicError(f"a topic must be a string, got {describe(topic)}", topic=describe(topic))
    if len(topic) > 4 * MAX_ID_BYTES + 32:
        raise TopicError(f"topic {describe(topic)} is too long for a Sparkplug topic", topic=topic[:200])
    levels = topic.split("/")
    if levels[0] == LEGACY_STATE and len(levels) == 2:
        return HostTopic(validate_id(levels[1], what="host_id"), legacy=True)
    if levels[0] != NAMESPACE:
        raise TopicError(f"topic {describe(topic)} is not in the {NAMESPACE} namespace", topic=topic)
    if len(levels) == 3 and levels[1] == "STATE":
        return HostTopic(validate_id(levels[2], what="host_id"))
    if len(levels) not in (4, 5):
        raise TopicError(f"topic {describe(topic)} has {len(levels)} levels; Sparkplug topics have 4 or 5",
                         topic=topic)
    mtype = _TYPES.get(levels[2])
    if mtype is None:
        raise TopicError(f"topic {describe(topic)}: {describe(levels[2])} is not a Sparkplug message type",
                         topic=topic)
    if mtype.is_device != (len(levels) == 5):
        need = "end with a device_id" if mtype.is_device else "have no device_id"
        raise TopicError(f"topic {describe(topic)}: {mtype} topics {need}", topic=topic)
    group_id = validate_id(levels[1], what="group_id")
    edge_node_id = validate_id(levels[3], what="edge_node_id")
    device_id = validate_id(levels[4], what="device_id") if mtype.is_device else None
    return Topic(group_id, mtype, edge_node_id, device_id)


class HostState(NamedTuple):
    """A host application's state. ``timestamp``: Unix ms the host set it at (None from a 2.x host,
    whose text carries none); ``legacy``: sent as 2.x plain text."""

    online: bool
    timestamp: int | None
    legacy: bool = False


def encode_state(online: bool, timestamp: int) -> bytes:
    """A 3.0 STATE payload: ``{"online": <bool>, "timestamp": <Unix ms>}``."""
    if type(online) is not bool:
        raise SparkplugError(f"online must be a bool, got {describe(online)}")
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_TS_MS:
        raise SparkplugError(f"timestamp must be Unix milliseconds, got {describe(timestamp)}")
    return orjson.dumps({"online": online, "timestamp": timestamp})


def decode_state(payload: bytes) -> HostState:
    """A STATE payload: 3.0 JSON, or the 2.x text ``ONLINE`` / ``OFFLINE`` (``legacy`` True)."""
    if len(payload) > MAX_STATE_BYTES:
        raise SparkplugError(f"a STATE payload of {len(payload)} bytes is larger than {MAX_STATE_BYTES}")
    text = bytes(payload).strip()
    if text in (b"ONLINE", b"OFFLINE"):
        return HostState(text == b"ONLINE", None, legacy=True)
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise SparkplugError(f"a STATE payload must be JSON or ONLINE/OFFLINE, got {describe(text)}") from None
    if type(doc) is not dict:
        raise SparkplugError(f"a STATE payload must be a JSON object, got {type(doc).__name__}")
    online, timestamp = doc.get("online"), doc.get("timestamp")
    if type(online) is not bool:
        raise SparkplugError(f"STATE 'online' must be true or false, got {describe(online)}")
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_TS_MS:
        raise SparkplugError(f"STATE 'timestamp' must be Unix milliseconds, got {describe(timestamp)}")
    return HostState(online, timestamp)
