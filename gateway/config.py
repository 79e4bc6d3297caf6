"""The plant configuration a gateway polls: devices, their place in the UNS, and their tags.

Loaded from TOML or YAML (same structure)::

    [plant]
    enterprise = "acme"
    site = "berlin"

    [[devices]]
    id = "press-1"              # also the UNS device level
    area = "stamping"
    line = "line-1"
    protocol = "modbus_tcp"
    host = "10.0.0.5"
    port = 502
    unit_id = 1
    interval_ms = 1000

      [[devices.tags]]
      name = "oil_temp"
      table = "holding"         # holding | input | coil | discrete
      address = 0
      type = "float32"
      unit = "degC"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError
from gateway.registers import BYTE_ORDERS, TYPES, register_count
from normalizer import Transform
from proto.uns import DevicePath, validate_level

TABLES = ("holding", "input", "coil", "discrete")
PROTOCOLS = ("modbus_tcp",)
MAX_REGISTERS = 125  # Modbus limit per read of registers (function codes 3 and 4)
MAX_BITS = 2000  # Modbus limit per read of coils/discrete inputs (function codes 1 and 2)


@dataclass(frozen=True, kw_only=True)
class TagConfig:
    name: str  #: UNS tag level
    table: str  #: holding | input | coil | discrete
    address: int  #: zero-based register or bit address
    type: str = "uint16"  #: bool int16 uint16 int32 uint32 int64 uint64 float32 float64 string
    length: int = 0  #: characters, for strings
    bit: int | None = None  #: for bool in a register: bit 0 (LSB) .. 15
    byte_order: str | None = None  #: overrides the device's
    word_order: str | None = None  #: overrides the device's
    unit: str | None = None  #: engineering unit after normalization, e.g. "degC"
    writable: bool = False  #: accepts writes on $nexus/cmd (holding registers and coils only)
    transform: Transform = field(default_factory=Transform)  #: scale/offset/clamp/deadband

    @property
    def count(self) -> int:
        """Registers (or bits) read for this tag."""
        return 1 if self.table in ("coil", "discrete") else register_count(self.type, self.length)


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    id: str  #: unique in the plant, also the UNS device level
    path: DevicePath  #: enterprise/site/area/line/device
    protocol: str = "modbus_tcp"
    host: str = "127.0.0.1"
    port: int = 502
    unit_id: int = 1  #: Modbus unit (slave) id
    interval_ms: int = 1000  #: poll period
    timeout_ms: int = 1000  #: per request
    byte_order: str = "big"
    word_order: str = "big"
    max_registers: int = MAX_REGISTERS  #: largest coalesced register read
    max_gap: int = 8  #: unused registers a coalesced read may span between two tags
    tags: tuple[TagConfig, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PlantConfig:
    devices: tuple[DeviceConfig, ...]


def _get(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
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


def _choice(value: str, choices: tuple[str, ...], key: str, where: str) -> str:
    if value not in choices:
        raise ConfigError(f"'{key}' is {value!r}; expected one of {', '.join(choices)}", where=where)
    return value


def _tag(d: dict[str, Any], where: str, device_id: str) -> TagConfig:
    name = _get(d, "name", str, where)
    try:
        validate_level(name, what="tag name")
    except ValueError as exc:
        raise ConfigError(str(exc), where=where, device_id=device_id) from exc
    table = _choice(_get(d, "table", str, where, "holding"), TABLES, "table", where)
    default_type = "bool" if table in ("coil", "discrete") else "uint16"
    dtype = _choice(_get(d, "type", str, where, default_type), TYPES, "type", where)
    if table in ("coil", "discrete") and dtype != "bool":
        raise ConfigError(f"a {table} tag must have type bool, not {dtype}", where=where)
    address = _get(d, "address", int, where)
    if not 0 <= address <= 65535:
        raise ConfigError(f"'address' {address} outside 0..65535", where=where)
    length = _get(d, "length", int, where, 0)
    if dtype == "string" and not 1 <= length <= 250:
        raise ConfigError("a string tag needs 'length' (characters) in 1..250", where=where)
    bit = _get(d, "bit", int, where, None)
    if bit is not None and (dtype != "bool" or table in ("coil", "discrete") or not 0 <= bit <= 15):
        raise ConfigError("'bit' (0..15) is only for bool tags in holding/input registers", where=where)
    writable = _get(d, "writable", bool, where, False)
    if writable and table in ("input", "discrete"):
        raise ConfigError(f"{'an' if table == 'input' else 'a'} {table} tag is read-only on Modbus; it cannot be writable", where=where)
    tr = _get(d, "transform", dict, where, {})
    try:
        transform = Transform(**tr)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad transform: {exc}", where=where) from exc
    tag = TagConfig(
        name=name, table=table, address=address, type=dtype, length=length, bit=bit,
        byte_order=_choice(d["byte_order"], BYTE_ORDERS, "byte_order", where) if "byte_order" in d else None,
        word_order=_choice(d["word_order"], BYTE_ORDERS, "word_order", where) if "word_order" in d else None,
        unit=_get(d, "unit", str, where, None), writable=writable, transform=transform)
    if address + tag.count > 65536:
        raise ConfigError("value runs past address 65535", where=where)
    unknown = set(d) - {"name", "table", "address", "type", "length", "bit", "byte_order", "word_order", "unit",
                        "writable", "transform"}
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}", where=where)
    return tag


def _device(d: dict[str, Any], plant: dict[str, Any], where: str) -> DeviceConfig:
    dev_id = _get(d, "id", str, where)
    levels = {k: _get(d, k, str, where, plant.get(k)) for k in ("enterprise", "site", "area", "line")}
    for k, v in levels.items():
        if v is None:
            raise ConfigError(f"'{k}' is required (on the device or in [plant])", where=where, device_id=dev_id)
    try:
        path = DevicePath(device=dev_id, **levels)
    except ValueError as exc:
        raise ConfigError(str(exc), where=where, device_id=dev_id) from exc
    protocol = _choice(_get(d, "protocol", str, where, "modbus_tcp"), PROTOCOLS, "protocol", where)
    interval = _get(d, "interval_ms", int, where, 1000)
    if not 10 <= interval <= 86_400_000:
        raise ConfigError(f"'interval_ms' {interval} outside 10..86400000", where=where, device_id=dev_id)
    max_regs = _get(d, "max_registers", int, where, MAX_REGISTERS)
    if not 1 <= max_regs <= MAX_REGISTERS:
        raise ConfigError(f"'max_registers' must be 1..{MAX_REGISTERS}", where=where, device_id=dev_id)
    port = _get(d, "port", int, where, 502)
    if not 1 <= port <= 65535:
        raise ConfigError(f"'port' {port} outside 1..65535", where=where, device_id=dev_id)
    unit_id = _get(d, "unit_id", int, where, 1)
    if not 0 <= unit_id <= 255:
        raise ConfigError(f"'unit_id' {unit_id} outside 0..255", where=where, device_id=dev_id)
    tags = tuple(_tag(t, f"{where}.tags[{i}]", dev_id) for i, t in enumerate(_get(d, "tags", list, where, [])))
    seen: set[str] = set()
    for i, t in enumerate(tags):
        if t.name in seen:
            raise ConfigError(f"duplicate tag name {t.name!r}", where=f"{where}.tags[{i}]", device_id=dev_id)
        seen.add(t.name)
    known = {"id", "enterprise", "site", "area", "line", "protocol", "host", "port", "unit_id", "interval_ms",
             "timeout_ms", "byte_order", "word_order", "max_registers", "max_gap", "tags"}
    if set(d) - known:
        raise ConfigError(f"unknown key(s) {sorted(set(d) - known)}", where=where, device_id=dev_id)
    return DeviceConfig(
        id=dev_id, path=path, protocol=protocol, host=_get(d, "host", str, where, "127.0.0.1"), port=port,
        unit_id=unit_id, interval_ms=interval,
        timeout_ms=_get(d, "timeout_ms", int, where, 1000),
        byte_order=_choice(_get(d, "byte_order", str, where, "big"), BYTE_ORDERS, "byte_order", where),
        word_order=_choice(_get(d, "word_order", str, where, "big"), BYTE_ORDERS, "word_order", where),
        max_registers=max_regs, max_gap=_get(d, "max_gap", int, where, 8), tags=tags)


def parse_plant(doc: dict[str, Any]) -> PlantConfig:
    if not isinstance(doc, dict):
        raise ConfigError("the plant config must be a table/mapping", where="plant")
    plant = _get(doc, "plant", dict, "plant", {})
    if set(doc) - {"plant", "devices"}:
        raise ConfigError(f"unknown key(s) {sorted(set(doc) - {'plant', 'devices'})}", where="plant")
    if set(plant) - {"enterprise", "site", "area", "line"}:
        raise ConfigError(f"unknown key(s) {sorted(set(plant) - {'enterprise', 'site', 'area', 'line'})}",
                          where="plant")
    devices = tuple(_device(d, plant, f"devices[{i}]") for i, d in enumerate(_get(doc, "devices", list, "plant", [])))
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
