"""The plant configuration a gateway polls: devices, their place in the UNS, and their tags.

Loaded from TOML or YAML (same structure). Keys common to every protocol are parsed here; the
protocol's config module (see :mod:`gateway.drivers`) parses its own connection and address keys::

    [plant]
    enterprise = "acme"
    site = "berlin"

    [[devices]]
    id = "press-1"              # also the UNS device level
    area = "stamping"
    line = "line-1"
    protocol = "modbus_tcp"     # modbus_tcp | modbus_rtu | modbus_rtu_tcp | opcua | s7 | enip | mqtt
    host = "10.0.0.5"
    interval_ms = 1000

      [[devices.tags]]
      name = "oil_temp"
      table = "holding"         # protocol-specific address keys
      address = 0
      type = "float32"
      unit = "degC"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from gateway.drivers import PROTOCOLS, config_module
from gateway.errors import ConfigError
from gateway.values import TYPES, canonical_type
from normalizer import TAG_KEYS as RULE_KEYS
from normalizer import RuleError, Rules, Transform, parse_rules
from normalizer.expr import ExprError, Expression, compile_expression
from proto.uns import DevicePath, validate_level


@dataclass(frozen=True, kw_only=True)
class TagConfig:
    name: str  #: UNS tag level
    address: Any  #: protocol-specific address (a frozen dataclass of the protocol's config module)
    type: str = "uint16"  #: canonical type, one of gateway.values.TYPES
    length: int = 0  #: bytes/characters, for strings
    unit: str | None = None  #: engineering unit after normalization, e.g. "degC"
    writable: bool = False  #: accepts writes on $nexus/cmd/<device>/<tag>/set
    publish: bool = True  #: also publish the retained per-tag UNS topic (when the gateway does)
    rules: Rules = field(default_factory=Rules)  #: the normalizer's: transform, storage, windows, alarms
    poll_group: str | None = None  #: a key of the device's poll_groups; None: polled every interval_ms

    @property
    def transform(self) -> Transform:
        """Linear, units, clamp, deadbands (part of :attr:`rules`)."""
        return self.rules.transform


@dataclass(frozen=True, kw_only=True)
class DerivedConfig:
    """A tag whose value is an expression over other tags of its device (``[[devices.derived]]``)."""

    name: str  #: UNS tag level (unique among the device's tags)
    expression: Expression  #: compiled once at load (normalizer.expr: a whitelist, never eval of the text)
    type: str = "float64"  #: float64, int64 or bool
    unit: str | None = None
    publish: bool = True
    rules: Rules = field(default_factory=Rules)  #: the normalizer's rules of the derived value itself
    writable: bool = False  #: never: a derived tag has no device address
    length: int = 0

    @property
    def transform(self) -> Transform:
        return self.rules.transform


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    id: str  #: unique in the plant, also the UNS device level
    path: DevicePath  #: enterprise/site/area/line/device
    protocol: str = "modbus_tcp"  #: a key of gateway.drivers.PROTOCOLS
    conn: Any = None  #: protocol-specific connection settings (a frozen dataclass)
    interval_ms: int = 1000  #: poll period (subscription drivers: how often buffered changes are published)
    timeout_ms: int = 1000  #: per request
    jitter_pct: float = 5.0  #: each poll starts up to this % of the interval late, so devices do not poll in step
    breaker_failures: int = 3  #: consecutive failures that open the circuit breaker
    breaker_open_ms: int = 1000  #: first wait before a half-open probe; doubles per failed probe up to 4 s
    max_pending_writes: int = 16  #: write commands waiting for this device; more are refused as busy
    poll_groups: tuple[tuple[str, int], ...] = ()  #: (name, interval_ms): tags polled at their own rate
    tags: tuple[TagConfig, ...] = ()
    derived: tuple[DerivedConfig, ...] = ()  #: tags computed from the others, after each poll

    @cached_property
    def tag_map(self) -> dict[str, TagConfig]:
        return {t.name: t for t in self.tags}

    def tag(self, name: str) -> TagConfig | None:
        return self.tag_map.get(name)


@dataclass(frozen=True, kw_only=True)
class PlantConfig:
    devices: tuple[DeviceConfig, ...]


def get(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    """``d[key]`` checked to be of ``typ`` (ints accepted for floats, bools never for numbers)."""
    if key not in d:
        if default is ...:
            raise ConfigError(f"'{key}' is required", where=where)
        return default
    value = d[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and typ is not bool and bool not in (typ if isinstance(typ, tuple) else (typ,)):
        raise ConfigError(f"'{key}' must be {getattr(typ, '__name__', typ)}, got a bool", where=where)
    if not isinstance(value, typ):
        name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ConfigError(f"'{key}' must be {name}, got {value!r}", where=where)
    return value


def choice(value: str, choices: tuple[str, ...], key: str, where: str) -> str:
    if value not in choices:
        raise ConfigError(f"'{key}' is {value!r}; expected one of {', '.join(choices)}", where=where)
    return value


def int_in(d: dict[str, Any], key: str, lo: int, hi: int, where: str, default: Any = ...) -> Any:
    """An int key within ``lo..hi``."""
    v = get(d, key, int, where, default)
    if v is not None and not lo <= v <= hi:
        raise ConfigError(f"'{key}' {v} outside {lo}..{hi}", where=where)
    return v


def parse_type(d: dict[str, Any], where: str, default: str | None = None,
               allowed: tuple[str, ...] = TYPES) -> str:
    """The tag's canonical ``type`` (IEC aliases accepted), restricted to ``allowed``; required without a default."""
    raw = get(d, "type", str, where, ... if default is None else default)
    dtype = canonical_type(raw)
    if dtype is None or dtype not in allowed:
        raise ConfigError(f"'type' is {raw!r}; expected one of {', '.join(allowed)}", where=where)
    return dtype


