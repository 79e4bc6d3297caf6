"""MQTT source configuration keys: the foreign broker, and per tag its topic filter and payload
mapping (:mod:`gateway.drivers.mqtt.mapping`). Imports no MQTT client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config import choice, get, int_in, parse_type
from gateway.drivers.mqtt.mapping import FORMATS, MqttAddress, parse_path, parse_quality_map
from gateway.errors import ConfigError

DEVICE_KEYS = frozenset({"host", "port", "username", "password", "client_id", "qos", "keepalive", "buffer_size"})
TAG_KEYS = frozenset({"type", "topic", "format", "value", "timestamp", "quality", "quality_map", "write_topic"})

_DEFAULT_TYPE = {"auto": "float64", "json": "float64", "number": "float64", "bool": "bool", "string": "string"}

@dataclass(frozen=True, kw_only=True)
class MqttConnection:
    host: str  #: broker host name or address
    port: int = 1883  #: broker TCP port
    username: str | None = None  #: optional user name
    password: str | None = field(default=None, repr=False)  #: optional password (never logged)
    client_id: str = ""  #: MQTT client id; empty = "nexus-<device>-<random>"
    qos: int = 1  #: QoS of the subscriptions and of writes (0 or 1)
    keepalive: int = 30  #: MQTT keepalive, seconds
    buffer_size: int = 10_000  #: points held between two reads; on overflow the newest per tag are kept


def _topic(text: str, key: str, where: str, *, wildcards: bool) -> str:
    if not text or "\0" in text or len(text.encode()) > 65535:
        raise ConfigError(f"'{key}' must be a non-empty MQTT topic without NUL, at most 65535 bytes", where=where)
    if text.startswith("$share/"):
        raise ConfigError(f"'{key}': shared subscriptions ($share/...) are not supported", where=where)
    levels = text.split("/")
    for i, level in enumerate(levels):
        if not wildcards and ("+" in level or "#" in level):
            raise ConfigError(f"'{key}' {text!r} must not contain wildcards (+ or #)", where=where)
        if ("+" in level and level != "+") or ("#" in level and (level != "#" or i != len(levels) - 1)):
            raise ConfigError(f"'{key}' {text!r}: '+' must be a whole level and '#' the whole last level",
                              where=where)
    return text

def parse_connection(d: dict[str, Any], where: str, protocol: str) -> MqttConnection:
    username, password = get(d, "username", str, where, None), get(d, "password", str, where, None)
    if password is not None and username is None:
        raise ConfigError("'password' needs a 'username'", where=where)
    return MqttConnection(
        host=get(d, "host", str, where), port=int_in(d, "port", 1, 65535, where, 1883), username=username,
        password=password, client_id=get(d, "client_id", str, where, ""), qos=int_in(d, "qos", 0, 1, where, 1),
        keepalive=int_in(d, "keepalive", 5, 3600, where, 30),
        buffer_size=int_in(d, "buffer_size", 100, 10_000_000, where, 10_000))


def parse_tag(d: dict[str, Any], where: str, conn: MqttConnection) -> tuple[MqttAddress, str, int]:
    fmt = choice(get(d, "format", str, where, "auto"), FORMATS, "format", where)
    structured = fmt in ("auto", "json")
    for key in ("value", "timestamp", "quality", "quality_map"):
        if key in d and not structured:
            raise ConfigError(f"'{key}' needs format json or auto, not {fmt!r}", where=where)
    value = parse_path(get(d, "value", str, where, "$"), "value", where)
    ts, quality = (parse_path(get(d, k, str, where), k, where) if k in d else None for k in ("timestamp", "quality"))
    qmap = parse_quality_map(get(d, "quality_map", dict, where, {}), where)
    if qmap and quality is None:
        raise ConfigError("'quality_map' needs a 'quality' path", where=where)
    write_topic = get(d, "write_topic", str, where, None)
    if write_topic is not None:
        _topic(write_topic, "write_topic", where, wildcards=False)
    if get(d, "writable", bool, where, False):
        if write_topic is None:
            raise ConfigError("a writable tag needs a 'write_topic'", where=where)
        if structured and any(isinstance(s, int) for s in value.steps):
            raise ConfigError(f"'value' path {value.text!r} has an array index; a writable {fmt} tag needs a path "
                              "of key names (the write payload is built from it)", where=where)
    address = MqttAddress(topic=_topic(get(d, "topic", str, where), "topic", where, wildcards=True), format=fmt,
                          value=value, timestamp=ts, quality=quality, quality_map=qmap, write_topic=write_topic)
    return address, parse_type(d, where, _DEFAULT_TYPE[fmt]), 0


def polls(conn: MqttConnection) -> bool:
    """Messages arrive as they are published: no poll groups."""
    return False
