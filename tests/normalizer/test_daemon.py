"""The normalizer daemon (``python -m normalizer``) as a real subprocess on a real mosquitto: third-party
per-tag JSON and our batch format in, normalized batches, windows and alarm events out; dead letters;
no loss across kill -9; its ops endpoints and config errors."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest

from devtools.local import Mosquitto, free_port
from nexus.mqtt import Message, MqttError
from normalizer.daemon import Normalizer
from normalizer.outbox import Encoder, Outgoing
from normalizer.settings import Settings, overlap
from proto.aggregates import decode_events, decode_windows
from proto.delivery import decode_ack
from proto.points import MAX_BATCH_BYTES, Point, Status, decode_batch, encode_batch
from proto.uns import DevicePath, parse_batch_topic
from tests.support.daemons import Daemon, http_get
from tests.support.wait import until, wait_for

pytestmark = pytest.mark.slow

T0 = 1_790_000_000_000  #: a multiple of every window width used here
UNCERTAIN = int(Status.UNCERTAIN)
BOILER = "acme/berlin/utilities/boilers/boiler-1"
COMPRESSOR = "acme/berlin/utilities/compressors/compressor-1"
PUMP = "acme/berlin/utilities/pumps/pump-1"
PROBE = "acme/berlin/utilities/probe/probe-1"  #: not in any devices file: its tags pass through


class Recorder:
    """A plain MQTT subscriber (paho thread) keeping every message: (topic, payload)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self._lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5), "recorder did not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def under(self, head: str) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self.messages if t.startswith(head)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Rig:
    """One test's normalizer setup: its topics, a publisher, a recorder of everything it publishes."""

    def __init__(self, broker: Mosquitto, prefix: str, tmp_path: Path, devices: str, **extra: str) -> None:
        self.prefix = prefix
        self.in_root, self.in_prefix, self.out_root = f"{prefix}/raw", f"{prefix}/uns", prefix
        self.nid = f"{prefix}-nz"
        self.ops_port = free_port()
        (tmp_path / "devices.toml").write_text(devices)
        self.env = {
            "NEXUS_NORMALIZER_NORMALIZER_ID": self.nid,
            "NEXUS_NORMALIZER_DEVICES_FILE": str(tmp_path / "devices.toml"),
            "NEXUS_NORMALIZER_IN_ROOT": self.in_root,
            "NEXUS_NORMALIZER_IN_PREFIX": self.in_prefix,
            "NEXUS_NORMALIZER_OUT_ROOT": self.out_root,
            "NEXUS_NORMALIZER_SHARE_GROUP": f"{prefix}-nz",
            "NEXUS_NORMALIZER_MQTT_PORT": str(broker.port),
            "NEXUS_NORMALIZER_OPS_PORT": str(self.ops_port),
            "NEXUS_NORMALIZER_LOG_JSON": "false",
            **extra,
        }
        self.rec = Recorder(broker.port, [f"{prefix}/#"])
        self.pub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.pub.max_inflight_messages_set(200)
        self.pub.connect("127.0.0.1", broker.port)
        self.pub.loop_start()
        self._probes = 0

    def tag_topic(self, device: str, tag: str) -> str:
        return f"{self.in_prefix}/{device}/{tag}"

    def batch_in_topic(self, device: str) -> str:
        return f"{self.in_root}/batch/v1/{device}"

    def send(self, topic: str, payload: bytes) -> None:
        self.pub.publish(topic, payload, qos=1).wait_for_publish(10)

    def ready(self, daemon: Daemon) -> None:
        """Until a probe comes out: the daemon's subscriptions are in place (the broker drops what a shared
        subscription nobody holds yet would get)."""
        wait_for(lambda: http_get(self.ops_port, "/readyz")[0] == 200, 20, what=f"ready\n{daemon.output()}")

        def probed() -> bool:
            self._probes += 1
            self.send(self.tag_topic(PROBE, "probe"), orjson.dumps({"value": self._probes, "ts": T0}))
            return bool(self.points(PROBE))
        wait_for(probed, 20, interval=0.3, what=f"a probe through the normalizer\n{daemon.output()}")

    def batches(self, device: str) -> list[Any]:
        head = f"{self.out_root}/batch/v1/"
        return [decode_batch(p) for t, p in self.rec.under(head) if parse_batch_topic(t, self.out_root).path == device]

    def points(self, device: str) -> list[Point]:
        return [p for b in self.batches(device) for p in b.points]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(p) for _, p in self.rec.under(f"{self.out_root}/deadletter/v1/normalizer/{self.nid}")]

    def metric(self, name: str) -> float:
        body = http_get(self.ops_port, "/metrics")[1]
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(name) and not line.startswith("#"))

    def close(self) -> None:
        self.pub.loop_stop()
        self.pub.disconnect()
        self.rec.close()


