"""Unit tests of the plant configuration (gateway.config) and the normalizer transform."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import DeviceConfig, PlantConfig, TagConfig, load_plant, parse_plant
from gateway.drivers.modbus.config import MAX_REGISTERS, ModbusAddress
from gateway.errors import ConfigError
from normalizer import Transform
from proto.uns import DevicePath

BASE: dict[str, Any] = {
    "plant": {"enterprise": "acme", "site": "berlin"},
    "devices": [
        {
            "id": "press-1",
            "area": "stamping",
            "line": "line-1",
            "tags": [
                {"name": "oil_temp", "address": 0, "type": "float32", "unit": "degC"},
                {"name": "speed", "address": 2},
            ],
        }
    ],
}


def doc(**device: Any) -> dict[str, Any]:
    """BASE with the first device's keys updated (None deletes a key)."""
    d = copy.deepcopy(BASE)
    for k, v in device.items():
        if v is None:
            d["devices"][0].pop(k, None)
        else:
            d["devices"][0][k] = v
    return d


def with_tag(**tag: Any) -> dict[str, Any]:
    """BASE with a third tag (index 2) made of ``tag``."""
    d = copy.deepcopy(BASE)
    d["devices"][0]["tags"].append({"name": "extra", "address": 100, **tag})
    return d


def err(document: Any) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        parse_plant(document)
    return ei.value


# ---------------------------------------------------------------- valid configs


def test_minimal_valid_config() -> None:
    plant = parse_plant(BASE)
    assert isinstance(plant, PlantConfig)
    (dev,) = plant.devices
    assert dev.id == "press-1"
    assert dev.path == DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
    c = dev.conn
    assert (dev.protocol, c.transport, c.host, c.port, c.unit_id) == ("modbus_tcp", "tcp", "127.0.0.1", 502, 1)
    assert (dev.interval_ms, dev.timeout_ms, c.byte_order, c.word_order) == (1000, 1000, "big", "big")
    assert (c.max_registers, c.max_gap) == (MAX_REGISTERS, 8)
    assert (dev.jitter_pct, dev.breaker_failures, dev.breaker_open_ms, dev.max_pending_writes) == (5.0, 3, 1000, 16)
    t0, t1 = dev.tags
    assert t0 == TagConfig(name="oil_temp", type="float32", unit="degC", address=ModbusAddress(
        table="holding", address=0, count=2, byte_order="big", word_order="big"))
    assert t0.transform == Transform() and t0.transform.identity and t0.publish
    assert (t1.name, t1.address.table, t1.type, t1.address.count, t1.unit, t1.writable) == (
        "speed", "holding", "uint16", 1, None, False)


def test_empty_plant_and_no_devices() -> None:
    assert parse_plant({}) == PlantConfig(devices=())
    assert parse_plant({"plant": {"enterprise": "e"}, "devices": []}).devices == ()


def test_device_levels_override_plant() -> None:
    d = doc(site="hamburg", enterprise="other")
    assert parse_plant(d).devices[0].path.path == "other/hamburg/stamping/line-1/press-1"


def test_full_tag_options() -> None:
    d = copy.deepcopy(BASE)
    d["devices"][0].update(host="10.0.0.5", port=5020, unit_id=3, interval_ms=250, timeout_ms=300,
                           byte_order="little", word_order="little", max_registers=60, max_gap=0)
    d["devices"][0]["tags"] = [
        {"name": "state", "table": "coil", "address": 1, "writable": True},
        {"name": "door", "table": "discrete", "address": 2},
        {"name": "alarm_3", "table": "holding", "address": 10, "type": "bool", "bit": 3},
        {"name": "level", "table": "input", "address": 4, "type": "int32", "byte_order": "big",
         "word_order": "big", "transform": {"scale": 0.1, "offset": -5, "min": 0, "max": 100, "deadband": 0.5}},
        {"name": "recipe", "address": 20, "type": "string", "length": 11, "writable": True},
    ]
    dev = parse_plant(d).devices[0]
    c = dev.conn
    assert (c.host, c.port, c.unit_id, dev.interval_ms, dev.timeout_ms) == ("10.0.0.5", 5020, 3, 250, 300)
    assert (c.byte_order, c.word_order, c.max_registers, c.max_gap) == ("little", "little", 60, 0)
    state, door, alarm, level, recipe = dev.tags
    assert (state.type, state.address.count, state.writable) == ("bool", 1, True)
    assert (door.type, door.address.table) == ("bool", "discrete")
    assert (alarm.address.bit, alarm.address.count) == (3, 1)
    assert (level.address.byte_order, level.address.word_order, level.address.count) == ("big", "big", 2)
    assert level.transform == Transform(scale=0.1, offset=-5.0, min=0, max=100, deadband=0.5)
    assert (recipe.length, recipe.address.count) == (11, 6)
    assert (state.address.byte_order, state.address.word_order) == ("little", "little")  # the device's


