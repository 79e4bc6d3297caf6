"""The gateway's retained per-tag UNS topics against a real mosquitto restarted without persistence: a steady
tag's topic (its value never changes) is there again after the reconnect, with the tag's next reading."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from devtools.local import Mosquitto, free_port
from gateway.config import load_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from gateway.settings import Settings
from nexus.common import MqttSettings
from proto.points import decode_point
from tests.gateway.test_health import write_plant
from tests.support.gateway import serving
from tests.support.health import retained_now
from tests.support.wait import until

pytestmark = pytest.mark.slow


async def test_a_steady_tags_topic_is_published_again_after_a_broker_restart(tmp_path: Path, prefix: str,
                                                                              bg_loop: Any) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", free_port())
    broker.start()
    plant_file = write_plant(tmp_path)
    plant = load_plant(plant_file)
    root = f"$t/{prefix}"
    settings = Settings(gateway_id=f"{prefix}-gw", plant=str(plant_file), topic_root=prefix, uns_prefix=prefix,
                        control_root=root, tag_topics=True, delivery="broker", spool_dir="",
                        mqtt=MqttSettings(port=broker.port, reconnect_min=0.2, reconnect_max=1.0))
    plc = SimulatedPlc(plant.devices[0], constants={"temp": 215})
    bg_loop.run(plc.start())
    topic = f"{prefix}/acme/berlin/stamping/line-1/press-1/temp"

    def retained() -> Any:
        return asyncio.to_thread(lambda: retained_now(broker.port, root, [topic]).get(topic))

    try:
        async with serving(settings, plant) as gw:
            first = await until(retained, 15, what="the tag topic")
            assert decode_point(first, "temp").value == 215
            broker.stop()
            await until(lambda: not gw.mqtt.connected, 10, what="the gateway disconnected")
            broker.start()  # no persistence: nothing retained
            await until(lambda: gw.mqtt.connected, 15, what="the gateway connected again")
            again = await until(retained, 10, what="the tag topic again, its value unchanged")
            assert decode_point(again, "temp").value == 215
    finally:
        bg_loop.run(plc.stop())
        broker.stop()
