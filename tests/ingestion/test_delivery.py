"""No loss, no duplicates: ingestion killed with SIGKILL mid-stream; redelivery; dead letters."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as paho
import pytest

from proto import DevicePath, Point, batch_topic, encode_batch
from tests.support.daemons import ingestion_env
from tests.support.db import query, stored_points
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
T0 = 1_790_000_000_000


def publisher(port: int) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def message(i: int, points: int) -> bytes:
    return encode_batch([Point(f"tag{j}", float(i * points + j), T0 + i * 1000, 0, "degC") for j in range(points)],
                        seq=i)


def test_sigkill_mid_stream_loses_and_duplicates_nothing(broker, db, prefix, daemons) -> None:
    n_msgs, per = 400, 50
    # a bare publisher does not re-send what was not confirmed: this test keeps the worker's persistent
    # session (the broker queues for it while it is down), the mode for publishers without delivery acks
    env = ingestion_env(broker, db, prefix, NEXUS_INGESTION_BATCH_MAX_POINTS="1000",
                        NEXUS_INGESTION_SESSION_EXPIRY="86400")
    ing = daemons("ingestion", env)
    wait_for(lambda: "mqtt connected" in ing.output(), 20, what="ingestion connected")
    pub = publisher(broker.port)
    topic = batch_topic(DEVICE, prefix)

    def produce() -> None:
        for i in range(n_msgs):
            pub.publish(topic, message(i, per), qos=1).wait_for_publish(10)
            time.sleep(0.01)

    t = threading.Thread(target=produce)
    t.start()
    wait_for(lambda: stored_points(db) > 2000, 30, interval=0.02, what="first points stored")
    ing.kill()  # SIGKILL: no flush, no acks for the batch in progress
    killed_at = stored_points(db)
    time.sleep(1.0)  # messages keep arriving and queue in the broker for the persistent session
    ing2 = daemons("ingestion", env)
    t.join(60)
    pub.loop_stop()
    total = n_msgs * per
    wait_for(lambda: stored_points(db) >= total, 60, what=f"all {total} points stored\n{ing2.output()}")
    time.sleep(0.5)  # any late duplicate would show up now
    assert ing2.stop() == 0
    assert 0 < killed_at < total, "the kill did not happen mid-stream"
    count, distinct = query(db, "SELECT count(*), count(DISTINCT (tag_id, time)) FROM nexus.points")[0]
    assert count == total and distinct == total, (count, distinct)
    # and the values are the ones sent
    bad = query(db, """SELECT count(*) FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id
                       WHERE p.value <> ((extract(epoch FROM p.time) * 1000 - %s) / 1000) * %s
                                        + substr(t.tag, 4)::int""", (T0, per))[0][0]
    assert bad == 0


def test_redelivered_message_is_stored_once(broker, db, prefix, daemons) -> None:
    ing = daemons("ingestion", ingestion_env(broker, db, prefix))
    wait_for(lambda: "mqtt connected" in ing.output(), 20, what="ingestion connected")
    pub = publisher(broker.port)
    topic = batch_topic(DEVICE, prefix)
    payload = message(7, 20)
    for _ in range(3):  # a gateway replaying its buffer sends the very same bytes again
        pub.publish(topic, payload, qos=1).wait_for_publish(5)
    pub.publish(topic, message(8, 20), qos=1).wait_for_publish(5)
    wait_for(lambda: stored_points(db) >= 40, 20, what="points stored")
    time.sleep(0.5)
    assert ing.stop() == 0
    pub.loop_stop()
    assert stored_points(db) == 40
    assert query(db, "SELECT count(*) FROM nexus.ingested_messages")[0][0] == 2
    assert "redelivered message(s) skipped" in ing.output()


def test_malformed_payloads_go_to_dead_letters_and_good_ones_keep_flowing(broker, db, prefix, daemons) -> None:
    ing = daemons("ingestion", ingestion_env(broker, db, prefix))
    wait_for(lambda: "mqtt connected" in ing.output(), 20, what="ingestion connected")
    pub = publisher(broker.port)
    topic = batch_topic(DEVICE, prefix)
    bad = [
        (topic, b"\xff\xfe not json"),
        (topic, b'{"schema": 99, "points": []}'),
        (topic, b'{"schema": 1, "points": [{"tag": "a/b", "value": 1, "ts": 1}]}'),
        (topic, b'{"schema": 1, "points": [{"tag": "a", "value": [1], "ts": 1}]}'),
        (topic, b'{"schema": 1, "points": [{"tag": "a", "value": 1, "ts": "yesterday"}]}'),
        (topic, b'{"schema": 1, "points": [{"tag": "s", "value": "nul\\u0000inside", "ts": 1790000000000}]}'),
        (f"{prefix}/batch/v1/acme/too/short", message(1, 1)),
    ]
    for i in range(10):
        pub.publish(topic, message(i, 10), qos=1).wait_for_publish(5)
        if i < len(bad):
            pub.publish(bad[i][0], bad[i][1], qos=1).wait_for_publish(5)
    wait_for(lambda: stored_points(db) >= 100, 20, what="good points stored")
    wait_for(lambda: query(db, "SELECT count(*) FROM nexus.dead_letters")[0][0] >= len(bad), 20, what="dead letters")
    time.sleep(0.3)
    assert ing.proc is not None and ing.proc.poll() is None, "ingestion died on bad input"
    assert ing.stop() == 0
    pub.loop_stop()
    assert stored_points(db) == 100
    rows = query(db, "SELECT topic, payload, error FROM nexus.dead_letters ORDER BY id")
    assert [(r[0], bytes(r[1])) for r in rows] == bad
    errors = [r[2] for r in rows]
    assert "not JSON" in errors[0]
    assert "unsupported schema 99" in errors[1]
    assert "'/'" in errors[2]
    assert "'value' must be" in errors[3]
    assert "'ts' must be" in errors[4]
    assert "rejected by database" in errors[5]
    assert "has 3 levels, expected 5" in errors[6]
