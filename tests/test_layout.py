"""The layout keeps: who may import whom (docs/architecture.md), checked on the source, and what
gateway_core really loads when it validates every protocol's config.

The rules are read from the import statements of every module (function-level and TYPE_CHECKING
imports included: they couple the modules just the same), so a violation fails here before it ships.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("proto", "nexus", "normalizer", "gateway", "ingestion", "gateway_core", "devtools", "nexus_operator")
#: libraries that speak a device protocol (or simulate one): only drivers and simulators load them
PROTOCOL_LIBRARIES = ("pymodbus", "asyncua", "snap7", "pycomm3", "cpppo")
#: packages only the tests and the developer tools install or need
TEST_ONLY = ("cpppo", "pytest", "hypothesis", "schemathesis", "tests", "devtools")
MAX_LINES = 400
#: modules allowed past MAX_LINES, and why
LONG_MODULES = {
    "gateway/spool.py": "the gateway's side of the delivery protocol: one state machine over the log",
}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute imports; we write no relative ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if node.module is not None:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import module`
    return names


MODULES = modules()
IMPORTS = {name: imports(path) for name, path in MODULES.items()}


def ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(rule: str, where: tuple[str, ...], allowed: tuple[str, ...]) -> list[str]:
    """Imports of our modules by modules under ``where`` that are not under ``allowed``; simulators
    (developer tools kept beside their protocol) may also import devtools."""
    out = []
    for mod, names in IMPORTS.items():
        if not under(mod, *where):
            continue
        for name in sorted(names):
            if ours(name) and not under(name, *allowed) and not (is_simulator(mod) and under(name, "devtools")):
                out.append(f"{rule}: {mod} imports {name}")
    return out


def is_simulator(mod: str) -> bool:
    return mod.startswith("gateway.drivers.") and mod.endswith(".simulator")


def test_proto_imports_nothing_of_ours() -> None:
    assert violations("proto is the contract", ("proto",), ("proto",)) == []


def test_nexus_is_plumbing_under_every_daemon() -> None:
    assert violations("nexus imports only nexus", ("nexus",), ("nexus",)) == []


#: the standalone normalizer daemon's modules: plumbing like every daemon's, around the rules library
NORMALIZER_DAEMON = ("normalizer.daemon", "normalizer.__main__", "normalizer.settings", "normalizer.metrics",
                     "normalizer.source")


def test_normalizer_depends_only_on_the_contract() -> None:
    """Its rules are a library the gateway and the daemon share: only proto under them."""
    found = violations("normalizer imports only proto", ("normalizer",), ("normalizer", "proto"))
    assert [v for v in found if v.split()[-3] not in NORMALIZER_DAEMON] == []
    assert violations("the normalizer daemon imports normalizer/nexus/proto", NORMALIZER_DAEMON,
                      ("normalizer", "nexus", "proto")) == []


def test_ingestion_knows_no_gateway() -> None:
    assert violations("ingestion imports ingestion/nexus/proto", ("ingestion",), ("ingestion", "nexus", "proto")) == []


def test_gateway_core_imports_config_parsing_never_a_driver() -> None:
    allowed = ("gateway_core", "nexus", "proto", "normalizer", "gateway.config", "gateway.errors", "gateway.values")
    assert violations("gateway_core never imports a driver or the gateway's runtime", ("gateway_core",),
                      allowed) == []


def test_the_operator_is_a_rest_client_of_gateway_core() -> None:
    """nexus-operator talks to gateway_core over HTTP only: none of the daemons' code, not even the config
    parsing (its CRD's enumerations are compared with the gateway's in tests/nexus_operator/test_crd.py)."""
    assert violations("nexus_operator imports nexus_operator/nexus", ("nexus_operator",),
                      ("nexus_operator", "nexus")) == []


def test_drivers_never_import_the_gateways_runtime() -> None:
    """A driver gets a device's config and returns points: the poller, publisher, spool, queue and
    daemon are not its business."""
    allowed = ("gateway.drivers", "gateway.config", "gateway.errors", "gateway.values", "nexus", "proto")
    assert violations("drivers import drivers/config/errors/values/nexus/proto", ("gateway.drivers",), allowed) == []


def test_a_protocol_folder_never_imports_another() -> None:
    found = []
    for mod, names in IMPORTS.items():
        if not mod.startswith("gateway.drivers.") or mod.count(".") < 3:
            continue
        folder = ".".join(mod.split(".")[:3])
        for name in names:
            if name.startswith("gateway.drivers.") and name.count(".") >= 2:
                other = ".".join(name.split(".")[:3])
                if other not in (folder, "gateway.drivers.base", "gateway.drivers.changebuffer"):
                    found.append(f"{mod} imports {name}")
    assert found == []


def test_the_gateway_reaches_drivers_only_through_the_registry() -> None:
    """Outside gateway/drivers/, the gateway imports the registry and the base class, never a
    protocol's module: adding a protocol is adding a folder and one registry line."""
    found = [f"{mod} imports {name}" for mod, names in IMPORTS.items()
             if under(mod, "gateway") and not under(mod, "gateway.drivers")
             for name in names if under(name, "gateway.drivers") and name not in (
                 "gateway.drivers", "gateway.drivers.base", "gateway.drivers.make_driver",
                 "gateway.drivers.config_module", "gateway.drivers.PROTOCOLS", "gateway.drivers.base.Driver")]
    assert found == []