# ---------------------------------------------------------------- precise errors


@pytest.mark.parametrize(
    ("document", "where", "fragment"),
    [
        (doc(id=None), "devices[0]", "'id' is required"),
        (doc(id=5), "devices[0]", "'id' must be str, got 5"),
        (doc(protocol="profinet"), "devices[0]", "'protocol' is 'profinet'; expected one of modbus_tcp, modbus_rtu"),
        (doc(area=None), "devices[0]", "'area' is required (on the device or in [plant])"),
        (doc(interval_ms=5), "devices[0]", "'interval_ms' 5 outside 10..86400000"),
        (doc(interval_ms=86_400_001), "devices[0]", "'interval_ms' 86400001 outside"),
        (doc(interval_ms="1s"), "devices[0]", "'interval_ms' must be int, got '1s'"),
        (doc(interval_ms=True), "devices[0]", "'interval_ms' must be int, got a bool"),
        (doc(port=0), "devices[0]", "'port' 0 outside 1..65535"),
        (doc(port=70000), "devices[0]", "'port' 70000 outside 1..65535"),
        (doc(max_registers=0), "devices[0]", f"'max_registers' 0 outside 1..{MAX_REGISTERS}"),
        (doc(max_registers=126), "devices[0]", f"'max_registers' 126 outside 1..{MAX_REGISTERS}"),
        (doc(byte_order="middle"), "devices[0]", "'byte_order' is 'middle'; expected one of big, little"),
        (doc(word_order="BIG"), "devices[0]", "'word_order' is 'BIG'"),
        (doc(id="press/1"), "devices[0]", "device 'press/1' contains '/' (level separator)"),
        (doc(id="press+1"), "devices[0]", "device 'press+1' contains '+'"),
        (doc(id=""), "devices[0]", "device is empty"),
        (doc(line="$line"), "devices[0]", "line '$line' starts with '$'"),
        (doc(hots="x"), "devices[0]", "unknown key(s) ['hots']"),
        (doc(tags={"a": 1}), "devices[0]", "'tags' must be list"),
        (with_tag(table="register"), "devices[0].tags[2]",
         "'table' is 'register'; expected one of holding, input, coil, discrete"),
        (with_tag(type="float16"), "devices[0].tags[2]", "'type' is 'float16'; expected one of bool,"),
        (with_tag(table="coil", type="int16"), "devices[0].tags[2]", "a coil tag must have type bool, not int16"),
        (with_tag(table="discrete", type="float32"), "devices[0].tags[2]",
         "a discrete tag must have type bool, not float32"),
        (with_tag(type="string"), "devices[0].tags[2]", "a string tag needs 'length' (characters) in 1..250"),
        (with_tag(type="string", length=251), "devices[0].tags[2]", "needs 'length'"),
        (with_tag(type="int16", bit=3), "devices[0].tags[2]",
         "'bit' (0..15) is only for bool tags in holding/input registers"),
        (with_tag(type="bool", bit=16), "devices[0].tags[2]", "'bit' (0..15)"),
        (with_tag(type="bool", bit=-1), "devices[0].tags[2]", "'bit' (0..15)"),
        (with_tag(table="coil", bit=0), "devices[0].tags[2]", "'bit' (0..15)"),
        (with_tag(table="input", writable=True), "devices[0].tags[2]", "input tag is read-only on Modbus"),
        (with_tag(table="discrete", writable=True), "devices[0].tags[2]", "discrete tag is read-only"),
        (with_tag(writable="yes"), "devices[0].tags[2]", "'writable' must be bool, got 'yes'"),
        (with_tag(address=-1), "devices[0].tags[2]", "'address' -1 outside 0..65535"),
        (with_tag(address=65536), "devices[0].tags[2]", "'address' 65536 outside 0..65535"),
        (with_tag(address=True), "devices[0].tags[2]", "'address' must be int, got a bool"),
        (with_tag(address=65535, type="float32"), "devices[0].tags[2]", "value runs past address 65535"),
        (with_tag(unit=5), "devices[0].tags[2]", "'unit' must be str, got 5"),
        (with_tag(byte_order="mid"), "devices[0].tags[2]", "'byte_order' is 'mid'"),
        (with_tag(transform={"deadband": -1}), "devices[0].tags[2]", "'transform.deadband': deadband must be >= 0"),
        (with_tag(transform={"gain": 2}), "devices[0].tags[2]", "'transform.gain': unknown key(s) ['gain']"),
        (with_tag(transform=[1]), "devices[0].tags[2]", "'transform' must be a table/mapping, got list"),
        (with_tag(adress=5), "devices[0].tags[2]", "unknown key(s) ['adress']"),
        (with_tag(name="a/b"), "devices[0].tags[2]", "tag name 'a/b' contains '/'"),
        (with_tag(name="#"), "devices[0].tags[2]", "tag name '#' contains '#'"),
        (with_tag(name=None), "devices[0].tags[2]", "'name' must be str, got None"),
        ([], "plant", "the plant config must be a table/mapping"),
        ({"devices": {}}, "plant", "'devices' must be list"),
        ({"plant": [], "devices": []}, "plant", "'plant' must be dict"),
    ],
)
def test_errors(document: Any, where: str, fragment: str) -> None:
    e = err(document)
    assert e.where == where
    assert str(e).startswith(f"{where}: ")
    assert fragment in str(e), str(e)


