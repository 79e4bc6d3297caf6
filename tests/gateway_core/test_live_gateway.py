"""The live stream end to end: a simulated Modbus PLC, the real gateway (subprocess) publishing its retained
per-tag state topics to mosquitto, gateway_core's WebSocket: the value, a change, BAD with its reason while
the PLC is stopped, GOOD again when it is back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from devtools.local import free_port
from gateway.config import load_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from gateway_core.settings import LiveSettings
from tests.gateway_core.test_live import socket, subscribe, values_until
from tests.support.core import run_service
from tests.support.daemons import gateway_env

pytestmark = pytest.mark.slow

PRESS = "acme/berlin/stamping/line-1/press-1"


def quality_of(path: str, quality: str, value: object = None) -> Any:
    def done(seen: dict[str, dict[str, Any]]) -> bool:
        s = seen.get(path)
        return s is not None and s.get("quality") == quality and (value is None or s.get("value") == value)
    return done


@pytest.mark.parametrize("tag_topics", ["true", "false"])
async def test_live_values_from_a_real_gateway(tmp_path: Path, db: str, broker: Any, prefix: str, daemons: Any,
                                               bg_loop: Any, tag_topics: str) -> None:
    """With or without the gateway's retained per-tag topics: the live stream's changes come from its batches."""
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(
        '[plant]\nenterprise = "acme"\nsite = "berlin"\narea = "stamping"\nline = "line-1"\n'
        f'[[devices]]\nid = "press-1"\nport = {free_port()}\ninterval_ms = 100\ntimeout_ms = 300\n'
        '[[devices.tags]]\nname = "temp"\ntable = "holding"\naddress = 0\ntype = "int16"\nunit = "degC"\n'
        'transform = { scale = 0.1 }\n'
    )
    plc = SimulatedPlc(load_plant(plant_file).devices[0], constants={"temp": 215})
    bg_loop.run(plc.start())
    gw = daemons("gateway", gateway_env(broker, plant_file, prefix, NEXUS_GATEWAY_TAG_TOPICS=tag_topics))
    try:
        live = LiveSettings(uns_prefix=prefix, topic_root=prefix)
        async with run_service(db, broker, prefix, live=live) as running, socket(running) as ws:
            assert (await subscribe(ws, PRESS))["type"] == "subscribed"
            temp = f"{PRESS}/temp"
            seen, _ = await values_until(ws, quality_of(temp, "good", 21.5), timeout=30)
            assert seen[temp]["unit"] == "degC" and seen[temp]["q"] == 0
            plc.constants["temp"] = 300
            await values_until(ws, quality_of(temp, "good", 30.0), timeout=10)

            bg_loop.run(plc.stop())
            seen, _ = await values_until(ws, quality_of(temp, "bad"), timeout=15)
            assert seen[temp]["reason"], seen[temp]
            assert seen[temp]["q"] >= 0x80000000
            bg_loop.run(plc.start())
            await values_until(ws, quality_of(temp, "good", 30.0), timeout=30)
            await ws.send(orjson.dumps({"type": "unsubscribe", "paths": [PRESS]}).decode())
    finally:
        bg_loop.run(plc.stop())
        assert gw.stop() == 0, gw.output()
