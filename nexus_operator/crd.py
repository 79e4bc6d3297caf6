"""The CustomResourceDefinitions NexusDevice and NexusPlant, as data; ``python -m nexus_operator.crd DIR``
writes them as YAML (helm/nexus-edge/crds/, committed; a test checks the files are what this writes).

The schema is structural (every field typed; unknown fields are pruned by the API server, refused by
kubectl's strict field validation). It checks what a schema can: the protocol, each protocol's required
connection and tag address keys, types, ranges and enumerations; gateway_core checks the rest with the
gateway's own code (a tag table that cannot be written, a transform that does not fit the type ...) and
the resource shows its answer as the Degraded condition. The enumerations are written out here, not
imported (the operator imports nothing of the gateway); tests/nexus_operator/test_crd.py compares
them with gateway.drivers.PROTOCOLS, proto.types and each protocol's key sets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from nexus_operator.resources import DEVICES, GROUP, PLANTS, VERSION

PROTOCOLS = ["modbus_tcp", "modbus_rtu", "modbus_rtu_tcp", "opcua", "s7", "enip", "mqtt"]
#: canonical types and the IEC 61131-3 names (lower case) the plant config accepts for them
TYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64",
         "string", "datetime", "byte", "sint", "usint", "int", "uint", "word", "dint", "udint", "dword", "lint",
         "ulint", "lword", "real", "lreal", "float", "double", "date_and_time", "dt", "dtl"]
DERIVED_TYPES = ["float64", "int64", "bool"]
STORAGE = ["continuous", "on_change", "on_event", "windows_only"]
#: one UNS level: no '/', '+', '#', control characters, no leading '$' or surrounding white space
LEVEL = r"^[^\s/+#$\x00-\x1f\x7f](?:[^/+#\x00-\x1f\x7f]*[^\s/+#\x00-\x1f\x7f])?$"


def _int(lo: int | None = None, hi: int | None = None, doc: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer"}
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    if doc:
        out["description"] = doc
    return out


def _str(doc: str = "", **kw: Any) -> dict[str, Any]:
    return {"type": "string", **({"description": doc} if doc else {}), **kw}


def _enum(values: list[str], doc: str = "") -> dict[str, Any]:
    return _str(doc, enum=values)


_NUM: dict[str, Any] = {"type": "number"}
_BOOL: dict[str, Any] = {"type": "boolean"}
_INT_OR_STR: dict[str, Any] = {"x-kubernetes-int-or-string": True}
_LEVEL = _str(pattern=LEVEL, maxLength=128)
_ORDER = _enum(["big", "little"])

#: the protocols' connection keys (spec.address), every protocol's in one object
ADDRESS: dict[str, Any] = {
    "host": _str("modbus_tcp, modbus_rtu_tcp, s7, enip, mqtt: host name or IP address", minLength=1),
    "port": _int(1, 65535, "TCP port (default per protocol: 502, 102, 44818, 1883)"),
    "unit_id": _int(0, 255, "Modbus unit (slave) id"),
    "serial_port": _str("modbus_rtu: serial device, e.g. /dev/ttyUSB0", minLength=1),
    "baudrate": _int(300, 4_000_000), "parity": _enum(["N", "E", "O"]), "bytesize": _int(5, 8),
    "stopbits": _int(1, 2), "byte_order": _ORDER, "word_order": _ORDER, "max_registers": _int(1, 125),
    "max_gap": _int(0, 256), "connections": _int(1, 16),
    "endpoint": _str("opcua: opc.tcp://host:port[/path]", pattern=r"^opc\.tcp://.+"),
    "mode": _enum(["poll", "subscribe"], "opcua"),
    "security_policy": _enum(["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]),
    "security_mode": _enum(["None", "Sign", "SignAndEncrypt"]),
    "certificate": _str(), "private_key": _str(), "server_certificate": _str(),
    "username": _str(),
    "password": _str("opcua, mqtt: readable by whoever may read this resource (no Secret reference yet)"),
    "publishing_interval_ms": _int(10, 3_600_000), "session_timeout_ms": _int(1000, 86_400_000),
    "buffer_size": _int(100, 10_000_000),
    "rack": _int(0, 7, "s7"), "slot": _int(0, 255, "s7: 0..31; enip: backplane slot"),
    "tsap": _INT_OR_STR, "local_tsap": _INT_OR_STR, "pdu_size": _int(240, 960),
    "route": _str("enip: CIP route, e.g. bp/1/enet/10.0.0.9/bp/0"), "upload_tags": _BOOL,
    "upload_timeout_ms": _int(100, 600_000),
    "client_id": _str("mqtt"), "qos": _int(0, 1), "keepalive": _int(5, 3600),
}

TRANSFORM: dict[str, Any] = {
    "type": "object",
    "description": "value rules (docs/normalizer.md)",
    "properties": {
        **dict.fromkeys(("scale", "offset", "raw_min", "raw_max", "eng_min", "eng_max", "min", "max"), _NUM),
        "from_unit": _str(), "deadband": {"type": "number", "minimum": 0},
        "deadband_percent": {"type": "number", "minimum": 0, "maximum": 100},
        "max_silence_ms": _int(0), "debounce_ms": _int(0),
    },
}
ALARMS: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "properties": {
        "high": _NUM, "low": _NUM, "hysteresis": {"type": "number", "minimum": 0},
        "rate_per_s": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
        "stuck_ms": _INT_OR_STR, "severity": _int(1, 1000),
    },
}
RULES: dict[str, Any] = {
    "transform": TRANSFORM, "storage": _enum(STORAGE),
    "windows": {"type": "array", "maxItems": 16, "items": _INT_OR_STR,
                "description": "tumbling windows: 10s, 1m, or ms; whole seconds, 1s..1h"},
    "alarms": ALARMS,
}
TAG: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": _LEVEL, "type": _enum(TYPES, "canonical type or IEC name, lower case"),
        "length": _int(0, 65535, "bytes/characters of a string"), "unit": _str(), "writable": _BOOL,
        "publish": _BOOL, "poll_group": _str(),
        # Modbus
        "table": _enum(["holding", "input", "coil", "discrete"]),
        "address": {**_INT_OR_STR, "description": "Modbus: register 0..65535; S7: e.g. DB1.DBD4"},
        "bit": _int(0, 15), "byte_order": _ORDER, "word_order": _ORDER,
        # OPC UA
        "node": _str("opcua: node id, e.g. ns=2;s=Line1.Speed", minLength=1), "sampling_interval_ms": _NUM,
        "deadband": {"type": "number", "minimum": 0}, "deadband_type": _enum(["absolute", "percent"]),
        "queue_size": _int(0, 65535),
        # S7
        "area": _enum(["DB", "M", "I", "Q", "db", "m", "i", "q"]), "db": _int(1, 65535), "offset": _int(0, 65535),
        # EtherNet/IP
        "tag": _str("enip: Logix tag path", minLength=1),
        # MQTT
        "topic": _str("mqtt: topic filter", minLength=1),
        "format": _enum(["auto", "json", "number", "bool", "string"]),
        "value": _str(), "timestamp": _str(), "quality": _str(),
        "quality_map": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "write_topic": _str(),
        **RULES,
    },
}
DERIVED: dict[str, Any] = {
    "type": "object",
    "required": ["name", "expression"],
    "properties": {"name": _LEVEL, "expression": _str(minLength=1), "type": _enum(DERIVED_TYPES),
                   "unit": _str(), "publish": _BOOL, **RULES},
}


def _needs(protocols: list[str], address: list[str], tag: dict[str, Any]) -> dict[str, Any]:
    """One branch of the spec's oneOf: these protocols need these connection keys and tag keys."""
    return {"properties": {"protocol": {"enum": protocols}, "address": {"required": address},
                           "tags": {"items": tag}}}


