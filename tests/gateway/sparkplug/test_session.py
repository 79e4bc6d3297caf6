"""The edge node wired into a gateway, against a real mosquitto and simulated Modbus PLCs: a recording subscriber
(a plain paho client on the test's Sparkplug group) checks the broker's message order and decodes every message
with :func:`proto.sparkplug.decode_payload` (docs/sparkplug.md lists each rule with its section).

The gateway runs in the test's event loop (:class:`gateway.daemon.Gateway`, so a test can wait on its state), the
PLCs in the same loop; the SIGKILL test runs a real gateway process."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from devtools.local import Mosquitto, free_port
from gateway.config import PlantConfig, load_plant
from gateway.daemon import Gateway
from gateway.drivers.modbus.simulator import SimulatedPlc
from gateway.settings import Settings, SparkplugSettings
from nexus.common import MqttSettings
from nexus.settings import SettingsError, load
from proto.sparkplug import BDSEQ, REBIRTH, DataType, Metric, Payload, decode_payload, encode_payload
from proto.sparkplug.topics import encode_state
from tests.support.daemons import gateway_env
from tests.support.gateway import serving
from tests.support.wait import until, wait_for

pytestmark = pytest.mark.slow


def plant_text(ports: list[int], interval_ms: int) -> str:
    out = ['[plant]\nenterprise = "acme"\nsite = "berlin"\narea = "a1"\nline = "l1"\n']
    for i, port in enumerate(ports):
        out.append(f"""
[[devices]]
id = "plc{i}"
port = {port}
interval_ms = {interval_ms}
timeout_ms = 1000
breaker_failures = 1
  [[devices.tags]]
  name = "n"
  address = 0
  type = "uint32"
  [[devices.tags]]
  name = "setpoint"
  address = 2
  type = "float32"
  unit = "degC"
  writable = true
  transform = {{ min = 0, max = 250 }}
  [[devices.tags]]
  name = "level"
  address = 4
  type = "int16"
  writable = true
  transform = {{ scale = 0.1 }}
  [[devices.tags]]
  name = "speed"
  address = 5
  type = "uint16"
""")
    return "\n".join(out)


@dataclass
class Recorder:
    """Every message on the group's topics (and the primary host's STATE), in the broker's order."""

    port: int
    filters: list[str]
    got: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"rec-{uuid.uuid4().hex[:8]}",
                             protocol=paho.MQTTv5)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self._subscribed.set()
        self.c.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in self.filters])
        self.c.connect("127.0.0.1", self.port)
        self.c.loop_start()
        assert self._subscribed.wait(10), "recorder not subscribed"

    def _on_message(self, c: Any, u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.got.append((msg.topic, bytes(msg.payload)))

    def messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.got)

    def kinds(self) -> list[str]:
        """``NBIRTH``, ``DBIRTH/plc0``, ... (the topic after the group, without the edge node id)."""
        out = []
        for topic, _ in self.messages():
            parts = topic.split("/")
            out.append("STATE" if parts[1] == "STATE" else "/".join([parts[2], *parts[4:]]))
        return out

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Decoded:
    """The recorder's messages decoded, DATA by the datatypes its births declared (aliases)."""

    def __init__(self, messages: list[tuple[str, bytes]]) -> None:
        self.items: list[tuple[str, Payload | None]] = []
        declared: dict[int | str, DataType] = {}
        self.names: dict[tuple[str, int], str] = {}  # (device, alias) -> metric name
        for topic, payload in messages:
            parts = topic.split("/")
            if parts[1] == "STATE":
                self.items.append(("STATE", None))
                continue
            kind = "/".join([parts[2], *parts[4:]])
            p = decode_payload(payload, declared=declared)
            if parts[2] == "DBIRTH":
                for m in p.metrics:
                    assert m.alias is not None and m.name
                    declared[m.alias] = declared[m.name] = m.datatype  # by name too: the test's DCMD
                    self.names[(parts[4], m.alias)] = m.name
            self.items.append((kind, p))

    def of(self, kind: str) -> list[Payload]:
        return [p for k, p in self.items if k == kind and p is not None]

    def values(self, device: str, tag: str, *, historical: bool | None = None, births: bool = False) -> list[Any]:
        """The tag's values in the device's DDATA (and with ``births`` its DBIRTHs' values read), in order."""
        out = []
        for kind, p in self.items:
            if births and kind == f"DBIRTH/{device}" and p is not None:
                out += [m.value for m in p.metrics if m.name == tag and m.value is not None]
            if kind != f"DDATA/{device}" or p is None:
                continue
            for m in p.metrics:
                assert m.name is None and m.alias is not None  # DATA carries aliases alone
                if self.names[(device, m.alias)] == tag and (historical is None or m.is_historical == historical):
                    out.append(m.value)
        return out


