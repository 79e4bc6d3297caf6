"""Device and plant documents: validation through :mod:`gateway.config`, plant import/export shape.

The protocols' config modules (``gateway/drivers/<protocol>/config.py``) import no protocol library,
so validating here loads neither pymodbus, asyncua, snap7 nor pycomm3 (tests/test_layout.py checks).

A device document is the mapping of one plant config ``[[devices]]`` entry. The store keeps it with
the four UNS levels filled in (from the plant defaults on import), so every stored document stands
alone and is exactly what a gateway receives.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson

from gateway.config import DeviceConfig, parse_device
from gateway.errors import ConfigError
from gateway_core.errors import ApiError
from nexus.report import describe

log = logging.getLogger("gateway_core.validate")

LEVELS = ("enterprise", "site", "area", "line")
_KEY = re.compile(r"'([A-Za-z_][A-Za-z0-9_.\[\]]*)'")


def _field(exc: ConfigError) -> str:
    """``where`` plus the key the message names: ``device.tags[2].address``."""
    message = str(exc)[len(exc.where) + 2 :]
    m = _KEY.search(message)
    if m and not message.startswith("unknown key") and not message.startswith("duplicate"):
        return f"{exc.where}.{m.group(1)}"
    return exc.where


def check_device(doc: dict[str, Any], *, where: str = "device") -> DeviceConfig:
    """Parse ``doc`` like the gateway will; :class:`ApiError` 422 naming the field otherwise."""
    try:
        return parse_device(doc, {}, where)
    except ConfigError as exc:
        raise ApiError(422, str(exc), field=_field(exc)) from exc
    except Exception as exc:  # a protocol's config parser that trips on odd input must not become a 500
        log.warning("protocol config parser failed on %s: %s", where, describe(exc), exc_info=True)
        raise ApiError(422, f"{where}: invalid device: {describe(exc)}", field=where) from exc


def json_clean(doc: Any) -> Any:
    """``doc`` as plain JSON types (YAML may bring dates and other objects)."""
    try:
        return orjson.loads(orjson.dumps(doc))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ApiError(422, f"not representable as JSON: {exc}", field="body") from exc


def normalize_device(doc: dict[str, Any], plant: dict[str, Any], *, where: str = "device") -> dict[str, Any]:
    """``doc`` with the UNS levels from ``plant`` filled in, validated; returned as plain JSON."""
    if not isinstance(doc, dict):
        raise ApiError(422, f"{where}: a device must be a mapping", field=where)
    full = {"id": doc.get("id")} if "id" in doc else {}
    for k in LEVELS:
        if k not in doc and k in plant:
            full[k] = plant[k]
    full.update(doc)
    clean: dict[str, Any] = json_clean(full)
    check_device(clean, where=where)
    return clean


def device_path(doc: dict[str, Any]) -> str:
    return "/".join(str(doc[k]) for k in (*LEVELS, "id"))


def parse_plant_doc(doc: Any) -> list[dict[str, Any]]:
    """Devices of a ``{"plant": {...}, "devices": [...]}`` document, normalized; 422/409 naming the place."""
    if not isinstance(doc, dict):
        raise ApiError(422, "plant: the document must be a mapping with 'plant' and 'devices'", field="plant")
    extra = set(doc) - {"plant", "devices"}
    if extra:
        raise ApiError(422, f"plant: unknown key(s) {sorted(extra)}", field="plant")
    plant = doc.get("plant", {})
    if not isinstance(plant, dict):
        raise ApiError(422, "plant: 'plant' must be a mapping", field="plant")
    extra = set(plant) - set(LEVELS)
    if extra:
        raise ApiError(422, f"plant: unknown key(s) {sorted(extra)}", field="plant")
    for k, v in plant.items():
        if not isinstance(v, str):
            raise ApiError(422, f"plant: '{k}' must be str, got {v!r}", field=f"plant.{k}")
    if "devices" not in doc:
        raise ApiError(422, "plant: 'devices' is required (a list, may be empty)", field="devices")
    devices = doc["devices"]
    if not isinstance(devices, list):
        raise ApiError(422, "plant: 'devices' must be a list", field="devices")
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for i, d in enumerate(devices):
        full = normalize_device(d, plant, where=f"devices[{i}]")
        if full["id"] in seen:
            raise ApiError(
                409,
                f"devices[{i}]: duplicate UNS path {device_path(full)!r} "
                f"(device id {full['id']!r} also at devices[{seen[full['id']]}])",
                field=f"devices[{i}].id",
            )
        seen[full["id"]] = i
        out.append(full)
    return out


def plant_doc(devices: list[dict[str, Any]]) -> dict[str, Any]:
    """The plant config document of ``devices``: UNS levels shared by all devices move to ``plant``."""
    plant: dict[str, Any] = {}
    for k in LEVELS:
        values = {d.get(k) for d in devices}
        if devices and len(values) == 1:
            plant[k] = values.pop()
    out = [{key: v for key, v in d.items() if key not in plant} for d in devices]
    return {"plant": plant, "devices": out}
