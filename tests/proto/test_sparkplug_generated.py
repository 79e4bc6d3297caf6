"""The committed protobuf module is what sparkplug_b.proto compiles to, and our DataType is the
schema's enum."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from proto.sparkplug import sparkplug_b_pb2 as pb
from proto.sparkplug.model import DataType

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "proto" / "sparkplug"
GENERATED = ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi")


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None,
                    reason="grpcio-tools is not installed (the test extra brings it): cannot regenerate")
def test_committed_module_matches_the_proto(tmp_path: Path) -> None:
    """The regenerate command of docs/sparkplug.md, into a temp folder: the same bytes."""
    out = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", "proto/sparkplug", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", "proto/sparkplug/sparkplug_b.proto"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in GENERATED:
        assert (tmp_path / name).read_bytes() == (FOLDER / name).read_bytes(), (
            f"proto/sparkplug/{name} is stale: regenerate it (docs/sparkplug.md)")


def test_docs_name_the_regenerate_command() -> None:
    command = ("python -m grpc_tools.protoc -I proto/sparkplug --python_out=proto/sparkplug "
               "--pyi_out=proto/sparkplug proto/sparkplug/sparkplug_b.proto")
    assert command in (ROOT / "docs" / "sparkplug.md").read_text()


def test_datatype_is_the_schemas_enum() -> None:
    schema = {value.name.upper(): value.number for value in pb.DESCRIPTOR.enum_types_by_name["DataType"].values}
    ours = {member.name.replace("_", ""): int(member) for member in DataType}
    assert ours == schema
    assert len(ours) == 35


def test_field_numbers_are_the_specifications() -> None:
    """The numbers other implementations read, spot-checked on the descriptor."""
    metric = pb.Payload.Metric.DESCRIPTOR.fields_by_name
    numbers = {name: metric[name].number for name in (
        "name", "alias", "timestamp", "datatype", "is_historical", "is_transient", "is_null", "metadata",
        "properties", "int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value",
        "bytes_value", "dataset_value", "template_value", "extension_value")}
    assert list(numbers.values()) == list(range(1, 20))
    payload = pb.Payload.DESCRIPTOR.fields_by_name
    assert [payload[n].number for n in ("timestamp", "metrics", "seq", "uuid", "body")] == [1, 2, 3, 4, 5]
    prop = pb.Payload.PropertyValue.DESCRIPTOR.fields_by_name
    assert [prop[n].number for n in ("type", "is_null", "int_value", "propertyset_value", "propertysets_value")] == [
        1, 2, 3, 9, 10]
    assert pb.DESCRIPTOR.package == "org.eclipse.tahu.protobuf"
