"""The configuration wire contract between the configuration service (gateway_core) and gateways.

Topics, under a control root (default ``$nexus``; one level may start with ``$``)::

    <root>/config/devices/<device_id>          service -> gateways, QoS 1, not retained
        {"schema": 1, "revision": 7, "device_id": "press-1", "gateway": "gw-a" | null,
         "device": {<device mapping, as a plant TOML [[devices]] entry>} | null}
    <root>/config/sync/request                  gateway -> service, at start and on every reconnect
        {"schema": 1, "gateway": "gw-a"}
    <root>/config/sync/response/<gateway_id>    service -> gateway
        {"schema": 1, "revision": 7, "devices": [<device mapping>, ...]}
    <root>/status/gateways/<gateway_id>         gateway -> service, retained, on change and every heartbeat
        {"schema": 1, "gateway": "gw-a", "online": true, "capacity": 100, "applied_revision": 7,
         "devices": ["press-1"], "errors": {"oven-1": "timeout"}, "ts": 1732370000123}
        last will (retained): {"schema": 1, "gateway": "gw-a", "online": false}

Tag writes (``<root>/cmd/<device>/<tag>/set`` and ``.../response``) are in :mod:`proto.commands`.

A gateway polls a device only while the newest device message names it in ``gateway``; any other
value (another gateway, null) means stop. ``device: null`` is a tombstone: the device was deleted.
``revision`` is the service's global configuration revision when the message was sent; it only grows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from proto.errors import PayloadError, TopicError
from proto.uns import validate_level

CONFIG_SCHEMA = 1
DEFAULT_CONTROL_ROOT = "$nexus"
#: seconds between two status messages of a gateway
HEARTBEAT_INTERVAL = 2.0
#: seconds without a status message after which the service declares a gateway dead
HEARTBEAT_TIMEOUT = 3 * HEARTBEAT_INTERVAL


class ConfigMessageError(PayloadError):
    """A control message breaks the contract; ``field`` names the offending key."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


# -- topics ----------------------------------------------------------------------------------------
def validate_control_root(root: str) -> str:
    """One or more UNS-valid levels; the first may start with ``$`` (not routed to ``#`` subscribers)."""
    if not isinstance(root, str) or not root:
        raise TopicError("control root is empty", topic=repr(root))
    for i, level in enumerate(root.split("/")):
        validate_level(
            level[1:] if i == 0 and level.startswith("$") and len(level) > 1 else level,
            what="control root level",
        )
    return root


def _level(value: str, what: str) -> str:
    return validate_level(value, what=what)


def device_topic(root: str, device_id: str) -> str:
    return f"{root}/config/devices/{_level(device_id, 'device id')}"


def device_filter(root: str) -> str:
    return f"{root}/config/devices/+"


def sync_request_topic(root: str) -> str:
    return f"{root}/config/sync/request"


def sync_response_topic(root: str, gateway: str) -> str:
    return f"{root}/config/sync/response/{_level(gateway, 'gateway id')}"


def status_topic(root: str, gateway: str) -> str:
    return f"{root}/status/gateways/{_level(gateway, 'gateway id')}"


def status_filter(root: str) -> str:
    return f"{root}/status/gateways/+"


def last_level(root: str, topic: str, middle: str) -> str:
    """The final level of ``<root>/<middle>/<x>``; :class:`TopicError` if ``topic`` is not one."""
    head = f"{root}/{middle}/"
    rest = topic[len(head) :] if topic.startswith(head) else ""
    if not rest or "/" in rest:
        raise TopicError(f"topic {topic!r} is not {head}<id>", topic=topic)
    return rest


# -- messages --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceMessage:
    """One device's configuration and which gateway polls it (``device=None``: deleted)."""

    revision: int
    device_id: str
    gateway: str | None  #: the gateway that must poll it; None = nobody (released or deleted)
    device: dict[str, Any] | None  #: the device mapping, as a plant config [[devices]] entry
    seq: int = 0  #: the service's message sequence (grows across restarts); echoed by gateways as config_seq


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncRequest:
    gateway: str


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncResponse:
    revision: int
    devices: list[dict[str, Any]]  #: every device assigned to the requesting gateway
    seq: int = 0  #: as in DeviceMessage


@dataclass(frozen=True, kw_only=True, slots=True)
class GatewayStatus:
    gateway: str
    online: bool
    capacity: int = 0  #: relative share of devices this gateway can take (0 = none)
    applied_revision: int = 0  #: newest configuration revision applied
    devices: tuple[str, ...] = ()  #: device ids it polls now
    errors: dict[str, str] = field(default_factory=dict)  #: device id -> last error
    ts: int = 0  #: gateway clock, Unix ms
    config_seq: int = 0  #: highest ``seq`` of the config messages it had applied when it sent this status


def _obj(payload: bytes | str) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ConfigMessageError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigMessageError(f"expected a JSON object, got {type(doc).__name__}")
    schema = doc.get("schema")
    if schema != CONFIG_SCHEMA:
        raise ConfigMessageError(f"unsupported schema {schema!r}; expected {CONFIG_SCHEMA}", field="schema")
    return doc