@pytest.fixture
def rig(request: pytest.FixtureRequest, broker: Mosquitto, prefix: str, tmp_path: Path) -> Any:
    rigs: list[Rig] = []

    def make(devices: str, **extra: str) -> Rig:
        r = Rig(broker, prefix, tmp_path, devices, **extra)
        rigs.append(r)
        return r
    yield make
    for r in rigs:
        r.close()


BOILER_TOML = f"""
[[devices]]
path = "{BOILER}"
  [[devices.tags]]
  name = "temp"
  type = "float64"
  unit = "degC"
  transform = {{ from_unit = "degF" }}
  [[devices.tags]]
  name = "running"
  type = "bool"
"""


def test_third_party_fahrenheit_comes_out_in_celsius_uncertain_alike_unknown_tags_unchanged(rig, daemons) -> None:
    r = rig(BOILER_TOML)
    nz = daemons("normalizer", r.env)
    r.ready(nz)
    temp = r.tag_topic(BOILER, "temp")
    before = int(time.time() * 1000)
    r.send(temp, orjson.dumps({"value": 212, "ts": T0, "q": 0}))
    r.send(temp, orjson.dumps({"value": 32.0, "ts": T0 + 1000, "q": UNCERTAIN}))  # scaled like a GOOD one
    r.send(temp, orjson.dumps({"value": 50, "ts": T0 + 2000, "unit": "degF"}))  # its unit is the from_unit
    r.send(temp, b"-40")  # a bare number: GOOD, at the arrival time
    # two readings of a tag taken at the same arrival millisecond would be one (tag, ts): one at a time
    wait_for(lambda: len(r.points(BOILER)) == 4, 20, what=lambda: f"4 boiler points\n{nz.output()}")
    r.send(temp, orjson.dumps({"value": 98.6}))  # no ts: the arrival time
    r.send(r.tag_topic(BOILER, "running"), b"true")
    r.send(r.tag_topic(BOILER, "humidity"), orjson.dumps({"value": 55.5, "ts": T0, "unit": "%"}))  # not configured
    r.send(r.tag_topic(PROBE, "temp"), orjson.dumps({"value": 212, "ts": T0}))  # a device not configured
    r.send(temp, orjson.dumps({"value": 20, "ts": T0 + 3000, "unit": "degC"}))  # refused: not in degF
    r.send(temp, orjson.dumps({"value": "hot", "ts": T0 + 4000}))  # refused: a float64 tag
    wait_for(lambda: len(r.points(BOILER)) >= 7 and len(r.dead_letters()) >= 2, 20,
             what=lambda: f"boiler points and dead letters: {r.points(BOILER)}\n{nz.output()}")
    after = int(time.time() * 1000)
    by_tag: dict[str, list[Point]] = {}
    for p in r.points(BOILER):
        by_tag.setdefault(p.tag, []).append(p)
    temps = by_tag["temp"]
    assert [(p.ts, p.status, p.unit) for p in temps[:3]] == [(T0, 0, "degC"), (T0 + 1000, UNCERTAIN, "degC"),
                                                            (T0 + 2000, 0, "degC")]
    assert [p.value for p in temps] == [pytest.approx(v) for v in (100.0, 0.0, 10.0, -40.0, 37.0)]
    assert all(before <= p.ts <= after and p.status == 0 for p in temps[3:])
    assert [(p.value, p.status) for p in by_tag["running"]] == [(True, 0)]
    assert [(p.value, p.ts, p.unit) for p in by_tag["humidity"]] == [(55.5, T0, "%")]  # passed through unchanged
    assert [(p.value, p.ts, p.unit) for p in r.points(PROBE) if p.tag == "temp"] == [(212, T0, None)]
    assert sorted(d["kind"] for d in r.dead_letters()) == ["type", "unit"]
    # each output batch is numbered for end-to-end delivery: (gw=normalizer id, run, seq)
    delivery = [b.delivery for b in r.batches(BOILER)]
    assert all(d is not None and d[0] == r.nid for d in delivery)
    assert nz.stop() == 0
    out = nz.output()
    assert "normalizer stopped after" in out and "0 messages left unacknowledged" in out, out


