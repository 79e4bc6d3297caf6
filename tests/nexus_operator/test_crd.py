"""The CRDs: the committed files are what nexus_operator/crd.py writes, they are valid Kubernetes objects with
a structural schema, their enumerations are the gateway's, and every example in examples/operator/ is
accepted (valid ones, also by gateway_core's own device check) or refused (each invalid one) by the schema.

No API server runs here, so the schema is checked the way the API server would use it: the openAPIV3Schema
turned into the JSON Schema it stands for (nullable, int-or-string, unknown fields refused as kubectl's
strict field validation does) and validated with jsonschema's draft 4 validator (OpenAPI 3.0's schema
object is draft 4's, with a boolean exclusiveMinimum)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.config import DERIVED_TYPES
from gateway.drivers import PROTOCOLS, config_module
from gateway_core.validate import check_device
from nexus_operator import crd
from nexus_operator.resources import document
from normalizer.config import STORAGE_MODES
from proto.types import ALIASES, ALL_TYPES

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "helm" / "nexus-edge" / "crds"
EXAMPLES = ROOT / "examples" / "operator"
VALID = sorted(EXAMPLES.glob("*.yaml"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.yaml"))
#: what a schema node may hold inside allOf/anyOf/oneOf/not (Kubernetes' structural schema rule 3)
NOT_IN_JUNCTORS = ("type", "description", "default", "additionalProperties", "nullable")


def loaded(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def crds() -> dict[str, dict[str, Any]]:
    """kind -> the committed CRD."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        obj = loaded(path)
        out[obj["spec"]["names"]["kind"]] = obj
    return out