def unknown_keys(d: dict[str, Any], known: set[str] | frozenset[str], where: str) -> None:
    extra = set(d) - set(known)
    if extra:
        raise ConfigError(f"unknown key(s) {sorted(extra)}", where=where)


_TAG_KEYS = frozenset({"name", "unit", "writable", "publish", "poll_group"}) | RULE_KEYS
_DEVICE_KEYS = frozenset({"id", "enterprise", "site", "area", "line", "protocol", "interval_ms", "timeout_ms",
                          "jitter_pct", "breaker_failures", "breaker_open_ms", "max_pending_writes", "poll_groups",
                          "tags", "derived"})
_DERIVED_KEYS = frozenset({"name", "expression", "type", "unit", "publish"}) | RULE_KEYS
DERIVED_TYPES = ("float64", "int64", "bool")


def _poll_groups(d: dict[str, Any], where: str, module: Any, conn: Any) -> tuple[tuple[str, int], ...]:
    groups = get(d, "poll_groups", dict, where, {})
    if groups and not getattr(module, "polls", lambda _c: True)(conn):
        raise ConfigError("'poll_groups' need a polling driver; this one reports changes as they come", where=where)
    out = []
    for name, interval in groups.items():
        try:
            validate_level(name, what="poll group name")
        except ValueError as exc:
            raise ConfigError(str(exc), where=f"{where}.poll_groups") from exc
        out.append((name, int_in({name: interval}, name, 10, 86_400_000, f"{where}.poll_groups")))
    return tuple(out)


def _tag(d: dict[str, Any], where: str, device_id: str, module: Any, conn: Any,
         groups: tuple[tuple[str, int], ...] = ()) -> TagConfig:
    if not isinstance(d, dict):
        raise ConfigError("a tag must be a table/mapping", where=where, device_id=device_id)
    name = get(d, "name", str, where)
    try:
        validate_level(name, what="tag name")
    except ValueError as exc:
        raise ConfigError(str(exc), where=where, device_id=device_id) from exc
    unknown_keys(d, _TAG_KEYS | module.TAG_KEYS, where)
    address, dtype, length = module.parse_tag(d, where, conn)
    unit = get(d, "unit", str, where, None)
    rules = parse_tag_rules(d, where, dtype=dtype, unit=unit)
    group = get(d, "poll_group", str, where, None)
    if group is not None and group not in dict(groups):
        known = ", ".join(g for g, _ in groups) or "none defined"
        raise ConfigError(f"'poll_group' {group!r} is not in the device's poll_groups ({known})", where=where)
    writable = get(d, "writable", bool, where, False)
    return TagConfig(name=name, address=address, type=dtype, length=length, unit=unit, writable=writable,
                     publish=get(d, "publish", bool, where, True), rules=rules, poll_group=group)


def parse_tag_rules(d: dict[str, Any], where: str, *, dtype: str, unit: str | None) -> Rules:
    """The normalizer's keys of tag mapping ``d`` (``transform``, ``storage``, ``windows``, ``alarms``)."""
    try:
        return parse_rules(d, dtype=dtype, unit=unit)
    except RuleError as exc:
        key = exc.key if exc.key.split(".")[0].split("[")[0] in RULE_KEYS else f"transform.{exc.key}"
        raise ConfigError(f"'{key}': {exc}", where=where) from exc