def test_missing_name_and_address() -> None:
    d = copy.deepcopy(BASE)
    d["devices"][0]["tags"][1] = {"address": 3}
    e = err(d)
    assert (e.where, str(e)) == ("devices[0].tags[1]", "devices[0].tags[1]: 'name' is required")
    d["devices"][0]["tags"][1] = {"name": "x"}
    e = err(d)
    assert (e.where, str(e)) == ("devices[0].tags[1]", "devices[0].tags[1]: 'address' is required")


def test_missing_enterprise() -> None:
    d = doc()
    del d["plant"]["enterprise"]
    e = err(d)
    assert e.where == "devices[0]"
    assert e.device_id == "press-1"
    assert str(e) == "devices[0]: 'enterprise' is required (on the device or in [plant])"


def test_duplicate_tag() -> None:
    d = copy.deepcopy(BASE)
    d["devices"][0]["tags"][1]["name"] = "oil_temp"
    e = err(d)
    assert e.where == "devices[0].tags[1]"
    assert e.device_id == "press-1"
    assert str(e) == "devices[0].tags[1]: duplicate tag name 'oil_temp'"


def test_duplicate_device() -> None:
    d = copy.deepcopy(BASE)
    d["devices"].append(copy.deepcopy(d["devices"][0]))
    d["devices"].append({**copy.deepcopy(d["devices"][0]), "id": "press-2"})
    d["devices"][1]["area"] = "other-area"  # same id in another area is still a duplicate
    e = err(d)
    assert (e.where, e.device_id) == ("devices[1]", "press-1")
    assert str(e) == "devices[1]: duplicate device id 'press-1'"


def test_error_in_second_device_names_it() -> None:
    d = copy.deepcopy(BASE)
    d["devices"].append({"id": "robot-1", "area": "a", "line": "l",
                         "tags": [{"name": "ok", "address": 0}, {"name": "x", "address": 1, "type": "nope"}]})
    e = err(d)
    assert e.where == "devices[1].tags[1]"


def test_bad_uns_level_carries_device_id() -> None:
    e = err(doc(id="press/1"))
    assert e.device_id == "press/1"
    e = err(with_tag(name="bad+tag"))
    assert e.device_id == "press-1"


def test_unknown_top_level_key_rejected() -> None:
    e = err({"plant": {"enterprise": "e", "site": "s"}, "device": BASE["devices"]})
    assert "unknown key" in str(e)


def test_unit_id_range_checked() -> None:
    e = err(doc(unit_id=300))
    assert e.where == "devices[0]" and "unit_id" in str(e)


# ---------------------------------------------------------------- files


TOML = """
[plant]
enterprise = "acme"
site = "berlin"

[[devices]]
id = "press-1"
area = "stamping"
line = "line-1"
host = "10.0.0.5"
port = 502
unit_id = 1
interval_ms = 500
word_order = "little"

  [[devices.tags]]
  name = "oil_temp"
  table = "holding"
  address = 0
  type = "float32"
  unit = "degC"
  transform = { scale = 0.1, offset = 1, min = -40, max = 200, deadband = 0.2 }

  [[devices.tags]]
  name = "running"
  table = "coil"
  address = 7
  writable = true

  [[devices.tags]]
  name = "recipe"
  address = 40
  type = "string"
  length = 8
"""

