"""A worker survives any payload: poison messages interleaved with good ones from a bare publisher are
dead-lettered (counted exactly, bounded texts), good ones are stored exactly, memory stays bounded."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import psycopg
import pytest

from devtools.local import free_port
from ingestion.writer import MAX_ERROR_BYTES, OVERSIZE_PREFIX_BYTES
from proto import DevicePath, Point, ack_topic, batch_topic, decode_ack, encode_batch
from tests.support.daemons import http_get, ingestion_env
from tests.support.db import query
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
T0 = 1_790_000_000_000
PER = 10  # points per good message


def publisher(port: int) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def metric(port: int, name: str) -> float:
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def count(db: str, sql: str) -> int:
    try:
        return int(query(db, sql)[0][0])
    except psycopg.Error:  # schema not created yet
        return 0


def good(i: int, gateway: str) -> bytes:
    return encode_batch([Point(f"tag{j}", float(i * PER + j), T0 + i * 1000, 0, "degC") for j in range(PER)],
                        seq=i, gateway=gateway, run=7)


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class AckListener:
    """Collects the seqs ingestion confirms on a gateway's ack topic."""

    def __init__(self, port: int, topic: str) -> None:
        self.seqs: set[int] = set()
        self.runs: set[int] = set()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        ack = decode_ack(msg.payload)
        with self._lock:
            self.runs.add(ack.run)
            for first, last in ack.seqs:
                self.seqs.update(range(first, last + 1))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_poison_between_good_messages_is_dead_lettered_and_good_ones_stored_exactly(
        broker, db, prefix, daemons) -> None:
    ops = free_port()
    ing = daemons("ingestion", ingestion_env(broker, db, prefix, NEXUS_INGESTION_OPS_PORT=str(ops)))
    wait_for(lambda: http_get(ops, "/readyz")[0] == 200, 30, what=f"ingestion ready\n{ing.output()}")
    gw = f"{prefix}-gw"
    acks = AckListener(broker.port, ack_topic(gw, prefix))
    pub = publisher(broker.port)
    topic = batch_topic(DEVICE, prefix)
    big = "x" * 10_000_000
    ten_mb_everywhere = orjson.dumps({"schema": big, "gw": big, "run": big, "seq": big, "points": [
        {"tag": big, "value": big, "ts": big, "q": big, "unit": big, "reason": big}]})
    valid_but_oversize = encode_batch([Point(f"t{j}", float(j), T0, 0) for j in range(40_000)])
    assert len(valid_but_oversize) > 1024 * 1024
    point = '{"tag": "a", "value": 1, "ts": 1790000000000'
    # (payload, error type and text expected in nexus.dead_letters)
    poison: list[tuple[bytes, str]] = [
        (f'{{"schema": 1, "points": [{point}, "q": {nested(1000)}}}]}}'.encode(), "PayloadError: 'q' must be"),
        (f'{{"schema": 1, "points": [{{"tag": "a", "value": {nested(1000)}, "ts": 1}}]}}'.encode(),
         "PayloadError: tag 'a': 'value' must be"),
        (f'{{"schema": 1, "points": [{point}, "q": {nested(100_000)}}}]}}'.encode(), "PayloadError: not JSON"),
        (ten_mb_everywhere, f"MessageTooLarge: {len(ten_mb_everywhere)} bytes > max_message_bytes 1048576"),
        (valid_but_oversize, f"MessageTooLarge: {len(valid_but_oversize)} bytes"),
        (f'{{"schema": 1.0, "points": [{point}}}]}}'.encode(), "PayloadError: unsupported schema 1.0"),
        (f'{{"schema": true, "points": [{point}}}]}}'.encode(), "PayloadError: unsupported schema True"),
        # addressable dead letter: confirmed to its gateway like a stored message (else re-sent for ever)
        (f'{{"schema": 1.0, "gw": "{gw}", "run": 7, "seq": 1000, "points": []}}'.encode(),
         "PayloadError: unsupported schema 1.0"),
        (b"", "PayloadError: not JSON"),
        (b"\xff" * 5000, "PayloadError: not JSON"),
        (f'{{"schema": 1, "points": [{{"tag": "{"t" * 5000}", "value": 1, "ts": 1}}]}}'.encode(),
         "PayloadError: point 'tag'"),
    ]
    n_good = 30
    # the same (tag, ts) twice in one message: one row, the last value, counted
    twice = encode_batch([Point("dup", 1.0, T0, 0), Point("other", 5.0, T0, 0), Point("dup", 2.0, T0, 0)],
                         seq=n_good + 1, gateway=gw, run=7)
    for i in range(1, n_good + 1):
        pub.publish(topic, good(i, gw), qos=1).wait_for_publish(10)
        if i <= len(poison):
            pub.publish(topic, poison[i - 1][0], qos=1).wait_for_publish(30)
    pub.publish(topic, twice, qos=1).wait_for_publish(10)
    expected_points = n_good * PER + 2
    wait_for(lambda: count(db, "SELECT count(*) FROM nexus.points") >= expected_points, 60,
             what=f"good points stored\n{ing.output()}")
    wait_for(lambda: count(db, "SELECT count(*) FROM nexus.dead_letters") >= len(poison), 30, what="dead letters")
    # every good message and the addressable dead letter confirmed to the gateway
    wait_for(lambda: acks.seqs >= {*range(1, n_good + 2), 1000}, 20, what=f"acks (got {sorted(acks.seqs)})")
    assert ing.proc is not None and ing.proc.poll() is None, "ingestion died on bad input"
    status, body = http_get(ops, "/readyz")
    assert status == 200 and '"mqtt":true' in body and '"db":true' in body, body

    # exact: the points sent, each once, and each poison message once as a dead letter
    rows, distinct = query(db, "SELECT count(*), count(DISTINCT (tag_id, time)) FROM nexus.points")[0]
    assert rows == distinct == expected_points, (rows, distinct, expected_points)
    assert query(db, """SELECT p.value FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id
                        WHERE t.tag = 'dup'""") == [(2.0,)]
    bad = query(db, """SELECT count(*) FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id
                       WHERE t.tag LIKE 'tag%%' AND p.value <>
                             ((extract(epoch FROM p.time) * 1000 - %s) / 1000) * %s + substr(t.tag, 4)::int""",
                (T0, PER))[0][0]
    assert bad == 0
    dead = query(db, "SELECT payload, error, size, sha256 FROM nexus.dead_letters ORDER BY id")
    assert len(dead) == len(poison)
    for (payload, expect), (stored, error, size, sha256) in zip(poison, dead, strict=True):
        assert error.startswith(expect), (error[:200], expect)
        assert len(error.encode()) <= MAX_ERROR_BYTES
        assert size == len(payload) and bytes(sha256) == hashlib.sha256(payload).digest()
        if len(payload) > 1024 * 1024:
            assert bytes(stored) == payload[:OVERSIZE_PREFIX_BYTES]
            assert f"sha256 {hashlib.sha256(payload).hexdigest()}" in error
        else:
            assert bytes(stored) == payload  # byte for byte
    assert metric(ops, "nexus_ingest_dead_letters_total") == len(poison)
    assert metric(ops, "nexus_ingest_oversize_messages_total") == 2
    assert metric(ops, "nexus_ingest_duplicate_points_total") == 1
    assert metric(ops, "nexus_ingest_unexpected_errors_total") == 0
    assert metric(ops, "nexus_mqtt_callback_errors_total") == 0  # nothing reached the MQTT client
    assert metric(ops, "nexus_ingest_acks_unsent_total") == 0
    assert ing.stop() == 0
    pub.loop_stop()
    acks.close()
    log = ing.output()
    assert "Traceback" not in log
    assert max(len(line) for line in log.splitlines()) < 1000, "an unbounded log line"