def test_protocol_config_modules_import_no_protocol_library() -> None:
    found = [f"{mod} imports {name}" for mod, names in IMPORTS.items()
             if mod.startswith("gateway.drivers.") and mod.endswith(".config")
             for name in names if under(name, *PROTOCOL_LIBRARIES)]
    assert found == []


def test_runtime_needs_no_test_only_package() -> None:
    """What the daemons import at run time installs without the test extra; simulators and the
    developer tools are not imported by them."""
    found = [f"{mod} imports {name}" for mod, names in IMPORTS.items()
             if not under(mod, "devtools") and not is_simulator(mod)
             for name in names if under(name, *TEST_ONLY)]
    assert found == []
    found = [f"{mod} imports {name}" for mod, names in IMPORTS.items()
             if not is_simulator(mod) and not under(mod, "devtools")
             for name in names if is_simulator(name)]
    assert found == []


def test_modules_stay_small() -> None:
    long = {str(path.relative_to(ROOT)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert {p: n for p, n in long.items() if p not in LONG_MODULES} == {}


PLANT = """
import sys
from gateway_core.api import create_app
from gateway_core.validate import check_device
docs = [
    {"id": "m", "protocol": "modbus_tcp", "tags": [{"name": "t", "address": 0, "writable": True}]},
    {"id": "r", "protocol": "modbus_rtu", "serial_port": "/dev/ttyUSB0", "tags": [{"name": "t", "address": 1}]},
    {"id": "o", "protocol": "opcua", "endpoint": "opc.tcp://plc:4840",
     "tags": [{"name": "t", "node": "ns=2;s=Line1.Speed", "type": "float32"},
              {"name": "u", "node": "nsu=urn:acme;g=09087e75-8e5e-499b-954f-f2a9603db28a", "type": "int32"}]},
    {"id": "s", "protocol": "s7", "host": "plc", "tags": [{"name": "t", "address": "DB1.DBD4", "type": "real"}]},
    {"id": "e", "protocol": "enip", "host": "plc", "route": "bp/1/enet/10.0.0.9/bp/0",
     "tags": [{"name": "t", "tag": "Motor.Speed", "type": "real"}]},
    {"id": "q", "protocol": "mqtt", "host": "broker", "tags": [{"name": "t", "topic": "a/+/b", "value": "$.v"}]},
]
for doc in docs:
    check_device({"enterprise": "e", "site": "s", "area": "a", "line": "l", **doc})
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
"""


def test_gateway_core_validates_every_protocol_without_loading_a_protocol_library() -> None:
    """Run in a fresh interpreter: the suite itself has loaded every library by now."""
    out = subprocess.run([sys.executable, "-c", PLANT % (PROTOCOL_LIBRARIES,)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("protocol", ["modbus", "opcua", "s7", "enip", "mqtt"])
def test_every_protocol_folder_is_complete(protocol: str) -> None:
    """What a newcomer finds in every protocol's folder (as in Telegraf's plugins): its config keys,
    its driver, a README and a sample config that parses."""
    folder = ROOT / "gateway" / "drivers" / protocol
    for name in ("__init__.py", "config.py", "driver.py", "README.md", "sample.toml"):
        assert (folder / name).is_file(), f"{folder / name} is missing"
    from gateway.config import load_plant
    plant = load_plant(folder / "sample.toml")
    assert plant.devices and all(d.protocol.startswith(protocol) for d in plant.devices)