DEVICE_SPEC: dict[str, Any] = {
    "type": "object",
    "required": ["protocol", "address"],
    "properties": {
        "deviceId": {**_LEVEL, "description": "device id and UNS device level (default: metadata.name)"},
        "plantRef": _str("a NexusPlant in this namespace: the UNS levels left out here", maxLength=253),
        **dict.fromkeys(("enterprise", "site", "area", "line"), _LEVEL),
        "protocol": _enum(PROTOCOLS),
        "address": {"type": "object", "description": "the protocol's connection keys", "properties": ADDRESS},
        "interval_ms": _int(10, 86_400_000, "poll period"), "timeout_ms": _int(10, 600_000),
        "jitter_pct": {"type": "number", "minimum": 0, "maximum": 10}, "breaker_failures": _int(1, 1000),
        "breaker_open_ms": _int(10, 3_600_000), "max_pending_writes": _int(1, 10_000),
        "poll_groups": {"type": "object", "additionalProperties": _int(10, 86_400_000),
                        "description": "name -> interval_ms of tags polled at their own rate"},
        "tags": {"type": "array", "maxItems": 10_000, "items": TAG,
                 "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        "derived": {"type": "array", "maxItems": 1000, "items": DERIVED},
    },
    "oneOf": [
        _needs(["modbus_tcp", "modbus_rtu_tcp"], ["host"], {"required": ["address"]}),
        _needs(["modbus_rtu"], ["serial_port"], {"required": ["address"]}),
        _needs(["opcua"], ["endpoint"], {"required": ["node", "type"]}),
        _needs(["s7"], ["host"], {"required": ["type"], "anyOf": [{"required": ["address"]},
                                                                  {"required": ["area", "offset"]}]}),
        _needs(["enip"], ["host"], {"required": ["tag", "type"]}),
        _needs(["mqtt"], ["host"], {"required": ["topic"]}),
    ],
}

_CONDITION: dict[str, Any] = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {"type": _str(), "status": _enum(["True", "False", "Unknown"]), "reason": _str(),
                   "message": _str(), "observedGeneration": {"type": "integer", "format": "int64"},
                   "lastTransitionTime": _str(format="date-time")},
}
DEVICE_STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "observedGeneration": {"type": "integer", "format": "int64"},
        "deviceId": _str(), "owner": _str("the device's owner mark in gateway_core"),
        "appliedRevision": {"type": "integer", "format": "int64", "description": "the device's ETag"},
        "gateway": {"type": "string", "nullable": True},
        "health": _enum(["Polling", "Assigning", "Error", "Unassigned", "Unknown"]),
        "healthMessage": _str(), "repairs": _int(0, doc="times the device was re-applied over outside changes"),
        "conditions": {"type": "array", "items": _CONDITION,
                       "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    },
}


