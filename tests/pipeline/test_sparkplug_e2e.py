"""Sparkplug B end to end: simulated PLC → gateway process (edge node, and its JSON batches) → mosquitto →
ingestion worker processes (primary host, and the JSON path) → PostgreSQL.

The JSON path is the reference: it delivers every reading exactly once (spool, confirmation), so the Sparkplug
rows of the same tag must be the same (time, value) pairs. The counter tag ``n`` goes 1, 2, 3, ... per read."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest

from devtools.local import free_port
from gateway.config import load_plant
from gateway.drivers.modbus.simulator import SimulatedPlc
from proto.sparkplug import DataType, Metric, Payload, encode_payload
from tests.support.daemons import gateway_env, ingestion_env
from tests.support.db import query
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

PLANT = """[plant]
enterprise = "acme"
site = "berlin"
area = "a1"
line = "l1"

[[devices]]
id = "plc0"
port = {port}
interval_ms = {interval_ms}
  [[devices.tags]]
  name = "n"
  address = 0
  type = "uint32"
  [[devices.tags]]
  name = "level"
  address = 2
  type = "int16"
  unit = "mm"
  writable = true
  transform = {{ scale = 0.5 }}
"""

#: (time ms, value, status, reason) of tag n, by UNS enterprise (the JSON path's "acme", Sparkplug's the group)
ROWS = ("SELECT (extract(epoch FROM p.time) * 1000)::bigint, p.value, p.status, r.text FROM nexus.points p"
        " JOIN nexus.tags t ON t.id = p.tag_id LEFT JOIN nexus.reasons r ON r.id = p.reason_id"
        " WHERE t.enterprise = %s AND t.tag = %s ORDER BY p.time")


class Pipeline:
    def __init__(self, tmp_path: Path, broker: Any, db: str, prefix: str, daemons: Any, bg_loop: Any, *,
                 interval_ms: int = 50, primary_host: bool = True) -> None:
        self.broker, self.db, self.prefix, self.daemons, self.bg_loop = broker, db, prefix, daemons, bg_loop
        self.host_id = f"{prefix}-host"
        plant_file = tmp_path / "plant.toml"
        plant_file.write_text(PLANT.format(port=free_port(), interval_ms=interval_ms))
        self.plc = SimulatedPlc(load_plant(plant_file).devices[0], constants={"level": 84}, counters=frozenset({"n"}))
        bg_loop.run(self.plc.start())
        self.gateway_env = gateway_env(broker, plant_file, prefix, NEXUS_GATEWAY_SPARKPLUG_ENABLED="true",
                                       NEXUS_GATEWAY_SPARKPLUG_GROUP_ID=prefix,
                                       NEXUS_GATEWAY_SPARKPLUG_PRIMARY_HOST_ID=self.host_id if primary_host else "",
                                       # QoS 1 so that the broker does not drop DDATA to a slow host (QoS 0 may)
                                       NEXUS_GATEWAY_SPARKPLUG_DATA_QOS="1",
                                       # a killed worker's unconfirmed JSON batches are re-sent after 1 s
                                       NEXUS_GATEWAY_ACK_TIMEOUT_S="1")
        self.state: list[dict[str, Any]] = []
        self.sub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.sub.on_message = lambda c, u, m: self.state.append(orjson.loads(m.payload)) if m.payload else None
        self.sub.connect("127.0.0.1", broker.port)
        self.sub.subscribe(f"spBv1.0/STATE/{self.host_id}", qos=1)
        self.sub.loop_start()

    def worker(self, name: str) -> Any:
        env = ingestion_env(self.broker, self.db, self.prefix, name, NEXUS_INGESTION_SPARKPLUG_ENABLED="true",
                            NEXUS_INGESTION_SPARKPLUG_HOST_ID=self.host_id,
                            NEXUS_INGESTION_SPARKPLUG_GROUP_FILTER=self.prefix,
                            NEXUS_INGESTION_SPARKPLUG_TAKEOVER_INTERVAL="0.3")
        return self.daemons("ingestion", env, name=name)

    def host(self, name: str) -> Any:
        """A worker started and online as the primary host (its STATE seen)."""
        w = self.worker(name)
        wait_for(lambda: any(s.get("online") for s in self.state), 30, what=lambda: f"host online\n{w.output()}")
        return w

    def rows(self, enterprise: str, tag: str = "n") -> list[tuple[Any, ...]]:
        try:
            return query(self.db, ROWS, (enterprise, tag))
        except Exception:  # noqa: BLE001 - the schema is not there yet
            return []

    def json_rows(self) -> list[tuple[Any, ...]]:
        return self.rows("acme")

    def sparkplug_rows(self) -> list[tuple[Any, ...]]:
        return self.rows(self.prefix)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        c.connect("127.0.0.1", self.broker.port)
        c.loop_start()
        c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
        c.loop_stop()
        c.disconnect()

    def close(self) -> None:
        self.sub.loop_stop()
        self.sub.disconnect()
        self.bg_loop.run(self.plc.stop())
        self.publish(f"spBv1.0/STATE/{self.host_id}", b"", retain=True)  # no retained STATE left behind


def good(rows: list[tuple[Any, ...]]) -> list[tuple[int, float]]:
    return [(t, v) for t, v, status, _ in rows if status == 0]


def test_every_reading_once_through_the_host_going_offline_and_online(tmp_path: Path, broker: Any, db: str,
                                                                      prefix: str, daemons: Any,
                                                                      bg_loop: Any) -> None:
    """The primary host's will is delivered (offline STATE with its online timestamp) while the host still runs:
    the edge node sends NDEATH and waits; the host answers online again (its stale-will rule); the node is born
    again and sends what it read meanwhile as history. Both paths hold the same readings, exactly."""
    p = Pipeline(tmp_path, broker, db, prefix, daemons, bg_loop)
    try:
        ing = p.host("w1")
        gw = daemons("gateway", p.gateway_env)
        wait_for(lambda: len(good(p.sparkplug_rows())) >= 20, 30,
                 what=lambda: f"Sparkplug rows\n{gw.output()}\n{ing.output()}")
        online = next(s for s in reversed(p.state) if s.get("online"))
        p.publish(f"spBv1.0/STATE/{p.host_id}", orjson.dumps({"online": False, "timestamp": online["timestamp"]}),
                  retain=True)
        # the node's NDEATH: one BAD row per metric, then born again (the host re-published online)
        wait_for(lambda: any(r == "edge node offline" for _, _, _, r in p.sparkplug_rows()), 20,
                 what=lambda: f"the NDEATH's BAD rows\n{gw.output()}\n{ing.output()}")
        before = len(good(p.sparkplug_rows()))
        wait_for(lambda: len(good(p.sparkplug_rows())) >= before + 20, 30,
                 what=lambda: f"data after the rebirth\n{gw.output()}\n{ing.output()}")
        assert gw.stop() == 0  # JSON confirmed (the spool is empty), and the clean stop's NDEATH
        json_n = good(p.json_rows())
        wait_for(lambda: len(good(p.sparkplug_rows())) >= len(json_n), 20,
                 what=lambda: f"every Sparkplug row: {len(good(p.sparkplug_rows()))} of {len(json_n)}")
        assert ing.stop() == 0
    finally:
        p.close()
    json_n = good(p.json_rows())
    sp_rows = p.sparkplug_rows()
    sp_n = good(sp_rows)
    # the deterministic source: every reading of the counter, in order, once
    assert [v for _, v in json_n] == list(range(1, len(json_n) + 1))
    assert len(json_n) == len({t for t, _ in json_n}) == int(query(
        db, "SELECT count(*) FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id"
            " WHERE t.enterprise = 'acme' AND t.tag = 'n'")[0][0])
    # the Sparkplug path: the same (time, value) pairs exactly, and nothing else GOOD
    assert sp_n == json_n, (sorted(set(sp_n) ^ set(json_n)), len(sp_n), len(json_n))
    assert len(sp_n) == len({t for t, _ in sp_n})
    # two deaths: the offline STATE's NDEATH and the clean stop's, each a BAD row with the reason
    deaths = [r for r in sp_rows if r[2] != 0]
    assert len(deaths) == 2 and all(r[3] == "edge node offline" for r in deaths), deaths
    # the other tag went through the same rules on both paths (scale 0.5) and the unit came from the birth
    assert {v for _, v in good(p.rows(prefix, "level"))} == {42.0} == {v for _, v in good(p.rows("acme", "level"))}
    [(unit,)] = query(db, "SELECT DISTINCT unit FROM nexus.tags WHERE enterprise = %s AND tag = 'level'", (prefix,))
    assert unit == "mm"


def test_a_killed_host_is_taken_over_and_the_node_sends_its_history(tmp_path: Path, broker: Any, db: str,
                                                                     prefix: str, daemons: Any, bg_loop: Any) -> None:
    """SIGKILL of the hosting worker: the broker delivers its will (offline STATE), a second worker takes the
    host over and publishes online with a newer timestamp, the node is born again and sends its history.

    Not every reading can arrive here, by the Sparkplug rules themselves: DDATA the node published between the
    host's death and the node reading the will reach no subscriber (a host session is clean, 5.x), so a short
    run of readings around the kill may be missing from the Sparkplug rows. What is asserted exactly: the JSON
    path has every reading once; every Sparkplug row is one of them; at most one twice: the new host's birth
    carries the current value, which the killed host may have stored already (a new host cannot know what its
    predecessor committed; the same host leaves such a birth value out); what is missing is one
    contiguous run at the kill, at most the readings of 1 s (20 polls; the will reaches the node within
    milliseconds on one machine); and readings after it, including those held while no host was online, are
    all there."""
    p = Pipeline(tmp_path, broker, db, prefix, daemons, bg_loop)
    try:
        w1 = p.host("w1")
        w2 = p.worker("w2")
        gw = daemons("gateway", p.gateway_env)
        wait_for(lambda: len(good(p.sparkplug_rows())) >= 20, 30,
                 what=lambda: f"Sparkplug rows\n{gw.output()}\n{w1.output()}")
        first = next(s for s in p.state if s.get("online"))
        w1.kill()
        wait_for(lambda: any(s.get("online") and s["timestamp"] > first["timestamp"] for s in p.state), 20,
                 what=lambda: f"a new host online\n{w2.output()}")
        before = len(good(p.sparkplug_rows()))
        wait_for(lambda: len(good(p.sparkplug_rows())) >= before + 20, 30,
                 what=lambda: f"data after the takeover\n{gw.output()}\n{w2.output()}")
        time.sleep(0.5)
        assert gw.stop() == 0
        json_n = good(p.json_rows())
        wait_for(lambda: good(p.sparkplug_rows())[-1:] == json_n[-1:], 20, what="the last reading by Sparkplug")
        assert w2.stop() == 0
    finally:
        p.close()
    json_n = good(p.json_rows())
    sp_n = good(p.sparkplug_rows())
    assert [v for _, v in json_n] == list(range(1, len(json_n) + 1))
    assert len(sp_n) - len(set(sp_n)) <= 1 and set(sp_n) <= set(json_n)
    missing = sorted(int(v) for t, v in set(json_n) - set(sp_n))
    assert missing == list(range(missing[0], missing[0] + len(missing))) if missing else True, missing
    assert len(missing) <= 20, missing
    assert sp_n[-1] == json_n[-1]


def test_seq_wraps_a_dcmd_write_comes_back_and_a_killed_gateway_leaves_bad_rows(tmp_path: Path, broker: Any,
                                                                               db: str, prefix: str, daemons: Any,
                                                                               bg_loop: Any) -> None:
    """No primary host (the node is born at once). 300+ DDATA: seq wraps past 255 without the host seeing a gap
    (no rebirth asked) and every reading of the counter is stored once, in order; a DCMD writes the scaled tag
    through the gateway's write path and the value read back is stored; SIGKILL of the gateway: the broker
    delivers its NDEATH (the will) and the host stores BAD rows "edge node offline"."""
    p = Pipeline(tmp_path, broker, db, prefix, daemons, bg_loop, interval_ms=15, primary_host=False)
    try:
        ing = p.host("w1")
        gw = daemons("gateway", p.gateway_env)
        wait_for(lambda: len(good(p.sparkplug_rows())) >= 300, 60,
                 what=lambda: f"300 Sparkplug rows, got {len(good(p.sparkplug_rows()))}\n{gw.output()}")
        p.publish(f"spBv1.0/{prefix}/DCMD/{prefix}-gw/plc0",
                  encode_payload(Payload(timestamp=1, metrics=[Metric("level", DataType.DOUBLE, 21.5)])))
        wait_for(lambda: 21.5 in {v for _, v in good(p.rows(prefix, "level"))}, 20,
                 what=lambda: f"the written value stored\n{gw.output()}")
        assert p.plc.constants["level"] == 43  # raw = 21.5 / 0.5: the normalizer's inverse
        gw.kill()
        wait_for(lambda: any(r[3] == "edge node offline" for r in p.sparkplug_rows()), 20,
                 what=lambda: f"the will's BAD rows\n{ing.output()}")
        assert ing.stop() == 0
        log = ing.output()
    finally:
        p.close()
    rows = p.sparkplug_rows()
    n = good(rows)
    assert [v for _, v in n] == list(range(1, len(n) + 1)) and len(n) >= 300  # across the wrap, none lost
    assert len(n) == len({t for t, _ in n})
    assert "rebirth asked" not in log
    # BAD rows: the births before the first reading (born when assigned, so nothing read yet), and the will
    deaths = [r for r in rows if r[2] != 0 and r[3] != "no value read yet"]
    assert len(deaths) == 1 and deaths[0][3] == "edge node offline" and deaths[0][0] > n[-1][0]
    # The birth's "no value read yet" comes before the readings but for one: a reading already taken (stamped when
    # the PLC answered) and still on its way to the edge node when the device was born is a few ms older than it.
    assert all(r[0] < n[1][0] for r in rows if r[3] == "no value read yet")
    level = [r for r in p.rows(prefix, "level") if r[3] == "edge node offline"]
    assert len(level) == 1