def _get(doc: dict[str, Any], key: str, typ: type | tuple[type, ...], *, optional: bool = False) -> Any:
    if key not in doc:
        if optional:
            return None
        raise ConfigMessageError("is required", field=key)
    value = doc[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,)):
        raise ConfigMessageError(f"expected {_name(typ)}, got a bool", field=key)
    if not isinstance(value, typ):
        raise ConfigMessageError(f"expected {_name(typ)}, got {value!r}", field=key)
    return value


def _name(typ: type | tuple[type, ...]) -> str:
    return typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)


def _revision(doc: dict[str, Any], key: str = "revision") -> int:
    rev: int = _get(doc, key, int)
    if rev < 0:
        raise ConfigMessageError(f"must be >= 0, got {rev}", field=key)
    return rev


def _seq(doc: dict[str, Any], key: str = "seq") -> int:
    """An optional sequence number (0 when absent: senders from before it existed)."""
    value = _get(doc, key, int, optional=True)
    if value is None:
        return 0
    if value < 0:
        raise ConfigMessageError(f"must be >= 0, got {value}", field=key)
    return int(value)


def _id(doc: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = _get(doc, key, str, optional=optional)
    if value is not None:
        try:
            validate_level(value, what=key)
        except ValueError as exc:
            raise ConfigMessageError(str(exc), field=key) from exc
    return value


def encode_device(msg: DeviceMessage) -> bytes:
    return orjson.dumps(
        {
            "schema": CONFIG_SCHEMA,
            "revision": msg.revision,
            "device_id": msg.device_id,
            "gateway": msg.gateway,
            "device": msg.device,
            **({"seq": msg.seq} if msg.seq else {}),
        }
    )


def decode_device(payload: bytes | str) -> DeviceMessage:
    doc = _obj(payload)
    device_id = _id(doc, "device_id")
    device = _get(doc, "device", dict, optional=True)
    if device is not None and device.get("id") != device_id:
        raise ConfigMessageError(
            f"device.id {device.get('id')!r} differs from device_id {device_id!r}", field="device.id"
        )
    gateway = _id(doc, "gateway", optional=True)
    if device is None and gateway is not None:
        raise ConfigMessageError("a tombstone (device null) cannot name a gateway", field="gateway")
    return DeviceMessage(revision=_revision(doc), device_id=device_id, gateway=gateway, device=device,
                         seq=_seq(doc))


def encode_sync_request(msg: SyncRequest) -> bytes:
    return orjson.dumps({"schema": CONFIG_SCHEMA, "gateway": msg.gateway})


def decode_sync_request(payload: bytes | str) -> SyncRequest:
    return SyncRequest(gateway=_id(_obj(payload), "gateway"))


def encode_sync_response(msg: SyncResponse) -> bytes:
    doc = {"schema": CONFIG_SCHEMA, "revision": msg.revision, "devices": msg.devices}
    return orjson.dumps({**doc, "seq": msg.seq} if msg.seq else doc)


def decode_sync_response(payload: bytes | str) -> SyncResponse:
    doc = _obj(payload)
    devices = _get(doc, "devices", list)
    for i, d in enumerate(devices):
        if not isinstance(d, dict) or not isinstance(d.get("id"), str):
            raise ConfigMessageError("expected a device mapping with a string 'id'", field=f"devices[{i}]")
    return SyncResponse(revision=_revision(doc), devices=devices, seq=_seq(doc))


def encode_status(msg: GatewayStatus) -> bytes:
    if not msg.online:
        return orjson.dumps({"schema": CONFIG_SCHEMA, "gateway": msg.gateway, "online": False})
    return orjson.dumps(
        {
            "schema": CONFIG_SCHEMA,
            "gateway": msg.gateway,
            "online": True,
            "capacity": msg.capacity,
            "applied_revision": msg.applied_revision,
            "devices": list(msg.devices),
            "errors": msg.errors,
            "ts": msg.ts,
            **({"config_seq": msg.config_seq} if msg.config_seq else {}),
        }
    )


def offline_will(gateway: str) -> bytes:
    """The retained last-will payload a gateway registers at connect."""
    return encode_status(GatewayStatus(gateway=gateway, online=False))


def decode_status(payload: bytes | str) -> GatewayStatus:
    doc = _obj(payload)
    gateway = _id(doc, "gateway")
    online = _get(doc, "online", bool)
    if not online:
        return GatewayStatus(gateway=gateway, online=False)
    capacity = _get(doc, "capacity", int)
    if capacity < 0:
        raise ConfigMessageError(f"must be >= 0, got {capacity}", field="capacity")
    devices = _get(doc, "devices", list)
    for i, d in enumerate(devices):
        if not isinstance(d, str):
            raise ConfigMessageError(f"expected a device id string, got {d!r}", field=f"devices[{i}]")
    errors = _get(doc, "errors", dict, optional=True) or {}
    for k, v in errors.items():
        if not isinstance(v, str):
            raise ConfigMessageError(f"expected a message string, got {v!r}", field=f"errors.{k}")
    ts = _get(doc, "ts", int)
    return GatewayStatus(
        gateway=gateway,
        online=True,
        capacity=capacity,
        applied_revision=_revision(doc, "applied_revision"),
        devices=tuple(devices),
        errors=dict(errors),
        ts=ts,
        config_seq=_seq(doc, "config_seq"),
    )