def _crd(kind: str, plural: str, short: str, schema: dict[str, Any], columns: list[dict[str, Any]],
         *, status: bool) -> dict[str, Any]:
    props: dict[str, Any] = {"spec": schema}
    if status:
        props["status"] = DEVICE_STATUS
    version: dict[str, Any] = {
        "name": VERSION, "served": True, "storage": True,
        "schema": {"openAPIV3Schema": {"type": "object", "required": ["spec"], "properties": props}},
        "additionalPrinterColumns": columns,
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "nexus-edge"}},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "shortNames": [short],
                      "categories": ["nexus"]},
            "versions": [version],
        },
    }


def _col(name: str, path: str, typ: str = "string", priority: int = 0) -> dict[str, Any]:
    return {"name": name, "type": typ, "jsonPath": path, **({"priority": priority} if priority else {})}


def device_crd() -> dict[str, Any]:
    return _crd("NexusDevice", DEVICES, "nxd", DEVICE_SPEC, [
        _col("Device", ".status.deviceId"), _col("Protocol", ".spec.protocol"), _col("Gateway", ".status.gateway"),
        _col("Health", ".status.health"), _col("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        _col("Reason", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
        _col("Revision", ".status.appliedRevision", "integer", priority=1),
        _col("Age", ".metadata.creationTimestamp", "date"),
    ], status=True)


def plant_crd() -> dict[str, Any]:
    spec = {"type": "object", "description": "UNS levels of the devices that name this plant in plantRef",
            "properties": dict.fromkeys(("enterprise", "site", "area", "line"), _LEVEL)}
    return _crd("NexusPlant", PLANTS, "nxp", spec, [
        _col(k.capitalize(), f".spec.{k}") for k in ("enterprise", "site", "area", "line")
    ] + [_col("Age", ".metadata.creationTimestamp", "date")], status=False)


def render(crd: dict[str, Any]) -> str:
    head = "# Generated by `python -m nexus_operator.crd helm/nexus-edge/crds`: edit nexus_operator/crd.py.\n"
    # through JSON: parts shared in the data above would otherwise become YAML anchors and aliases
    return head + yaml.safe_dump(json.loads(json.dumps(crd)), sort_keys=False, width=110, allow_unicode=True)


FILES = {"nexusdevices.yaml": device_crd, "nexusplants.yaml": plant_crd}


def main(argv: list[str] | None = None) -> int:
    out = Path((argv if argv is not None else sys.argv[1:] or ["helm/nexus-edge/crds"])[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, make in FILES.items():
        (out / name).write_text(render(make()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
