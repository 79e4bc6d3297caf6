"""The normalizer daemon's devices file: which devices (by UNS path) have rules, and each tag's type
and unit, which no driver tells it here::

    [[devices]]
    path = "acme/berlin/utilities/compressors/compressor-1"
      [[devices.tags]]
      name = "pressure"
      type = "float64"
      unit = "psi"
      transform = { from_unit = "bar", deadband = 0.5 }

A tag's normalizer keys (``transform``, ``storage``, ``windows``, ``alarms``) are exactly a plant
file's, parsed by :func:`normalizer.parse_rules`. Everything is checked at load; :class:`DevicesError`
names the field (``devices[0].tags[1].transform.from_unit``). Imports only the normalizer and proto.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normalizer.config import TAG_KEYS, Rules, parse_rules
from normalizer.errors import RuleError
from proto.errors import ContractError
from proto.types import ALL_TYPES  # the canonical names; the plant file's IEC aliases are not accepted here
from proto.uns import DevicePath, validate_level

FILE_KEYS = frozenset({"devices"})
DEVICE_KEYS = frozenset({"path", "tags"})
TAG_FIELDS = frozenset({"name", "type", "unit"}) | TAG_KEYS


class DevicesError(ValueError):
    """The devices file is invalid; ``field`` names the offending field (dotted path)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class TagDef:
    """One tag of a device (a :class:`normalizer.TagSpec`)."""

    name: str
    type: str  #: one of ALL_TYPES
    unit: str | None  #: engineering unit of the output (the unit a transform's from_unit converts to)
    rules: Rules


@dataclass(frozen=True, slots=True)
class DeviceDef:
    path: DevicePath
    tags: dict[str, TagDef]  #: by tag name


def load_devices(path: Path) -> dict[DevicePath, DeviceDef]:
    """The devices of the TOML file at ``path``."""
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise DevicesError(f"cannot read {path}: {exc.strerror or exc}", field="devices_file") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DevicesError(f"{path} is not valid TOML: {exc}", field="devices_file") from exc
    return parse_devices(doc)


def parse_devices(doc: dict[str, Any]) -> dict[DevicePath, DeviceDef]:
    _known(doc, FILE_KEYS, "devices file")
    raw = doc.get("devices", [])
    if not isinstance(raw, list):
        raise DevicesError("must be an array of tables ([[devices]])", field="devices")
    out: dict[DevicePath, DeviceDef] = {}
    for i, d in enumerate(raw):
        dev = _device(d, f"devices[{i}]")
        if dev.path in out:
            raise DevicesError(f"device {dev.path.path!r} is listed twice", field=f"devices[{i}].path")
        out[dev.path] = dev
    return out


def _known(d: dict[str, Any], known: frozenset[str], where: str) -> None:
    extra = sorted(set(d) - known)
    if extra:
        hint = " (derived tags are not supported by the normalizer daemon)" if "derived" in extra else ""
        raise DevicesError(f"unknown key(s) {extra}; known: {sorted(known)}{hint}",
                           field=f"{where}.{extra[0]}" if where.startswith("devices") else extra[0])


def _device(d: Any, where: str) -> DeviceDef:
    if not isinstance(d, dict):
        raise DevicesError("a device must be a table", field=where)
    _known(d, DEVICE_KEYS, where)
    raw_path = d.get("path")
    if not isinstance(raw_path, str):
        raise DevicesError("'path' (enterprise/site/area/line/device) is required, a string", field=f"{where}.path")
    try:
        path = DevicePath.parse(raw_path)
    except ContractError as exc:
        raise DevicesError(str(exc), field=f"{where}.path") from exc
    raw_tags = d.get("tags", [])
    if not isinstance(raw_tags, list):
        raise DevicesError("must be an array of tables ([[devices.tags]])", field=f"{where}.tags")
    tags: dict[str, TagDef] = {}
    for i, t in enumerate(raw_tags):
        tag = _tag(t, f"{where}.tags[{i}]")
        if tag.name in tags:
            raise DevicesError(f"tag {tag.name!r} is listed twice", field=f"{where}.tags[{i}].name")
        tags[tag.name] = tag
    return DeviceDef(path, tags)


def _tag(d: Any, where: str) -> TagDef:
    if not isinstance(d, dict):
        raise DevicesError("a tag must be a table", field=where)
    _known(d, TAG_FIELDS, where)
    name = d.get("name")
    if not isinstance(name, str):
        raise DevicesError("'name' is required, a string", field=f"{where}.name")
    try:
        validate_level(name, what="tag name")
    except ContractError as exc:
        raise DevicesError(str(exc), field=f"{where}.name") from exc
    dtype = d.get("type")
    if dtype not in ALL_TYPES:  # required: with no driver, nothing else says what the values are
        got = "missing" if dtype is None else f"{str(dtype)[:40]!r}"
        raise DevicesError(f"'type' is {got}; expected one of {', '.join(ALL_TYPES)}", field=f"{where}.type")
    unit = d.get("unit")
    if unit is not None and (not isinstance(unit, str) or not unit or len(unit) > 64):
        raise DevicesError("'unit' must be a non-empty string of at most 64 characters", field=f"{where}.unit")
    try:
        rules = parse_rules(d, dtype=dtype, unit=unit)
    except RuleError as exc:
        head = exc.key.split(".")[0].split("[")[0]
        key = exc.key if head in TAG_KEYS or head == "unit" else f"transform.{exc.key}"
        raise DevicesError(str(exc), field=f"{where}.{key}") from exc
    except (TypeError, ValueError) as exc:  # a value of the wrong kind the parser did not foresee
        raise DevicesError(f"invalid rules: {str(exc)[:200]}", field=where) from exc
    return TagDef(name, dtype, unit, rules)