COMPRESSOR_TOML = f"""
[[devices]]
path = "{COMPRESSOR}"
  [[devices.tags]]
  name = "pressure"
  type = "float64"
  unit = "psi"
  transform = {{ from_unit = "bar", deadband = 0.5 }}
  alarms = {{ high = 20.0 }}
  [[devices.tags]]
  name = "flow"
  type = "float64"
  unit = "m3/h"
  windows = ["1s"]
"""


def test_our_batch_format_in_deadband_windows_alarms_out_and_the_gateway_confirmed(rig, daemons) -> None:
    r = rig(COMPRESSOR_TOML)
    nz = daemons("normalizer", r.env)
    r.ready(nz)
    bars = [1.0, 1.01, 1.02, 1.1, 2.0]  # in psi: 14.50, 14.65, 14.79, 15.95, 29.01
    points = [Point("pressure", v, T0 + i * 250, 0, "bar") for i, v in enumerate(bars)]
    points += [Point("flow", float(i), T0 + i * 250) for i in range(9)]  # 4 readings a second, to T0 + 2 s
    r.send(r.batch_in_topic(COMPRESSOR), encode_batch(points, gateway="gw-7", run=5, seq=11))
    windows_head = f"{r.out_root}/windows/v1/{COMPRESSOR}"
    wait_for(lambda: r.rec.under(windows_head) and r.rec.under(f"{r.in_root}/ack/v1/gw-7"), 20,
             what=lambda: f"windows and the confirmation\n{nz.output()}")
    out = r.points(COMPRESSOR)
    pressure = [p for p in out if p.tag == "pressure"]
    # the deadband: 5 readings in, 3 out (14.65 and 14.79 stayed within 0.5 psi of 14.50)
    assert [(p.ts, round(p.value, 2), p.unit) for p in pressure] == [
        (T0, 14.5, "psi"), (T0 + 750, 15.95, "psi"), (T0 + 1000, 29.01, "psi")]
    assert [p.value for p in out if p.tag == "flow"] == [float(i) for i in range(9)]
    windows = [w for _, pl in r.rec.under(windows_head) for w in decode_windows(pl).windows]
    assert [(w.tag, w.start, w.width, w.count, w.min, w.max, w.complete) for w in windows] == [
        ("flow", T0, 1000, 4, 0.0, 3.0, False),  # the first window was not seen from its start
        ("flow", T0 + 1000, 1000, 4, 4.0, 7.0, True)]
    events = [e for _, pl in r.rec.under(f"{r.out_root}/events/v1/{COMPRESSOR}") for e in decode_events(pl).events]
    assert [(e.tag, e.alarm, e.ts, e.active) for e in events] == [("pressure", "high", T0 + 1000, True)]
    acks = [decode_ack(p) for _, p in r.rec.under(f"{r.in_root}/ack/v1/gw-7")]
    assert [(a.run, a.seqs) for a in acks] == [(5, ((11, 11),))]
    assert nz.stop() == 0


