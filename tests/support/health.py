"""Helpers of the device health tests: what the broker retains under the health topics, as a new
subscriber sees it."""

from __future__ import annotations

import paho.mqtt.client as paho

from proto.health import health_filter
from tests.support.core import Recorder
from tests.support.wait import wait_for


def retained_now(port: int, root: str, topics: list[str] | None = None) -> dict[str, bytes]:
    """The retained messages a new subscriber of ``topics`` (default: the health topics under ``root``) gets: a
    marker published after its SUBSCRIBE arrives after every retained message, so whatever came before it is all
    there is."""
    marker = f"{root}/test/marker"  # outside the health topics: gateway_core does not read it
    rec = Recorder(port, [*(topics or [health_filter(root)]), marker])
    try:
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        pub.publish(marker, b"end", qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        wait_for(lambda: any(t == marker for _, t, _, _ in rec.snapshot()), 5, what="the marker")
        return {t: p for _, t, p, retain in rec.snapshot() if retain and t != marker}
    finally:
        rec.close()