@dataclass
class Running:
    gw: Gateway
    settings: Settings
    plcs: list[SimulatedPlc]
    rec: Recorder
    plant: PlantConfig

    @property
    def node(self) -> Any:
        assert self.gw.sparkplug is not None
        return self.gw.sparkplug.node

    def decoded(self) -> Decoded:
        return Decoded(self.rec.messages())

    def bdseq_file(self) -> int:
        return int((Path(self.settings.spool_dir) / self.settings.gateway_id / "sparkplug" / "bdseq").read_text())


@asynccontextmanager
async def gateway(tmp_path: Path, broker: Mosquitto, prefix: str, *, devices: int = 1, interval_ms: int = 50,
                  host: str = "") -> AsyncIterator[Running]:
    ports = [free_port() for _ in range(devices)]
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(plant_text(ports, interval_ms))
    plant = load_plant(plant_file)
    plcs = [SimulatedPlc(d, constants={"setpoint": 10.0, "level": 7, "speed": 5}, counters=frozenset({"n"}))
            for d in plant.devices]
    for plc in plcs:
        await plc.start()
    settings = Settings(gateway_id=f"{prefix}-gw", plant=str(plant_file), topic_root=prefix, uns_prefix=prefix,
                        control_root=f"$nexus/{prefix}", tag_topics=False, delivery="broker",
                        spool_dir=str(tmp_path / "spool"), mqtt=MqttSettings(port=broker.port),
                        sparkplug=SparkplugSettings(enabled=True, group_id=prefix, primary_host_id=host))
    filters = [f"spBv1.0/{prefix}/#"] + ([f"spBv1.0/STATE/{host}"] if host else [])
    rec = Recorder(broker.port, filters)
    try:
        async with serving(settings, plant) as gw:
            yield Running(gw, settings, plcs, rec, plant)
    finally:
        rec.close()
        for plc in plcs:
            await plc.stop()


class Client:
    """A plain paho client publishing NCMD, DCMD and STATE."""

    def __init__(self, port: int) -> None:
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"cmd-{uuid.uuid4().hex[:8]}",
                             protocol=paho.MQTTv5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def consecutive(values: list[Any]) -> bool:
    return values == list(range(1, len(values) + 1))


def count_of(rec: Recorder, kind: str) -> Callable[[], int]:
    return lambda: rec.kinds().count(kind)


async def test_births_then_ddata_by_alias_seq_wrapping_and_every_reading_once(tmp_path: Path, broker: Mosquitto,
                                                                             prefix: str) -> None:
    async with gateway(tmp_path, broker, prefix, devices=2, interval_ms=20) as r:
        # 300+ messages: seq wraps past 255
        await until(lambda: len(r.rec.messages()) >= 300, 30, what=lambda: f"300 messages, got {r.rec.kinds()[:5]}")
        bd_seq = r.bdseq_file()  # the will's (written before the CONNECT)
    d = r.decoded()
    kinds = [k for k, _ in d.items]
    assert kinds[:3] == ["NBIRTH", "DBIRTH/plc0", "DBIRTH/plc1"] or kinds[:3] == ["NBIRTH", "DBIRTH/plc1",
                                                                                  "DBIRTH/plc0"]
    nbirth = d.of("NBIRTH")[0]
    assert nbirth.seq == 0
    assert {m.name: m.value for m in nbirth.metrics} == {BDSEQ: bd_seq, REBIRTH: False}
    seqs = [p.seq for k, p in d.items if p is not None and k != "NDEATH"]  # an NDEATH has no seq
    assert all(b == (a + 1) % 256 for a, b in itertools.pairwise(seqs)) and 255 in seqs and seqs.count(0) >= 2
    dbirth = d.of("DBIRTH/plc0")[0]
    by_name = {m.name: m for m in dbirth.metrics}
    assert set(by_name) == {"n", "setpoint", "level", "speed"}
    assert (by_name["n"].datatype, by_name["setpoint"].datatype, by_name["level"].datatype,
            by_name["speed"].datatype) == (DataType.UINT32, DataType.FLOAT, DataType.DOUBLE, DataType.UINT16)
    assert by_name["setpoint"].properties["engUnit"].value == "degC"
    aliases = [m.alias for p in d.of("DBIRTH/plc0") + d.of("DBIRTH/plc1") for m in p.metrics]
    assert len(set(aliases)) == 8
    for dev in ("plc0", "plc1"):
        # every reading once: the counter's values read before the births come as history, then live; a reading
        # that came before its DBIRTH was built is in the birth, and left out of the history (so births=True: it
        # failed once on a loaded CI machine, the first value in the birth)
        n = d.values(dev, "n", births=True)
        assert consecutive(n), n[:20]
        assert len(n) >= 50
        assert set(d.values(dev, "speed")) == {5} and all(v == pytest.approx(0.7) for v in d.values(dev, "level"))
    # the clean stop: our NDEATH last, with the NBIRTH's bdSeq
    assert kinds[-1] == "NDEATH"
    assert [(m.name, m.value) for m in d.of("NDEATH")[0].metrics] == [(BDSEQ, bd_seq)]
    assert r.gw.sparkplug is not None and r.gw.sparkplug.dropped_queue == 0