def test_a_thousand_malformed_inputs_each_a_dead_letter_then_good_input_converted(rig, daemons) -> None:
    r = rig(BOILER_TOML, NEXUS_NORMALIZER_MAX_MESSAGE_BYTES=str(512 * 1024))
    nz = daemons("normalizer", r.env)
    r.ready(nz)
    temp = r.tag_topic(BOILER, "temp")
    good_batch = encode_batch([Point("temp", 1.0, T0)])
    kinds = [  # (topic, payload, the dead letter's kind)
        (temp, b"not json", "payload"),
        (temp, b'{"value": 1, "ts": "yesterday"}', "payload"),
        (temp, b"null", "payload"),
        (temp, b"[1, 2, 3]", "payload"),
        (temp, b'{"value": true, "ts": 1}', "type"),
        (temp, b'{"value": 1.5, "ts": 1, "unit": "K"}', "unit"),
        (r.batch_in_topic(BOILER), b'{"schema": 2, "points": []}', "payload"),
        (f"{r.in_root}/batch/v1/acme/berlin/too-short", good_batch, "topic"),
    ]
    sent: Counter[str] = Counter()
    oversize = b'{"value": "' + b"x" * (600 * 1024) + b'"}'
    r.send(temp, oversize)
    sent["oversize"] += 1
    for i in range(999):
        topic, payload, kind = kinds[i % len(kinds)]
        r.pub.publish(topic, payload, qos=1)
        sent[kind] += 1
    for i in range(100):
        r.pub.publish(temp, orjson.dumps({"value": 32 + 1.8 * i, "ts": T0 + i * 1000}), qos=1)
    wait_for(lambda: len([p for p in r.points(BOILER) if p.tag == "temp"]) >= 100, 30,
             what=lambda: f"100 good points after the malformed ones\n{nz.output()}")
    wait_for(lambda: len(r.dead_letters()) >= 1000, 10, what="1000 dead letters")
    time.sleep(0.3)  # any extra dead letter or point would show up now
    letters = r.dead_letters()
    assert len(letters) == 1000 and Counter(d["kind"] for d in letters) == sent
    temps = [p for p in r.points(BOILER) if p.tag == "temp"]
    assert [(p.ts, round(p.value, 6)) for p in temps] == [(T0 + i * 1000, float(i)) for i in range(100)]
    # a dead letter keeps what is needed to look into it, and a bounded part of the payload
    first = next(d for d in letters if d["kind"] == "payload" and d["size"] == 8)
    assert first["topic"] == temp and base64.b64decode(first["payload"]) == b"not json" and first["reason"]
    big = next(d for d in letters if d["kind"] == "oversize")
    assert big["size"] == len(oversize) and big["truncated"] and len(base64.b64decode(big["payload"])) == 65536
    assert r.metric("nexus_normalizer_dead_letters_total") == 1000
    assert r.metric('nexus_normalizer_messages_out_total{stream="deadletter"}') == 1000
    assert r.metric("nexus_normalizer_inflight_messages") == 0
    assert nz.stop() == 0
    logged = nz.log.read_text().count("dead letter (")
    assert 0 < logged <= 30, f"{logged} dead-letter log lines: the log is not bounded"


PUMP_TOML = f"""
[[devices]]
path = "{PUMP}"
  [[devices.tags]]
  name = "speed"
  type = "float64"
  unit = "rpm"
  transform = {{ scale = 0.5 }}
"""


