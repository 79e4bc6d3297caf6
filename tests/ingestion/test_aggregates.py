"""Edge windows and alarm events through a real ingestion worker (mosquitto + PostgreSQL): stored
exactly (values, one row per window however often it is sent, one alarm row per raise with its clear,
whatever order the raise and the clear arrive in), confirmed to the gateway like batches, and a
malformed windows message kept as a dead letter and still confirmed."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import pytest

from devtools.local import free_port
from proto import DevicePath, Point, ack_topic, batch_topic, decode_ack, encode_batch
from proto.aggregates import AlarmEvent, Window, encode_events, encode_windows, events_topic, windows_topic
from tests.support.daemons import http_get, ingestion_env
from tests.support.db import query
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
PATH = DEVICE.path
T0 = 1_790_000_040_000  # a multiple of 60 s
RUN = 1_790_000_000_007
MINUTE = 60_000


def at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def metric(port: int, name: str) -> float:
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


class Gateway:
    """Publishes like a gateway (QoS 1, numbered messages) and collects the seqs confirmed on its ack topic."""

    def __init__(self, port: int, prefix: str) -> None:
        self.id = f"{prefix}-gw"
        self.prefix = prefix
        self.confirmed: set[int] = set()
        self.foreign_runs: set[int] = set()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_ack
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(ack_topic(self.id, prefix), qos=1)
        assert subscribed.wait(10), "no SUBACK"

    def _on_ack(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        ack = decode_ack(msg.payload)
        with self._lock:
            if ack.run != RUN:
                self.foreign_runs.add(ack.run)
            for first, last in ack.seqs:
                self.confirmed.update(range(first, last + 1))

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def windows(self, seq: int, windows: list[Window]) -> bytes:
        return encode_windows(windows, seq=seq, gateway=self.id, run=RUN)

    def events(self, seq: int, events: list[AlarmEvent]) -> bytes:
        return encode_events(events, seq=seq, gateway=self.id, run=RUN)

    def send_confirmed(self, seq: int, topic: str, payload: bytes, times: int = 1) -> None:
        """Publish (``times`` times, the same bytes, as a re-sending gateway does) and wait for the ack."""
        for _ in range(times):
            self.publish(topic, payload)
        wait_for(lambda: seq in self.confirmed, 20, interval=0.02, what=f"ack of seq {seq}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def worker(broker: Any, db: str, prefix: str, daemons: Any) -> Any:
    ops = free_port()
    ing = daemons("ingestion", ingestion_env(broker, db, prefix, NEXUS_INGESTION_OPS_PORT=str(ops)))
    wait_for(lambda: http_get(ops, "/readyz")[0] == 200, 30, what=f"ingestion ready\n{ing.output()}")
    ing.ops = ops
    return ing


@pytest.fixture
def gateway(broker: Any, prefix: str) -> Any:
    gw = Gateway(broker.port, prefix)
    yield gw
    gw.close()


def windows_rows(db: str) -> list[tuple[Any, ...]]:
    return query(db, """SELECT t.tag, w.width_ms, w.start, w.count, w.min, w.max, w.avg, w.twa, w.first, w.last,
                               w.status, w.complete
                        FROM nexus.windows w JOIN nexus.tags t ON t.id = w.tag_id ORDER BY t.tag, w.start""")


def alarm_rows(db: str) -> list[tuple[Any, ...]]:
    return query(db, """SELECT t.tag, a.alarm, a.raised_at, a.cleared_at, a.active, a.raised_value, a.raised_limit,
                               a.severity, a.cleared_value
                        FROM nexus.alarms a JOIN nexus.tags t ON t.id = a.tag_id
                        ORDER BY t.tag, a.alarm, coalesce(a.raised_at, a.cleared_at)""")


def test_windows_and_alarms_are_stored_exactly_and_confirmed(worker: Any, gateway: Gateway, db: str,
                                                            prefix: str) -> None:
    wt, et = windows_topic(DEVICE, prefix), events_topic(DEVICE, prefix)
    first = [Window("temp", T0, MINUTE, 60, 20.5, 21.5, 21.0, 21.02, 20.5, 21.5),
             Window("temp", T0 + MINUTE, MINUTE, 58, 21.0, 22.0, 21.4, 21.5, 21.5, 22.0, 0x40000000),
             Window("state", T0, MINUTE, 3, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, False)]
    # sent three times (a gateway re-sending unconfirmed bytes): stored once
    gateway.send_confirmed(1, wt, gateway.windows(1, first), times=3)
    # a recomputed complete window replaces the stored one; an incomplete one never replaces a complete one
    gateway.send_confirmed(2, wt, gateway.windows(2, [
        Window("temp", T0, MINUTE, 61, 20.0, 21.5, 20.9, 20.95, 20.0, 21.5),
        Window("temp", T0 + MINUTE, MINUTE, 10, 0.0, 1.0, 0.5, 0.5, 0.0, 1.0, 0, False)]))
    # points of the same device go in beside them, with the same tag ids
    gateway.send_confirmed(3, batch_topic(DEVICE, prefix),
                           encode_batch([Point("temp", 21.7, T0 + 2 * MINUTE, 0, "degC")], seq=3, gateway=gateway.id,
                                        run=RUN))
    raise_high = AlarmEvent("temp", "high", T0 + 5_000, True, 91.0, 90.0, 700)
    gateway.send_confirmed(4, et, gateway.events(4, [raise_high]))
    gateway.send_confirmed(5, et, gateway.events(5, [
        AlarmEvent("temp", "high", T0 + 65_000, False, 85.0, 90.0, 700),
        AlarmEvent("pressure", "low", T0 + 1_000, False, 5.0, 2.0, 300),  # a clear without its raise
        AlarmEvent("temp", "low", T0 + 70_000, True, None, None, 500)]))
    # the raise again, in another message (a different digest): the event is already stored
    gateway.send_confirmed(6, et, gateway.events(6, [raise_high]))
    # a clear arriving before its raise (a re-sent message overtaken): one row with both times all the same
    gateway.send_confirmed(7, et, gateway.events(7, [AlarmEvent("level", "stuck", T0 + 30_000, False, 4.0, 60.0, 200)]))
    gateway.send_confirmed(8, et, gateway.events(8, [AlarmEvent("level", "stuck", T0 + 10_000, True, 4.0, 60.0, 200)]))
    # malformed: a start that is not a multiple of its width; dead-lettered and confirmed all the same
    bad = (f'{{"schema":1,"gw":"{gateway.id}","run":{RUN},"seq":9,"windows":[{{"tag":"temp","start":{T0 + 1},'
           f'"width":{MINUTE},"count":1,"min":1,"max":1,"avg":1,"twa":1,"first":1,"last":1,"q":0,"complete":true}}]}}'
           ).encode()
    gateway.send_confirmed(9, wt, bad)
    # not addressable (too short a topic, no gw): a dead letter, nothing to confirm
    short = f"{prefix}/windows/v1/acme/berlin"
    gateway.publish(short, encode_windows(first))
    wait_for(lambda: len(query(db, "SELECT 1 FROM nexus.dead_letters")) >= 2, 20, what="dead letters")

    assert gateway.confirmed == set(range(1, 10)) and not gateway.foreign_runs
    assert windows_rows(db) == [
        ("state", MINUTE, at(T0), 3, None, None, None, None, None, None, 0, False),
        ("temp", MINUTE, at(T0), 61, 20.0, 21.5, 20.9, 20.95, 20.0, 21.5, 0, True),
        ("temp", MINUTE, at(T0 + MINUTE), 58, 21.0, 22.0, 21.4, 21.5, 21.5, 22.0, 0x40000000, True),
    ]
    assert alarm_rows(db) == [
        ("level", "stuck", at(T0 + 10_000), at(T0 + 30_000), False, 4.0, 60.0, 200, 4.0),
        ("pressure", "low", None, at(T0 + 1_000), False, None, None, None, 5.0),
        ("temp", "high", at(T0 + 5_000), at(T0 + 65_000), False, 91.0, 90.0, 700, 85.0),
        ("temp", "low", at(T0 + 70_000), None, True, None, None, 500, None),
    ]
    assert query(db, "SELECT count(*) FROM nexus.alarm_events")[0][0] == 6
    # one tag row per tag, whichever stream named it first; the point's unit is kept
    assert query(db, "SELECT tag, unit FROM nexus.tags ORDER BY tag") == [
        ("level", None), ("pressure", None), ("state", None), ("temp", "degC")]
    assert query(db, """SELECT p.value FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id
                        WHERE t.path = %s""", (f"{PATH}/temp",)) == [(21.7,)]
    # messages stored once each: seqs 1..8 (seq 1 three times)
    assert query(db, "SELECT count(*) FROM nexus.ingested_messages")[0][0] == 8
    dead = query(db, "SELECT topic, payload, error FROM nexus.dead_letters ORDER BY id")
    assert [(t, bytes(p)) for t, p, _ in dead] == [(wt, bad), (short, encode_windows(first))]
    assert dead[0][2].startswith("PayloadError: window of 'temp': 'start'") and "not a multiple" in dead[0][2]
    assert "has 2 levels, expected 5" in dead[1][2]

    ops = worker.ops
    assert metric(ops, "nexus_ingest_windows_stored_total") == 4  # 3 inserted, 1 replaced
    assert metric(ops, "nexus_ingest_alarm_events_stored_total") == 6
    assert metric(ops, "nexus_ingest_alarm_events_repeated_total") == 1
    assert metric(ops, "nexus_ingest_points_stored_total") == 1
    assert metric(ops, "nexus_ingest_dead_letters_total") == 2
    assert metric(ops, "nexus_ingest_unexpected_errors_total") == 0
    assert worker.stop() == 0
    out = worker.output()
    assert "Traceback" not in out
    assert "1 points, 4 windows and 6 alarm events in 8 messages stored" in out


def test_mixed_streams_in_one_transaction_each_confirmed(worker: Any, gateway: Gateway, db: str,
                                                          prefix: str) -> None:
    """Windows, events and points published back to back (batched together by the worker): every seq
    confirmed, every row stored once."""
    wt, et, bt = windows_topic(DEVICE, prefix), events_topic(DEVICE, prefix), batch_topic(DEVICE, prefix)
    n = 30
    for seq in range(1, 3 * n + 1, 3):
        i = seq // 3
        gateway.publish(wt, gateway.windows(seq, [Window(f"t{j}", T0 + i * MINUTE, MINUTE, 60, 1.0, 2.0, 1.5, 1.5,
                                                         1.0, 2.0) for j in range(5)]))
        gateway.publish(et, gateway.events(seq + 1, [AlarmEvent("t0", "high", T0 + i * MINUTE, i % 2 == 0, 1.0,
                                                                0.5, 500)]))
        gateway.publish(bt, encode_batch([Point(f"t{j}", float(i), T0 + i * 1000, 0) for j in range(5)],
                                         seq=seq + 2, gateway=gateway.id, run=RUN))
    wait_for(lambda: gateway.confirmed >= set(range(1, 3 * n + 1)), 30, what="all seqs confirmed")
    assert query(db, "SELECT count(*), count(DISTINCT (tag_id, width_ms, start)) FROM nexus.windows")[0] == (5 * n,
                                                                                                            5 * n)
    assert query(db, "SELECT count(*) FROM nexus.alarm_events")[0][0] == n
    assert query(db, "SELECT count(*), count(DISTINCT (tag_id, time)) FROM nexus.points")[0] == (5 * n, 5 * n)
    # raise at even minutes, clear at odd ones: n/2 closed rows
    rows = query(db, "SELECT raised_at, cleared_at FROM nexus.alarms ORDER BY raised_at")
    assert rows == [(at(T0 + i * MINUTE), at(T0 + (i + 1) * MINUTE)) for i in range(0, n, 2)]
    assert worker.stop() == 0
