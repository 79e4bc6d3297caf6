"""Helpers of the console's browser tests (tests/console): the real stack they run against — gateway_core as a
process serving the built console, a gateway in core mode polling a simulated Modbus PLC, an ingestion worker
storing its points, mosquitto and PostgreSQL — and Debian's chromium driven by Playwright (never a browser
Playwright downloads)."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.local import Mosquitto, Postgres, free_port
from gateway.config import load_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from gateway_core.console import DIST
from tests.support.daemons import Daemon, gateway_env, ingestion_env
from tests.support.loop import BackgroundLoop
from tests.support.wait import wait_for

CHROMIUM = Path("/usr/bin/chromium")
#: the flags of every browser the tests start: no network of its own (updates, sync, QUIC), no GPU, no sandbox
#: (the tests run as root in CI)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ADMIN_KEY = "console-test-admin-key-0123456789"
ADMIN_PASSWORD = "admin-password-for-tests"
ACCESS_TTL = 12  #: seconds an access token lives in the tests' gateway_core
PLACE = {"enterprise": "acme", "site": "berlin", "area": "stamping", "line": "line-1"}
PRESS = "acme/berlin/stamping/line-1/press-1"


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not installed (make deps installs Debian's chromium and chromium-driver)"
    return None


def press_doc(port: int) -> dict[str, Any]:
    """press-1 as the API takes it: a temperature the PLC keeps constant, a writable setpoint."""
    return {
        "id": "press-1", **PLACE, "protocol": "modbus_tcp", "host": "127.0.0.1", "port": port,
        "interval_ms": 200, "timeout_ms": 500,
        "tags": [
            {"name": "temp", "table": "holding", "address": 0, "type": "int16", "unit": "degC",
             "transform": {"scale": 0.1}},
            {"name": "setpoint", "table": "holding", "address": 10, "type": "int16", "writable": True},
        ],
    }


def plant_toml(doc: dict[str, Any]) -> str:
    """The same device as a plant file, for the simulator (which serves what a device config names)."""
    out = ["[plant]", *(f'{k} = "{v}"' for k, v in PLACE.items()),
           "[[devices]]", f'id = "{doc["id"]}"', f'port = {doc["port"]}']
    for t in doc["tags"]:
        out += ["[[devices.tags]]", f'name = "{t["name"]}"', f'table = "{t["table"]}"', f'address = {t["address"]}',
                f'type = "{t["type"]}"']
    return "\n".join(out) + "\n"


@dataclass
class Stack:
    url: str
    api: httpx.Client  # the REST API with the bootstrap admin key
    prefix: str
    plc: SimulatedPlc
    loop: BackgroundLoop
    daemons: list[Daemon] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(f"--- {d.module} ---\n{d.output()}" for d in self.daemons)

    def user(self, name: str, role: str, password: str) -> None:
        r = self.api.post("/api/v1/users", json={"name": name, "role": role, "password": password})
        assert r.status_code in (201, 409), r.text


def start_stack(tmp: Path, postgres: Postgres, broker: Mosquitto) -> Stack:
    """gateway_core (a process, on a fresh database) with the bootstrap admin user, a gateway in core mode and
    press-1 on a simulated PLC, created through the API and polled by that gateway."""
    if not (DIST / "index.html").is_file():
        raise AssertionError(f"the console is not built ({DIST}): run `make console`")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    root = f"$t/{prefix}"
    dsn = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    port = free_port()
    doc = press_doc(free_port())
    (tmp / "plant.toml").write_text(plant_toml(doc))
    loop = BackgroundLoop()
    plc = SimulatedPlc(load_plant(tmp / "plant.toml").devices[0], constants={"temp": 215, "setpoint": 0})
    loop.run(plc.start())
    core = Daemon("gateway_core", {
        "NEXUS_CORE_SERVICE_ID": prefix, "NEXUS_CORE_DB_DSN": dsn, "NEXUS_CORE_HTTP_PORT": str(port),
        "NEXUS_CORE_MQTT_PORT": str(broker.port), "NEXUS_CORE_CONTROL_ROOT": root,
        "NEXUS_CORE_ADMIN_KEY": ADMIN_KEY, "NEXUS_CORE_ADMIN_USER": "admin",
        "NEXUS_CORE_ADMIN_PASSWORD": ADMIN_PASSWORD, "NEXUS_CORE_LIVE_UNS_PREFIX": prefix,
        "NEXUS_CORE_LIVE_TOPIC_ROOT": prefix,
        "NEXUS_CORE_STARTUP_SETTLE": "0.2", "NEXUS_CORE_WRITE_TIMEOUT": "5",
        # short-lived access tokens: the console renews them while the tests run (ACCESS_TTL s)
        "NEXUS_CORE_AUTH_ACCESS_TTL": str(ACCESS_TTL),
        # cheaper hashes: logins are many here, and the machine is small
        "NEXUS_CORE_AUTH_ARGON2_MEMORY_KIB": "8192", "NEXUS_CORE_AUTH_ARGON2_TIME_COST": "1",
        "NEXUS_CORE_LOG_JSON": "false",
    }, tmp / "gateway_core.log")
    stack = Stack(f"http://127.0.0.1:{port}", httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                                             headers={"Authorization": f"Bearer {ADMIN_KEY}"}),
                  prefix, plc, loop, [core])
    core.start()

    def ready() -> bool:
        assert core.proc is not None and core.proc.poll() is None, core.output()
        try:
            return stack.api.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, what=lambda: f"gateway_core ready:\n{core.output()}")
    # ingestion stores what the gateway sends, for the trends (history API on the same database)
    ing = Daemon("ingestion", ingestion_env(broker, dsn, prefix), tmp / "ingestion.log")
    stack.daemons.append(ing)
    ing.start()
    gw = Daemon("gateway", gateway_env(broker, tmp / "plant.toml", prefix, NEXUS_GATEWAY_CONFIG_SOURCE="core",
                                       NEXUS_GATEWAY_CONTROL_ROOT=root, NEXUS_GATEWAY_HEARTBEAT_S="1"),
                tmp / "gateway.log")
    stack.daemons.append(gw)
    gw.start()
    r = stack.api.post("/api/v1/devices", json=doc)
    assert r.status_code == 201, r.text
    wait_for(lambda: stack.api.get("/api/v1/devices/press-1").json()["gateway"] is not None, 30,
             what=lambda: f"press-1 assigned to the gateway:\n{stack.logs()}")
    return stack


def stop_stack(stack: Stack) -> None:
    stack.api.close()
    errors = []
    for d in reversed(stack.daemons):
        code = d.stop()
        if code != 0:
            errors.append(f"{d.module} exited {code}:\n{d.output()}")
    stack.loop.run(stack.plc.stop())
    stack.loop.close()
    assert not errors, "\n".join(errors)


def browser_context(playwright: Any, user_data: Path) -> Any:
    """A fresh chromium profile in ``user_data`` (cookies and storage of its own)."""
    if user_data.exists():
        shutil.rmtree(user_data)
    return playwright.chromium.launch_persistent_context(
        str(user_data), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
        viewport={"width": 1280, "height": 860},
    )


def log_in(page: Any, stack: Stack, name: str = "admin", password: str = ADMIN_PASSWORD, path: str = "/") -> None:
    """Log in through the console's form, landing on ``path``."""
    from playwright.sync_api import expect

    page.goto(stack.url + path)
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".top .who")).to_contain_text(name)


def row(page: Any, path: str) -> Any:
    """The plant's or a device page's row of one tag."""
    return page.locator(f'tr[data-path="{path}"]')
