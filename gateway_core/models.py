"""Request and response bodies of the REST API (pydantic, for validation and the OpenAPI document).

Device and tag bodies allow extra keys: the protocol's own connection and address keys (``host``,
``table``, ``address``, ``node_id`` ...), which the protocol module validates (see gateway.config).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["admin", "engineer", "operator", "viewer"]


#: the normalizer's keys of a tag: validated by the gateway's own code (normalizer.parse_rules through
#: gateway.config), so the API and a plant file accept exactly the same rules; documented here
_TRANSFORM_DOC = (
    "Value rules (docs/normalizer.md): scale, offset | raw_min, raw_max, eng_min, eng_max; from_unit "
    "(converted to the tag's unit); min, max (clamp); deadband | deadband_percent; max_silence_ms; debounce_ms"
)
_TRANSFORM_EXAMPLE = {"scale": 0.1, "from_unit": "degF", "min": -40.0, "max": 150.0, "deadband": 0.5,
                      "max_silence_ms": 60000}
_ALARMS_DOC = "Alarms: high, low (with hysteresis), rate_per_s, stuck_ms, severity 1..1000"


#: the OpenAPI example of a tag, alone and inside the device example
_TAG_EXAMPLE: dict[str, Any] = {
    "name": "zone1_temp",
    "table": "holding",
    "address": 0,
    "type": "float32",
    "unit": "degC",
}


class TagIn(BaseModel):
    """A tag: ``name`` plus the protocol's address keys (e.g. Modbus ``table``, ``address``, ``bit``)."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={"example": _TAG_EXAMPLE},
    )
    name: str | None = Field(None, description="UNS tag level; in a tag PUT, taken from the URL when absent")
    type: str | None = Field(
        None, description="bool int16 uint16 int32 uint32 int64 uint64 float32 float64 string"
    )
    unit: str | None = None
    writable: bool | None = Field(None, description="accepts writes (POST .../write)")
    publish: bool | None = Field(None, description="publish the retained per-tag UNS topic")
    transform: dict[str, Any] | None = Field(None, description=_TRANSFORM_DOC, examples=[_TRANSFORM_EXAMPLE])
    storage: Literal["continuous", "on_change", "on_event", "windows_only"] | None = Field(
        None, description="what is reported and stored: every reading, by exception, edges of a bool, windows only"
    )
    windows: list[str | int] | None = Field(None, description="tumbling aggregation windows, e.g. ['10s', '1m']")
    alarms: dict[str, Any] | None = Field(None, description=_ALARMS_DOC, examples=[{"high": 90, "hysteresis": 2}])


class DeviceIn(BaseModel):
    """A device: the mapping of a plant config ``[[devices]]`` entry (UNS levels required here)."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={
            "example": {
                "id": "press-1",
                "enterprise": "acme",
                "site": "berlin",
                "area": "stamping",
                "line": "line-1",
                "protocol": "modbus_tcp",
                "host": "10.0.0.5",
                "port": 502,
                "interval_ms": 1000,
                "tags": [_TAG_EXAMPLE],
            }
        },
    )
    id: str | None = Field(None, description="unique device id, also the UNS device level")
    enterprise: str | None = None
    site: str | None = None
    area: str | None = None
    line: str | None = None
    protocol: str | None = Field(
        None, description="modbus_tcp (default), modbus_rtu, opcua, s7, enip, mqtt ..."
    )
    interval_ms: int | None = Field(None, description="poll period, 10..86400000 ms")
    timeout_ms: int | None = None
    tags: list[TagIn] | None = None


class ErrorOut(BaseModel):
    detail: str
    field: str | None = None
    errors: list[dict[str, Any]] | None = None


class DeviceOut(BaseModel):
    id: str
    revision: int = Field(description="revision of the device's last change; also its ETag")
    gateway: str | None = Field(description="gateway assigned to poll it now (null: none)")
    owner: str | None = Field(
        None, description="who manages it besides the API's users (header X-Nexus-Owner; null: nobody)"
    )
    device: dict[str, Any]


class DeviceListItem(DeviceOut):
    health: dict[str, Any] | None = Field(
        None, description="its newest health report as GET /devices/{id}/health shows it (null: none)")


class DeviceList(BaseModel):
    items: list[DeviceListItem]
    total: int
    limit: int
    offset: int
    next: str | None = Field(description="cursor for the next page (pass as 'after'); null on the last page")
    revision: int = Field(description="current global configuration revision")


class TagOut(BaseModel):
    device_id: str
    revision: int
    tag: dict[str, Any]


class RevisionOut(BaseModel):
    revision: int
    at: datetime
    actor: str
    action: str
    summary: str
    rollback_of: int | None
    devices_changed: int


class RevisionList(BaseModel):
    items: list[RevisionOut]
    total: int
    current: int


class AuditOut(BaseModel):
    id: int
    revision: int | None
    at: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditList(BaseModel):
    items: list[AuditOut]
    total: int


class CommitOut(BaseModel):
    revision: int
    created: list[str]
    updated: list[str]
    deleted: list[str]


class GatewayOut(BaseModel):
    id: str
    online: bool
    capacity: int
    applied_revision: int
    lag: int = Field(description="revisions sent to it that it has not reported applied")
    assigned: list[str] = Field(description="devices the service assigned to it")
    polling: list[str] = Field(description="devices it reports polling")
    errors: dict[str, str]
    last_status_ts: int


class GatewayList(BaseModel):
    items: list[GatewayOut]
    revision: int


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    role: Role


class KeyOut(BaseModel):
    name: str
    role: Role
    created_at: datetime | None = None
    created_by: str | None = None


class KeyCreated(KeyOut):
    key: str = Field(description="the secret; shown only once")


class WriteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: bool | int | float | str


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, bool]


#: a user's login name as JSON Schema sees it (gateway_core.settings.USER_NAME); upper case is folded
_USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
_PASSWORD = Field(min_length=8, max_length=1024, description="at least auth.password_min_length characters")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class UserRef(BaseModel):
    name: str
    role: Role


class TokenOut(BaseModel):
    access_token: str = Field(description="send as 'Authorization: Bearer <access_token>'")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the access token is valid")
    user: UserRef


class MeOut(BaseModel):
    name: str = Field(description="the audit rows' actor: the key's name, or user:<name>")
    role: Role
    kind: Literal["key", "user"]
    user: str | None = None
    session: int | None = None


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(pattern=_USER_PATTERN, description="login name (stored in lower case)")
    role: Role
    password: str = _PASSWORD


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Role | None = None
    disabled: bool | None = Field(None, description="true: the user cannot log in; their sessions end")


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    password: str = _PASSWORD


class PasswordChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = _PASSWORD


class UserOut(BaseModel):
    name: str
    role: Role
    disabled: bool
    created_at: datetime | None = None
    created_by: str | None = None
    password_changed_at: datetime | None = None
