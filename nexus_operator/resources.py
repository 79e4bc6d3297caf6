"""The custom resources (helm/nexus-edge/crds/) and the device document a NexusDevice stands for.

A NexusDevice's spec keeps the key names of a plant file's ``[[devices]]`` entry, so a device moves between
a plant file, the REST API and a resource by copying: ``address`` holds the protocol's connection keys
(flat in the document), ``tags`` and ``derived`` are the plant file's lists as they are. The UNS levels come
from the spec or, where it leaves them out, from the NexusPlant named by ``plantRef`` (the plant file's
``[plant]`` table). gateway_core validates the document with the gateway's own code; the CRD's schema
only catches what a schema can, earlier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nexus_operator.errors import SpecError

GROUP = "edge.nexus.io"
VERSION = "v1alpha1"
DEVICES = "nexusdevices"
PLANTS = "nexusplants"
LEVELS = ("enterprise", "site", "area", "line")
#: device keys of the spec copied into the document as they are
DEVICE_SETTINGS = ("interval_ms", "timeout_ms", "jitter_pct", "breaker_failures", "breaker_open_ms",
                   "max_pending_writes", "poll_groups", "tags", "derived")
#: metadata.annotations key: "true" lets the resource take over a device nobody owns (made through the API)
ADOPT = f"{GROUP}/adopt"

#: what kopf gives a handler for the index of NexusPlants: (namespace, name) -> their specs
PlantIndex = Mapping[Any, Iterable[Mapping[str, Any]]]


def plain(value: Any) -> Any:
    """``value`` (kopf's read-only views included) as plain dicts, lists and scalars."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def owner_mark(instance: str, namespace: str | None, name: str) -> str:
    """The X-Nexus-Owner value of the device a resource makes: unique per operator instance and resource."""
    return f"{instance}:{namespace or ''}/{name}"


def device_id(spec: Mapping[str, Any], name: str) -> str:
    return str(spec.get("deviceId") or name)


def find_plant(plants: PlantIndex | None, namespace: str | None, ref: str) -> dict[str, Any]:
    for found in (plants or {}).get((namespace, ref), ()):
        return dict(plain(found))
    raise SpecError(f"spec.plantRef: no NexusPlant {ref!r} in namespace {namespace!r}", field="spec.plantRef")


def document(spec: Mapping[str, Any], meta: Mapping[str, Any], plants: PlantIndex | None) -> dict[str, Any]:
    """The gateway_core device document the resource stands for."""
    spec = plain(spec)
    plant = find_plant(plants, meta.get("namespace"), spec["plantRef"]) if spec.get("plantRef") else {}
    doc: dict[str, Any] = {"id": device_id(spec, str(meta["name"]))}
    for level in LEVELS:
        value = spec.get(level, plant.get(level))
        if value is None:
            where = f"or in NexusPlant {spec['plantRef']!r}" if spec.get("plantRef") else "or a plantRef"
            raise SpecError(f"spec.{level} is not set: give it {where}", field=f"spec.{level}")
        doc[level] = value
    doc["protocol"] = spec.get("protocol", "modbus_tcp")
    doc.update(spec.get("address", {}))
    doc.update((k, spec[k]) for k in DEVICE_SETTINGS if k in spec)
    return doc