def parse_device(d: dict[str, Any], plant: dict[str, Any], where: str) -> DeviceConfig:
    """One device of the plant config (``plant`` holds defaults for the UNS levels)."""
    if not isinstance(d, dict):
        raise ConfigError("a device must be a table/mapping", where=where)
    dev_id = get(d, "id", str, where)
    levels = {k: get(d, k, str, where, plant.get(k)) for k in ("enterprise", "site", "area", "line")}
    for k, v in levels.items():
        if v is None:
            raise ConfigError(f"'{k}' is required (on the device or in [plant])", where=where, device_id=dev_id)
    try:
        path = DevicePath(device=dev_id, **levels)
    except ValueError as exc:
        raise ConfigError(str(exc), where=where, device_id=dev_id) from exc
    protocol = choice(get(d, "protocol", str, where, "modbus_tcp"), tuple(PROTOCOLS), "protocol", where)
    module = config_module(protocol, where=where)
    unknown_keys(d, _DEVICE_KEYS | module.DEVICE_KEYS, where)
    conn = module.parse_connection(d, where, protocol)
    groups = _poll_groups(d, where, module, conn)
    tags = tuple(_tag(t, f"{where}.tags[{i}]", dev_id, module, conn, groups)
                 for i, t in enumerate(get(d, "tags", list, where, [])))
    seen: set[str] = set()
    for i, t in enumerate(tags):
        if t.name in seen:
            raise ConfigError(f"duplicate tag name {t.name!r}", where=f"{where}.tags[{i}]", device_id=dev_id)
        seen.add(t.name)
    derived = []
    for i, raw in enumerate(get(d, "derived", list, where, [])):
        spec = _derived(raw, f"{where}.derived[{i}]", dev_id, seen)
        seen.add(spec.name)
        derived.append(spec)
    jitter = get(d, "jitter_pct", float, where, 5.0)
    if not 0 <= jitter <= 10:
        raise ConfigError(f"'jitter_pct' {jitter} outside 0..10", where=where, device_id=dev_id)
    return DeviceConfig(
        id=dev_id, path=path, protocol=protocol, conn=conn,
        interval_ms=int_in(d, "interval_ms", 10, 86_400_000, where, 1000),
        timeout_ms=int_in(d, "timeout_ms", 10, 600_000, where, 1000), jitter_pct=jitter,
        breaker_failures=int_in(d, "breaker_failures", 1, 1000, where, 3),
        breaker_open_ms=int_in(d, "breaker_open_ms", 10, 3_600_000, where, 1000),
        max_pending_writes=int_in(d, "max_pending_writes", 1, 10_000, where, 16), poll_groups=groups, tags=tags,
        derived=tuple(derived))


def _derived(d: Any, where: str, device_id: str, known: set[str]) -> DerivedConfig:
    """One ``[[devices.derived]]`` entry; its inputs must be tags (or earlier derived tags) of the device."""
    if not isinstance(d, dict):
        raise ConfigError("a derived tag must be a table/mapping", where=where, device_id=device_id)
    unknown_keys(d, _DERIVED_KEYS, where)
    name = get(d, "name", str, where)
    try:
        validate_level(name, what="tag name")
    except ValueError as exc:
        raise ConfigError(str(exc), where=where, device_id=device_id) from exc
    if name in known:
        raise ConfigError(f"duplicate tag name {name!r}", where=where, device_id=device_id)
    text = get(d, "expression", str, where)
    try:
        expression = compile_expression(text)
    except ExprError as exc:
        raise ConfigError(f"'expression': {exc}", where=where, device_id=device_id) from exc
    missing = sorted(expression.names - known)
    if missing:
        raise ConfigError(f"'expression' reads {', '.join(map(repr, missing))}, not a tag of this device (or a "
                          "derived tag defined before this one)", where=where, device_id=device_id)
    dtype = choice(get(d, "type", str, where, "float64"), DERIVED_TYPES, "type", where)
    unit = get(d, "unit", str, where, None)
    return DerivedConfig(name=name, expression=expression, type=dtype, unit=unit,
                         publish=get(d, "publish", bool, where, True),
                         rules=parse_tag_rules(d, where, dtype=dtype, unit=unit))


def parse_plant(doc: dict[str, Any]) -> PlantConfig:
    if not isinstance(doc, dict):
        raise ConfigError("the plant config must be a table/mapping", where="plant")
    plant = get(doc, "plant", dict, "plant", {})
    unknown_keys(doc, {"plant", "devices"}, "plant")
    unknown_keys(plant, {"enterprise", "site", "area", "line"}, "plant")
    devices = tuple(parse_device(d, plant, f"devices[{i}]")
                    for i, d in enumerate(get(doc, "devices", list, "plant", [])))
    ids: set[str] = set()
    for i, dev in enumerate(devices):
        if dev.id in ids:
            raise ConfigError(f"duplicate device id {dev.id!r}", where=f"devices[{i}]", device_id=dev.id)
        ids.add(dev.id)
    return PlantConfig(devices=devices)


def load_plant(path: str | Path) -> PlantConfig:
    """Read a plant config file (``.toml``, ``.yaml``/``.yml``)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=str(p)) from exc
    try:
        doc = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"not valid {p.suffix.lstrip('.').upper()}: {exc}", where=str(p)) from exc
    return parse_plant(doc)