def schema_of(kind: str) -> dict[str, Any]:
    version = crds()[kind]["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def as_json_schema(node: dict[str, Any], *, root: bool = False, junctor: bool = False) -> dict[str, Any]:
    """The JSON Schema (draft 4) an OpenAPI v3 structural schema stands for, unknown fields refused (by the
    structural part: a junctor's branch names only some of the fields)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type",
                   "x-kubernetes-list-map-keys", "nullable", "format"):
            continue
        if key == "properties":
            out[key] = {k: as_json_schema(v, junctor=junctor) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = as_json_schema(value, junctor=junctor)
        elif key == "not":
            out[key] = as_json_schema(value, junctor=True)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [as_json_schema(v, junctor=True) for v in value]
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [*out.get("anyOf", []), {"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if root:
        out["properties"] = {**out.get("properties", {}), "apiVersion": {"type": "string"},
                             "kind": {"type": "string"}, "metadata": {"type": "object"}}
    if (not junctor and "properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def validator(kind: str) -> jsonschema.Draft4Validator:
    schema = as_json_schema(schema_of(kind), root=True)
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def list_map_errors(node: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """x-kubernetes-list-type map: the API server refuses two items with the same keys."""
    errors: list[str] = []
    if isinstance(value, list) and node.get("x-kubernetes-list-type") == "map":
        keys = [tuple(item.get(k) for k in node["x-kubernetes-list-map-keys"]) for item in value]
        errors += [f"{where}: duplicate {k}" for k in {k for k in keys if keys.count(k) > 1}]
    if isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            errors += list_map_errors(node["items"], item, f"{where}[{i}]")
    if isinstance(value, dict):
        for k, sub in node.get("properties", {}).items():
            if k in value:
                errors += list_map_errors(sub, value[k], f"{where}.{k}")
    return errors


def refusals(obj: dict[str, Any]) -> list[str]:
    errs = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(obj["kind"]).iter_errors(obj)]
    return errs + list_map_errors(schema_of(obj["kind"]), obj)


def test_the_committed_crds_are_what_crd_py_writes() -> None:
    for name, make in crd.FILES.items():
        assert (CRDS / name).read_text() == crd.render(make()), f"run `python -m nexus_operator.crd {CRDS}`"
    assert {p.name for p in CRDS.glob("*.yaml")} == set(crd.FILES)


@pytest.mark.parametrize("kind", ["NexusDevice", "NexusPlant"])
def test_each_crd_is_a_valid_kubernetes_object(kind: str) -> None:
    kubernetes_validate.validate(crds()[kind], "1.37.0", strict=True)


def structural_errors(node: dict[str, Any], where: str, *, in_junctor: bool = False) -> list[str]:
    """Kubernetes' structural schema rules: every node typed (or int-or-string / preserve-unknown-fields);
    no type, description, default, additionalProperties or nullable inside a junctor; a field a junctor
    names is also in the structural part."""
    errors: list[str] = []
    if in_junctor:
        errors += [f"{where}: {k} inside a junctor" for k in NOT_IN_JUNCTORS if k in node]
    elif "type" not in node and not node.get("x-kubernetes-int-or-string") \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        errors.append(f"{where}: no type")
    for key, sub in node.get("properties", {}).items():
        errors += structural_errors(sub, f"{where}.{key}", in_junctor=in_junctor)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            errors += structural_errors(node[key], f"{where}.{key}", in_junctor=in_junctor)
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, branch in enumerate(node.get(junctor, ())):
            errors += structural_errors(branch, f"{where}.{junctor}[{i}]", in_junctor=True)
            errors += [f"{where}.{junctor}[{i}]: {k} not in the structural part"
                       for k in branch.get("properties", {}) if k not in node.get("properties", {})]
    return errors


@pytest.mark.parametrize("kind", ["NexusDevice", "NexusPlant"])
def test_each_schema_is_structural(kind: str) -> None:
    assert structural_errors(schema_of(kind), kind) == []


def test_the_enumerations_are_the_gateways() -> None:
    spec = schema_of("NexusDevice")["properties"]["spec"]
    assert spec["properties"]["protocol"]["enum"] == list(PROTOCOLS)
    # every protocol has a branch naming its required keys
    branches = [p for b in spec["oneOf"] for p in b["properties"]["protocol"]["enum"]]
    assert sorted(branches) == sorted(PROTOCOLS)
    tag = spec["properties"]["tags"]["items"]["properties"]
    assert set(tag["type"]["enum"]) == set(ALL_TYPES) | set(ALIASES)
    assert tag["storage"]["enum"] == list(STORAGE_MODES)
    assert spec["properties"]["derived"]["items"]["properties"]["type"]["enum"] == list(DERIVED_TYPES)
    # every key a protocol takes is in the schema (and the schema names no key no protocol takes)
    device_keys = set().union(*(config_module(p).DEVICE_KEYS for p in PROTOCOLS))
    tag_keys = set().union(*(config_module(p).TAG_KEYS for p in PROTOCOLS))
    assert set(spec["properties"]["address"]["properties"]) == device_keys
    from gateway.config import _TAG_KEYS  # the protocol-independent tag keys (name, unit, rules ...)
    assert set(tag) == tag_keys | _TAG_KEYS


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_examples_are_accepted(path: Path) -> None:
    obj = loaded(path)
    assert refusals(obj) == []


def test_valid_device_examples_are_devices_gateway_core_accepts() -> None:
    """The schema is not stricter than it should be, nor the examples wrong: gateway_core's own check (the
    gateway's parser) takes the document each example stands for."""
    plants = {(o["metadata"]["namespace"], o["metadata"]["name"]): [o["spec"]]
              for o in map(loaded, VALID) if o["kind"] == "NexusPlant"}
    devices = [o for o in map(loaded, VALID) if o["kind"] == "NexusDevice"]
    assert len(devices) >= 3
    for obj in devices:
        check_device(document(obj["spec"], obj["metadata"], plants))


def _tag0(obj: dict[str, Any]) -> dict[str, Any]:
    tag: dict[str, Any] = obj["spec"]["tags"][0]
    return tag


#: each invalid example's one fault, mended: with it the example is accepted, so it was refused for that
MENDS: dict[str, Any] = {
    "bad-storage": lambda o: _tag0(o).update(storage="on_change"),
    "bad-tag-type": lambda o: _tag0(o).update(type="float64"),
    "missing-address": lambda o: o["spec"].update(address={"host": "10.0.0.5"}),
    "opcua-without-endpoint": lambda o: o["spec"].update(address={"endpoint": "opc.tcp://oven-1.plant.local:4840"}),
    "tag-without-address": lambda o: _tag0(o).update(address=0),
    "unknown-field": lambda o: _tag0(o).update(address=_tag0(o).pop("adress")),
    "wrong-protocol": lambda o: o["spec"].update(protocol="modbus_tcp"),
}


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_each_invalid_example_is_refused_for_its_fault(path: Path) -> None:
    obj = loaded(path)
    assert path.read_text().startswith("# Refused by")  # each says why
    assert refusals(obj), f"{path.name} was accepted"
    MENDS[path.stem](obj)
    assert refusals(obj) == []


def test_every_invalid_example_has_its_mend() -> None:
    assert set(MENDS) == {p.stem for p in INVALID}


def test_duplicate_tag_names_are_refused_as_a_list_map() -> None:
    obj = loaded(EXAMPLES / "modbus-press.yaml")
    obj["spec"]["tags"].append(dict(obj["spec"]["tags"][0]))
    assert any("duplicate ('oil_temp',)" in e for e in refusals(obj))