async def test_ncmd_rebirth_sends_nbirth_and_every_dbirth_with_the_same_bdseq(tmp_path: Path, broker: Mosquitto,
                                                                              prefix: str) -> None:
    cmd = Client(broker.port)
    try:
        async with gateway(tmp_path, broker, prefix, devices=2, interval_ms=100) as r:
            await until(lambda: min(r.rec.kinds().count("DDATA/plc0"), r.rec.kinds().count("DDATA/plc1")) >= 2, 20,
                        what="DDATA of both devices")
            first = r.decoded()
            ncmd = encode_payload(Payload(timestamp=1, metrics=[Metric(REBIRTH, DataType.BOOLEAN, True)]))
            cmd.publish(f"spBv1.0/{prefix}/NCMD/{prefix}-gw", ncmd)
            await until(lambda: r.rec.kinds().count("DBIRTH/plc1") == 2 and r.rec.kinds().count("DBIRTH/plc0") == 2,
                        20, what="the births again")
            kinds = r.rec.kinds()
            again = kinds.index("NBIRTH", 1)
            assert sorted(kinds[again + 1:again + 3]) == ["DBIRTH/plc0", "DBIRTH/plc1"]
            d = r.decoded()
            n1, n2 = d.of("NBIRTH")
            assert n2.seq == 0 and [m.value for m in n2.metrics if m.name == BDSEQ] == \
                [m.value for m in n1.metrics if m.name == BDSEQ]
            for dev in ("plc0", "plc1"):
                b1, b2 = d.of(f"DBIRTH/{dev}")
                assert [(m.name, m.alias) for m in b1.metrics] == [(m.name, m.alias) for m in b2.metrics]
                assert next(m for m in b2.metrics if m.name == "n").value >= 2  # the current value
            assert len(first.of("NBIRTH")) == 1
    finally:
        cmd.close()


async def test_dcmd_writes_go_through_the_write_path_and_the_new_value_comes_back(tmp_path: Path,
                                                                                  broker: Mosquitto,
                                                                                  prefix: str) -> None:
    cmd = Client(broker.port)
    try:
        # one poll at the start, the next a minute later: what comes back in DDATA is the read-back
        async with gateway(tmp_path, broker, prefix, interval_ms=60_000) as r:
            await until(lambda: "DBIRTH/plc0" in r.rec.kinds() and r.decoded().values("plc0", "n", births=True), 20,
                        what="births and the first reading")
            d = r.decoded()
            alias = {name: a for (dev, a), name in d.names.items() if dev == "plc0"}
            topic = f"spBv1.0/{prefix}/DCMD/{prefix}-gw/plc0"

            def dcmd(*metrics: Metric) -> None:
                cmd.publish(topic, encode_payload(Payload(timestamp=1, metrics=list(metrics)), with_datatypes=False))

            before = r.rec.kinds().count("DDATA/plc0")
            dcmd(Metric(None, DataType.FLOAT, 123.5, alias=alias["setpoint"]), Metric("level", DataType.DOUBLE, -4.2))
            await until(lambda: r.rec.kinds().count("DDATA/plc0") >= before + 2, 10, what="values read back")
            assert r.plcs[0].constants["setpoint"] == 123.5
            assert r.plcs[0].constants["level"] == -42  # raw = engineering / scale: the normalizer's inverse
            d = r.decoded()
            assert d.values("plc0", "setpoint")[-1] == 123.5
            assert d.values("plc0", "level")[-1] == pytest.approx(-4.2)

            # refused (outside the range, read-only, not a bool): logged, the current value is sent again
            before = r.rec.kinds().count("DDATA/plc0")
            dcmd(Metric(None, DataType.FLOAT, 300.0, alias=alias["setpoint"]))
            dcmd(Metric(None, DataType.UINT16, 9, alias=alias["speed"]))
            await until(lambda: r.rec.kinds().count("DDATA/plc0") >= before + 2, 10, what="current values again")
            d = r.decoded()
            assert d.values("plc0", "setpoint")[-1] == 123.5 and d.values("plc0", "speed")[-1] == 5
            assert r.plcs[0].constants["setpoint"] == 123.5 and r.plcs[0].constants["speed"] == 5
            assert r.gw.sparkplug is not None
            assert (r.gw.sparkplug.writes_ok, r.gw.sparkplug.writes_refused) == (2, 2)
    finally:
        cmd.close()