def test_kill_9_mid_stream_every_input_point_comes_out_at_least_once(rig, daemons) -> None:
    # The session outlives the process (session_expiry, the default 1 day, and the same normalizer id):
    # what is not acknowledged when it dies, and what arrives while it is down, waits in the broker.
    # a linger of 200 ms keeps input unacknowledged at any time: the kill finds messages in flight
    r = rig(PUMP_TOML, NEXUS_NORMALIZER_MAX_PENDING="500", NEXUS_NORMALIZER_LINGER_MS="200")
    nz = daemons("normalizer", r.env, name="normalizer-a")
    r.ready(nz)
    n = 3000
    topic = r.tag_topic(PUMP, "speed")

    def produce() -> None:
        for i in range(n):
            r.pub.publish(topic, orjson.dumps({"value": float(i), "ts": T0 + i}), qos=1).wait_for_publish(10)
            if i % 10 == 0:
                time.sleep(0.005)

    t = threading.Thread(target=produce)
    t.start()
    wait_for(lambda: len(r.points(PUMP)) > 300 and r.metric("nexus_normalizer_inflight_messages") > 0, 30,
             interval=0.02, what=lambda: f"first points, and input in flight\n{nz.output()}")
    in_flight = r.metric("nexus_normalizer_inflight_messages")
    nz.kill()  # SIGKILL: buffers, unPUBACKed output and unacknowledged input die with it
    killed_at = len({p.ts for p in r.points(PUMP)})
    time.sleep(0.5)  # input keeps arriving and queues in the broker for the session
    nz2 = daemons("normalizer", r.env, name="normalizer-b")
    t.join(60)
    wait_for(lambda: len({p.ts for p in r.points(PUMP)}) >= n, 60,
             what=lambda: f"all {n} points out ({len({p.ts for p in r.points(PUMP)})})\n{nz2.output()}")
    time.sleep(0.5)  # a late duplicate would show up now
    assert nz2.stop() == 0
    assert 0 < killed_at < n, "the kill did not happen mid-stream"
    assert "session present: True" in nz2.log.read_text()  # the restart resumed the input session
    out = r.points(PUMP)
    distinct = {(p.tag, p.ts) for p in out}
    assert distinct == {("speed", T0 + i) for i in range(n)}
    assert all(p.value == (p.ts - T0) * 0.5 and p.unit == "rpm" for p in out)
    # Duplicates are allowed, and expected around the kill: an input is acknowledged only after its output
    # was PUBACKed, so a crash between the two (output published, ack not yet sent) redelivers the input and
    # it is normalized and published again. Ingestion stores each (tag, ts) once.
    duplicates = len(out) - len(distinct)
    print(f"kill -9 after {killed_at} of {n} points, about {in_flight:.0f} input messages in flight: "
          f"{duplicates} duplicate points on the output")
    assert duplicates >= 0


def test_ops_endpoints(rig, daemons) -> None:
    r = rig(BOILER_TOML)
    nz = daemons("normalizer", r.env)
    r.ready(nz)
    assert http_get(r.ops_port, "/healthz") == (200, "ok\n")
    status, body = http_get(r.ops_port, "/readyz")
    assert status == 200 and '"mqtt":true' in body and '"mqtt_out":true' in body
    body = http_get(r.ops_port, "/metrics")[1]
    for name in ("nexus_normalizer_messages_in_total", "nexus_normalizer_messages_out_total",
                 "nexus_normalizer_points_in_total", "nexus_normalizer_points_out_total",
                 "nexus_normalizer_dead_letters_total", "nexus_normalizer_inflight_messages", "nexus_mqtt_reconnects"):
        assert name in body, name
    assert r.metric("nexus_normalizer_points_out_total") >= 1  # the probe
    assert nz.stop() == 0


@pytest.mark.parametrize(("devices", "field"), [
    (BOILER_TOML.replace('  type = "float64"\n', ""), "devices[0].tags[0].type"),
    (BOILER_TOML.replace('from_unit = "degF"', 'from_unit = "parsec"'), "devices[0].tags[0].transform.from_unit"),
    (BOILER_TOML.replace('name = "running"', 'name = "running"\n  windows = ["1.5s"]'),
     "devices[0].tags[1].windows[0]"),
    (BOILER_TOML.replace(f'path = "{BOILER}"', 'path = "acme/berlin"'), "devices[0].path"),
    (BOILER_TOML + BOILER_TOML, "devices[1].path"),
])
def test_a_bad_devices_file_stops_the_start_naming_the_field(rig, daemons, devices: str, field: str) -> None:
    r = rig(devices)
    nz = daemons("normalizer", r.env)
    assert nz.proc is not None and nz.proc.wait(20) == 2
    assert f"refused: {field}: " in nz.output(), nz.output()


def test_output_that_would_be_read_back_as_input_is_refused(rig, daemons) -> None:
    r = rig(BOILER_TOML)
    nz = daemons("normalizer", {**r.env, "NEXUS_NORMALIZER_OUT_ROOT": r.in_root})
    assert nz.proc is not None and nz.proc.wait(20) == 2
    assert "setting out_root: output topics" in nz.output() and "read back as input" in nz.output()



# --- the pure parts: topic overlap, numbering and splitting --------------------------------------------