def test_burst_of_large_bad_messages_keeps_memory_bounded(broker, db, prefix, daemons) -> None:
    ops = free_port()
    ing = daemons("ingestion", ingestion_env(broker, db, prefix, NEXUS_INGESTION_OPS_PORT=str(ops)))
    wait_for(lambda: http_get(ops, "/readyz")[0] == 200, 30, what=f"ingestion ready\n{ing.output()}")
    assert ing.proc is not None
    pid = ing.proc.pid
    pub = publisher(broker.port)
    topic = batch_topic(DEVICE, prefix)
    pub.publish(topic, good(1, f"{prefix}-gw"), qos=1).wait_for_publish(10)
    wait_for(lambda: count(db, "SELECT count(*) FROM nexus.points") == PER, 30, what="warm-up stored")
    baseline = status_kb(pid, "VmRSS")
    n, size = 30, 10_000_000
    for k in range(n):  # each a different 10 MB string value: not JSON-valid past the prefix, and oversize
        payload = b'{"schema": 1, "points": [{"tag": "a", "ts": 1, "value": "' + bytes([65 + k % 26]) * size
        pub.publish(topic, payload, qos=1).wait_for_publish(30)
    pub.publish(topic, good(2, f"{prefix}-gw"), qos=1).wait_for_publish(10)
    wait_for(lambda: count(db, "SELECT count(*) FROM nexus.dead_letters") == n, 60,
             what=f"{n} dead letters\n{ing.output()}")
    wait_for(lambda: count(db, "SELECT count(*) FROM nexus.points") == 2 * PER, 30, what="good message after")
    peak, now = status_kb(pid, "VmHWM"), status_kb(pid, "VmRSS")
    # What one 10 MB message must cost while it is read: paho assembles the packet in a bytearray (10 MB)
    # and decodes the PUBLISH with struct.unpack calls that each copy the rest (two live at a time: 20 MB),
    # then slices the payload (10 MB): ~40 MB for one message, measured 40-49 MB above the baseline here.
    # Nothing of it outlives the message but the 1 KiB prefix, and messages are read one at a time, so 30
    # of them cost no more than one: the bound is two messages' worth, 80 MB (allocator slack included).
    # Before (issue 8: dead letters held whole, uncounted) the same burst took the worker to 1.55 GB and it
    # kept 958 MB afterwards; now it keeps allocator slack only (measured +9..13 MB; bound 30 MB).
    figures = f"baseline {baseline // 1024} MB, peak {peak // 1024} MB, after {now // 1024} MB"
    print(figures)
    assert peak - baseline < 80 * 1024, figures
    assert now - baseline < 30 * 1024, figures
    assert query(db, "SELECT max(octet_length(payload)), max(octet_length(error)) <= %s, min(size), max(size)"
                     " FROM nexus.dead_letters", (MAX_ERROR_BYTES,))[0] == (
        OVERSIZE_PREFIX_BYTES, True, len(payload), len(payload))
    assert ing.stop() == 0
    pub.loop_stop()