async def test_primary_host_wait_offline_online_and_history(tmp_path: Path, broker: Mosquitto, prefix: str) -> None:
    host = f"{prefix}-host"
    state = f"spBv1.0/STATE/{host}"
    cmd = Client(broker.port)
    try:
        async with gateway(tmp_path, broker, prefix, interval_ms=50, host=host) as r:
            sp = r.gw.sparkplug
            assert sp is not None
            # connected, subscribed, reading: nothing is born before the host says online
            await until(lambda: sp.mqtt.connected and len(r.node.devices["plc0"].held) >= 4 * 20, 20,
                        what="points held while the host is away (4 tags a poll)")
            assert [k for k in r.rec.kinds() if k != "STATE"] == []
            bd1 = r.bdseq_file()
            cmd.publish(state, encode_state(True, 1000), retain=True)
            await until(lambda: r.rec.kinds().count("DDATA/plc0") >= 5, 20, what="births and data")
            kinds = [k for k in r.rec.kinds() if k != "STATE"]
            assert kinds[:3] == ["NBIRTH", "DBIRTH/plc0", "DDATA/plc0"]
            d = r.decoded()
            hist = d.values("plc0", "n", historical=True)
            assert len(hist) >= 19 and consecutive(hist)
            # the newest reading held is the birth's value, then live data goes on from there
            assert [m.value for m in d.of("DBIRTH/plc0")[0].metrics if m.name == "n"] == [len(hist) + 1]
            assert d.values("plc0", "n", historical=False)[0] == len(hist) + 2
            # an older STATE is ignored: still born, data goes on, no NDEATH
            cmd.publish(state, encode_state(False, 500), retain=True)
            mark = len(r.rec.messages())
            await until(lambda: r.rec.kinds()[mark:].count("DDATA/plc0") >= 3, 10, what="data after the old STATE")
            assert "NDEATH" not in r.rec.kinds()
            # offline: NDEATH with the session's bdSeq, a new session (bdSeq + 1) waiting for online
            cmd.publish(state, encode_state(False, 2000), retain=True)
            await until(lambda: "NDEATH" in r.rec.kinds(), 10, what="NDEATH")
            await until(lambda: r.bdseq_file() == (bd1 + 1) % 256 and sp.mqtt.connected and sp.node.connected
                        and len(r.node.devices["plc0"].held) >= 10, 20, what="a new session, points held")
            d = r.decoded()
            assert [(m.name, m.value) for m in d.of("NDEATH")[0].metrics] == [(BDSEQ, bd1)]
            assert r.rec.kinds()[-1] in ("NDEATH", "STATE")  # nothing born meanwhile
            cmd.publish(state, encode_state(True, 3000), retain=True)
            await until(lambda: r.decoded().of("NBIRTH")[1:] and r.rec.kinds().count("DDATA/plc0") >= 2
                        + len(d.of("DDATA/plc0")), 20, what="born again")
            d = r.decoded()
            assert [m.value for m in d.of("NBIRTH")[1].metrics if m.name == BDSEQ] == [(bd1 + 1) % 256]
            n = d.values("plc0", "n", births=True)
            assert consecutive(sorted(n))  # read while the host was away: came as history or birth; nothing lost
            assert any(d.values("plc0", "n", historical=True)[len(hist):])
    finally:
        cmd.publish(state, b"", retain=True)
        cmd.close()