@pytest.mark.parametrize(("a", "b", "both"), [
    ("raw/batch/v1/#", "raw/batch/v1/+/+/+/+/+", True),
    ("raw/batch/v1/#", "nexus/batch/v1/+/+/+/+/+", False),
    ("+/+/+/+/+/+", "x/y/deadletter/v1/normalizer/n1", True),  # an empty in_prefix reads 6-level topics
    ("+/+/+/+/+/+", "nexus/deadletter/v1/normalizer/n1", False),
    ("raw/#", "raw", True),  # '#' matches its parent level too
    ("raw/uns/+/+/+/+/+/+", "raw/batch/v1/+/+/+/+/+", False),
])
def test_filters_overlap(a: str, b: str, both: bool) -> None:
    assert overlap(a, b) is both and overlap(b, a) is both


def test_encoder_numbers_and_splits_and_each_message_holds_every_input() -> None:
    class Job:
        refs = 0

    o = Outgoing(DevicePath.parse(PUMP), 0.0)
    jobs = [Job(), Job(), Job()]
    for i, job in enumerate(jobs):  # three inputs of ~200 KB each: more than one message's bound together
        o.add([Point("recipe", "x" * 200_000, T0 + i)], [], [], job)
    assert [j.refs for j in jobs] == [1, 1, 1]  # held by the buffer
    enc = Encoder(gateway="nz", run=7, root="nexus", max_points=5000)
    pubs = enc.encode(o)
    assert len(pubs) > 1 and all(len(p.payload) <= MAX_BATCH_BYTES for p in pubs)
    assert [decode_batch(p.payload).delivery for p in pubs] == [("nz", 7, s) for s in range(1, len(pubs) + 1)]
    assert [pt.ts for p in pubs for pt in decode_batch(p.payload).points] == [T0, T0 + 1, T0 + 2]
    assert [j.refs for j in jobs] == [len(pubs)] * 3  # now held by each message instead


class FakeInput:
    """The input connection, as the normalizer uses it: acks and reading paused or not."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.paused = False

    def ack(self, msg: Message) -> None:
        self.acked.append(msg.mid)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class FakeOutput:
    """The output connection: every publish a future the test resolves (PUBACK) or fails."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, asyncio.Future[int]]] = []

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, fut))
        return fut


async def test_acks_follow_pubacks_in_arrival_order_and_backpressure_pauses_reading() -> None:
    settings = Settings(normalizer_id="nz", in_root="raw", in_prefix="raw/uns", out_root="nexus", max_pending=4,
                        linger_ms=1)
    nz = Normalizer(settings, {})
    inp, out = FakeInput(), FakeOutput()
    nz.mqtt, nz.out = inp, out  # type: ignore[assignment]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(nz.flush_loop(stop))
        for mid in range(1, 7):  # six devices: one output message each
            nz.on_message(Message(f"raw/uns/e/s/a/l/dev{mid}/t", b"1.5", 1, False, mid, 1))
        assert inp.paused  # 4 unacknowledged: reading stopped
        await until(lambda: len(out.sent) == 6, 5, what="six output messages")
        futs = [f for _, f in out.sent]
        futs[1].set_result(0)  # the second PUBACKed first: nothing acknowledged before the first is
        await asyncio.sleep(0)
        assert inp.acked == []
        futs[0].set_result(0)
        await asyncio.sleep(0)
        assert inp.acked == [1, 2] and inp.paused  # 4 left: above half of max_pending
        futs[2].set_exception(MqttError("refused", reason="quota exceeded", code=0x97))  # published again
        futs[3].set_result(0)
        await until(lambda: len(out.sent) == 7, 5, what="the refused message published again")
        assert inp.acked == [1, 2]
        out.sent[6][1].set_result(0)
        await asyncio.sleep(0)
        assert inp.acked == [1, 2, 3, 4] and not inp.paused  # 2 left: reading resumed
        futs[4].set_result(0)
        futs[5].set_result(0)
        stop.set()
    assert inp.acked == [1, 2, 3, 4, 5, 6] and nz.unacknowledged == 0
    assert [t for t, _ in out.sent[:6]] == [f"nexus/batch/v1/e/s/a/l/dev{mid}" for mid in range(1, 7)]