def test_dead_letters_count_toward_the_pending_bytes_bound(broker, db, prefix, daemons) -> None:
    ops = free_port()
    env = ingestion_env(broker, db, prefix, NEXUS_INGESTION_OPS_PORT=str(ops),
                        NEXUS_INGESTION_BATCH_MAX_PENDING_BYTES=str(2 * 1024 * 1024))
    ing = daemons("ingestion", env)
    wait_for(lambda: http_get(ops, "/readyz")[0] == 200, 30, what=f"ingestion ready\n{ing.output()}")
    pub = publisher(broker.port)
    topic = batch_topic(DEVICE, prefix)
    # 40 bad messages of 900 KB: under max_message_bytes, so each is held whole until its commit
    bad = [b"not json " + bytes([65 + k % 26]) * 900_000 for k in range(40)]
    infos = [pub.publish(topic, p, qos=1) for p in bad]
    for info in infos:
        info.wait_for_publish(30)
    wait_for(lambda: count(db, "SELECT count(*) FROM nexus.dead_letters") == len(bad), 60,
             what=f"dead letters\n{ing.output()}")
    assert metric(ops, "nexus_ingest_read_pauses_total") >= 1  # 36 MB arrived against a 2 MiB bound
    wait_for(lambda: metric(ops, "nexus_ingest_pending_bytes") == 0, 10, what="pending bytes back to 0")
    stored = [bytes(r[0]) for r in query(db, "SELECT payload FROM nexus.dead_letters ORDER BY id")]
    assert stored == bad
    assert ing.stop() == 0
    pub.loop_stop()