async def test_device_down_ddeath_and_born_again(tmp_path: Path, broker: Mosquitto, prefix: str) -> None:
    async with gateway(tmp_path, broker, prefix, interval_ms=50) as r:
        await until(lambda: r.rec.kinds().count("DDATA/plc0") >= 3, 20, what="data")
        await r.plcs[0].stop()
        await until(lambda: "DDEATH/plc0" in r.rec.kinds(), 20, what="DDEATH")
        await r.plcs[0].start()
        await until(lambda: r.rec.kinds().count("DBIRTH/plc0") == 2, 20, what="DBIRTH again")
        kinds = r.rec.kinds()
        death = kinds.index("DDEATH/plc0")
        assert "DBIRTH/plc0" not in kinds[1:death] or kinds.count("DBIRTH/plc0") == 2
        assert kinds[death + 1:].count("DDEATH/plc0") == 0
        d = r.decoded()
        b1, b2 = d.of("DBIRTH/plc0")
        assert [(m.name, m.alias) for m in b1.metrics] == [(m.name, m.alias) for m in b2.metrics]
        assert next(m for m in b2.metrics if m.name == "speed").value == 5


def test_a_killed_gateway_process_leaves_its_will_and_a_restart_continues_bdseq(tmp_path: Path, broker: Mosquitto,
                                                                               prefix: str, daemons: Any,
                                                                               bg_loop: Any) -> None:
    port = free_port()
    plant_file = tmp_path / "plant.toml"
    plant_file.write_text(plant_text([port], 100))
    plc = SimulatedPlc(load_plant(plant_file).devices[0], constants={"setpoint": 1.0, "level": 0, "speed": 5})
    bg_loop.run(plc.start())
    rec = Recorder(broker.port, [f"spBv1.0/{prefix}/#"])
    env = gateway_env(broker, plant_file, prefix, NEXUS_GATEWAY_SPARKPLUG_ENABLED="true",
                      NEXUS_GATEWAY_SPARKPLUG_GROUP_ID=prefix, NEXUS_GATEWAY_DELIVERY="broker",
                      NEXUS_GATEWAY_CONTROL_ROOT=f"$nexus/{prefix}")

    def bdseqs(kind: str) -> list[int]:
        return [next(m.value for m in decode_payload(p).metrics if m.name == BDSEQ)
                for t, p in rec.messages() if t.split("/")[2] == kind]

    try:
        gw = daemons("gateway", env)
        wait_for(lambda: "DDATA/plc0" in rec.kinds(), 30, what=lambda: f"first DDATA\n{gw.output()}")
        [b0] = bdseqs("NBIRTH")
        gw.kill()
        wait_for(lambda: bdseqs("NDEATH"), 10, what="the will")
        assert bdseqs("NDEATH") == [b0]  # delivered by the broker: the NBIRTH's bdSeq
        gw = daemons("gateway", env)
        wait_for(lambda: len(bdseqs("NBIRTH")) == 2, 30, what=lambda: f"NBIRTH after the restart\n{gw.output()}")
        assert bdseqs("NBIRTH") == [b0, (b0 + 1) % 256]  # from disk: +1
        assert gw.stop() == 0
        wait_for(lambda: len(bdseqs("NDEATH")) == 2, 10, what="our NDEATH at the clean stop")
        assert bdseqs("NDEATH") == [b0, (b0 + 1) % 256]
        assert rec.kinds()[-1] == "NDEATH"
        assert "sparkplug:" in gw.output() and "0 points dropped (queue full)" in gw.output()
    finally:
        rec.close()
        bg_loop.run(plc.stop())


def test_settings_name_the_bad_field() -> None:
    env = {"NEXUS_GATEWAY_GATEWAY_ID": "gw", "NEXUS_GATEWAY_SPARKPLUG_ENABLED": "true"}
    with pytest.raises(SettingsError, match=r"sparkplug\.group_id"):
        load(Settings, env_prefix="NEXUS_GATEWAY", env=env)
    with pytest.raises(SettingsError, match=r"sparkplug\.data_qos"):
        load(Settings, env_prefix="NEXUS_GATEWAY", env={**env, "NEXUS_GATEWAY_SPARKPLUG_GROUP_ID": "g",
                                                         "NEXUS_GATEWAY_SPARKPLUG_DATA_QOS": "2"})
    with pytest.raises(SettingsError, match=r"sparkplug\.edge_node_id"):
        load(Settings, env_prefix="NEXUS_GATEWAY", env={**env, "NEXUS_GATEWAY_SPARKPLUG_GROUP_ID": "g",
                                                         "NEXUS_GATEWAY_SPARKPLUG_EDGE_NODE_ID": "a+b"})
    s = load(Settings, env_prefix="NEXUS_GATEWAY", env={**env, "NEXUS_GATEWAY_SPARKPLUG_GROUP_ID": "g"})
    assert (s.sparkplug.enabled, s.edge_node_id, s.sparkplug.data_qos, s.sparkplug.primary_host_id) == \
        (True, "gw", 0, "")