YAML = """
plant:
  enterprise: acme
  site: berlin
devices:
  - id: press-1
    area: stamping
    line: line-1
    host: 10.0.0.5
    port: 502
    unit_id: 1
    interval_ms: 500
    word_order: little
    tags:
      - {name: oil_temp, table: holding, address: 0, type: float32, unit: degC,
         transform: {scale: 0.1, offset: 1, min: -40, max: 200, deadband: 0.2}}
      - {name: running, table: coil, address: 7, writable: true}
      - name: recipe
        address: 40
        type: string
        length: 8
"""


def test_toml_and_yaml_give_the_same_plant(tmp_path: Path) -> None:
    (tmp_path / "plant.toml").write_text(TOML)
    (tmp_path / "plant.yaml").write_text(YAML)
    (tmp_path / "plant.yml").write_text(YAML)
    from_toml = load_plant(tmp_path / "plant.toml")
    from_yaml = load_plant(str(tmp_path / "plant.yaml"))
    assert from_toml == from_yaml == load_plant(tmp_path / "plant.yml")
    dev = from_toml.devices[0]
    assert isinstance(dev, DeviceConfig)
    assert (dev.conn.host, dev.interval_ms, dev.conn.word_order) == ("10.0.0.5", 500, "little")
    assert [t.name for t in dev.tags] == ["oil_temp", "running", "recipe"]
    assert dev.tags[0].transform.apply(100) == pytest.approx(11.0)
    assert dev.tags[1].writable and dev.tags[1].type == "bool"
    assert dev.tags[2].address.count == 4


def test_load_plant_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read: No such file or directory") as ei:
        load_plant(missing)
    assert ei.value.where == str(missing)
    bad = tmp_path / "bad.toml"
    bad.write_text("[plant\n")
    with pytest.raises(ConfigError, match="not valid TOML") as ei:
        load_plant(bad)
    assert ei.value.where == str(bad)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("devices: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_plant(bad_yaml)
    list_yaml = tmp_path / "list.yaml"
    list_yaml.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="must be a table/mapping"):
        load_plant(list_yaml)
    # a semantic error in a file reports the path inside the document
    sem = tmp_path / "sem.toml"
    sem.write_text(TOML.replace('type = "float32"', 'type = "float16"'))
    with pytest.raises(ConfigError) as ei:
        load_plant(sem)
    assert ei.value.where == "devices[0].tags[0]"


# ---------------------------------------------------------------- normalizer Transform


def test_transform_identity_keeps_ints() -> None:
    t = Transform()
    assert t.identity
    assert t.apply(7) == 7 and type(t.apply(7)) is int
    assert t.apply(2.5) == 2.5
    # deadband alone keeps the identity
    assert Transform(deadband=1.0).identity


def test_transform_scale_offset_clamp() -> None:
    t = Transform(scale=0.1, offset=-10)
    assert not t.identity
    assert t.apply(250) == pytest.approx(15.0)
    c = Transform(scale=2, min=0, max=100)
    assert c.apply(10) == 20
    assert c.apply(-3) == 0
    assert c.apply(60) == 100
    assert c.apply(50) == 100  # exactly at the bound
    assert Transform(min=5).apply(3) == 5  # clamp only also applies
    assert Transform(max=5).apply(9) == 5
    assert Transform(min=-1, max=-1).apply(0) == -1  # min == max is allowed


def test_transform_deadband() -> None:
    t = Transform(deadband=0.5)
    assert t.changed(None, 1.0)
    assert not t.changed(1.0, 1.4)
    assert not t.changed(1.0, 0.6)
    assert t.changed(1.0, 1.5)  # at least the deadband: reported
    assert t.changed(1.0, 0.5)
    z = Transform()
    assert z.changed(1.0, 1.0)  # no deadband: every value is reported
    assert z.changed(1.0, 1.0000001)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"scale": math.nan}, "scale must be a finite number, got nan"),
        ({"scale": math.inf}, "scale must be a finite number"),
        ({"offset": "1"}, "offset must be a finite number, got '1'"),
        ({"scale": True}, "scale must be a finite number, got True"),
        ({"deadband": -0.1}, "deadband must be >= 0, got -0.1"),
        ({"deadband": math.inf}, "deadband must be a finite number"),
        ({"min": 10, "max": 5}, "min 10 is greater than max 5"),
    ],
)
def test_transform_validation(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError) as ei:
        Transform(**kwargs)
    assert fragment in str(ei.value)


def test_transform_rejects_unknown_and_positional() -> None:
    with pytest.raises(TypeError):
        Transform(gain=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Transform(2.0)  # type: ignore[misc]


def test_transform_validates_min_max_type() -> None:
    with pytest.raises(ValueError):
        Transform(min="0")  # type: ignore[arg-type]
