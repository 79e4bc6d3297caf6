"""Ingestion under database faults, counted exactly: PostgreSQL stopped mid-stream, SIGTERM while it is
down, SIGTERM while a table lock blocks the COPY. The worker exits within its drain deadline, leaves
what it did not commit unacknowledged, and every point is stored exactly once in the end.

The source is a publisher that follows the delivery contract (:mod:`proto.delivery`) as a gateway does:
each batch names (gateway, run, seq) and is sent again, byte for byte, until ingestion confirms its
commit on the gateway's ack topic. That is what makes a worker's default clean session safe (nothing
waits in the broker for a stopped worker), and what these tests rely on across worker restarts.
"""

from __future__ import annotations

import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest

from devtools.local import Postgres, free_port
from proto import DevicePath, Point, ack_topic, batch_topic, decode_ack, encode_batch
from tests.support.daemons import ingestion_env
from tests.support.db import query, stored_points
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

DEVICE = DevicePath("acme", "berlin", "stamping", "line-1", "press-1")
T0 = 1_790_000_000_000
PER = 20  # points per message
DRAIN_DEADLINE = 10.0  # ingestion's default drain_deadline
EXIT_SLACK = 1.5  # interpreter start-up is not in it, but its exit is: seconds allowed beyond the deadline


class ResendingPublisher:
    """A gateway's delivery loop in a few lines: batches ``1..n`` of one run, each kept until confirmed
    and sent again when no confirmation came within ``resend_after`` seconds."""

    def __init__(self, port: int, prefix: str, *, resend_after: float = 3.0) -> None:
        self.gateway = f"{prefix}-gw"
        self.run = 1_790_000_000_001
        self.topic = batch_topic(DEVICE, prefix)
        self.resend_after = resend_after
        self.sent_at: dict[int, float] = {}  # unconfirmed seq -> last sent
        self.confirmed: set[int] = set()
        self.resent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(100)
        self.client.on_message = self._on_ack
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(ack_topic(self.gateway, prefix), qos=1)
        assert subscribed.wait(10), "no SUBACK"
        self._threads = [threading.Thread(target=self._resend_loop, daemon=True)]
        self._threads[0].start()

    def payload(self, seq: int) -> bytes:
        return encode_batch([Point(f"tag{j}", float(seq * PER + j), T0 + seq * 1000, 0, "degC") for j in range(PER)],
                            seq=seq, gateway=self.gateway, run=self.run)

    def send(self, seq: int) -> None:
        with self._lock:
            if seq in self.confirmed:
                return
            self.sent_at[seq] = time.monotonic()
        self.client.publish(self.topic, self.payload(seq), qos=1)

    def stream(self, n: int, interval: float) -> threading.Thread:
        def produce() -> None:
            for seq in range(1, n + 1):
                if self._stop.is_set():
                    return
                self.send(seq)
                time.sleep(interval)
        t = threading.Thread(target=produce, daemon=True)
        t.start()
        self._threads.append(t)
        return t

    def _on_ack(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        ack = decode_ack(msg.payload)
        if ack.run != self.run:
            return
        with self._lock:
            for first, last in ack.seqs:
                for seq in range(first, last + 1):
                    self.confirmed.add(seq)
                    self.sent_at.pop(seq, None)

    def _resend_loop(self) -> None:
        while not self._stop.wait(0.5):
            now = time.monotonic()
            with self._lock:
                due = [s for s, at in self.sent_at.items() if now - at > self.resend_after]
            for seq in due:
                self.resent += 1
                self.send(seq)

    def all_confirmed(self, n: int) -> bool:
        with self._lock:
            return self.confirmed >= set(range(1, n + 1))

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def own_pg() -> Iterator[Postgres]:
    """A PostgreSQL cluster of this test's own: the test stops and starts it. Not under tmp_path: as root
    the server runs as nobody, and a pytest session starting meanwhile makes pytest's temp root 0700 again
    (a restart would then fail with "permission denied")."""
    with tempfile.TemporaryDirectory(prefix="nexus-test-pg-") as folder:
        pg = Postgres(Path(folder), free_port(), fast=True)
        pg.start()
        yield pg
        pg.stop()


@pytest.fixture
def source(broker, prefix) -> Iterator[ResendingPublisher]:
    pub = ResendingPublisher(broker.port, prefix)
    yield pub
    pub.close()


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def assert_exact(dsn: str, n: int) -> None:
    rows, distinct = query(dsn, "SELECT count(*), count(DISTINCT (tag_id, time)) FROM nexus.points")[0]
    assert rows == distinct == n * PER, (rows, distinct, n * PER)
    bad = query(dsn, """SELECT count(*) FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id WHERE p.value <>
                        ((extract(epoch FROM p.time) * 1000 - %s) / 1000) * %s + substr(t.tag, 4)::int""",
                (T0, PER))[0][0]
    assert bad == 0
    assert query(dsn, "SELECT count(*) FROM nexus.dead_letters")[0][0] == 0


def sigterm_and_time(daemon) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.output()
    t0 = time.monotonic()
    rc = daemon.stop(timeout=30)
    return rc, time.monotonic() - t0


def test_postgres_stopped_15s_mid_stream_then_restarted(own_pg, broker, prefix, source, daemons) -> None:
    dsn = own_pg.create_database("nexus")
    ops = free_port()
    ing = daemons("ingestion", ingestion_env(broker, dsn, prefix, NEXUS_INGESTION_OPS_PORT=str(ops)))
    wait_for(lambda: get(ops, "/readyz") == 200, 30, what=f"ingestion ready\n{ing.output()}")
    n = 1200  # 24,000 points over ~12 s
    source.stream(n, 0.01)
    wait_for(lambda: stored_points(dsn) >= 2000, 30, interval=0.02, what="first points stored")
    own_pg.stop()
    down_at = time.monotonic()
    wait_for(lambda: get(ops, "/readyz") == 503, 10, what="not ready while the database is down")
    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))  # the outage itself, not a wait for a result
    own_pg.start()
    wait_for(lambda: source.all_confirmed(n), 90, what=f"all {n} messages confirmed\n{ing.output()}")
    assert get(ops, "/readyz") == 200
    rc, took = sigterm_and_time(ing)
    assert rc == 0 and took < DRAIN_DEADLINE + EXIT_SLACK, (rc, took)
    assert_exact(dsn, n)
    assert "not committed" in ing.output()


def streaming(own_pg, broker, prefix, source, daemons, n: int, every_s: float):  # type: ignore[no-untyped-def]
    """A worker on a fresh database, ``n`` messages streaming from the re-sending source, the first
    points stored: (dsn, worker env, worker, producer thread)."""
    dsn = own_pg.create_database("nexus")
    env = ingestion_env(broker, dsn, prefix)
    ing = daemons("ingestion", env)
    wait_for(lambda: "mqtt connected" in ing.output(), 30, what=f"ingestion connected\n{ing.output()}")
    producer = source.stream(n, every_s)
    wait_for(lambda: stored_points(dsn) >= 1000, 30, interval=0.02, what="first points stored")
    return dsn, env, ing, producer


def test_sigterm_while_postgres_is_down_exits_within_deadline(own_pg, broker, prefix, source, daemons) -> None:
    n = 400
    dsn, env, ing, producer = streaming(own_pg, broker, prefix, source, daemons, n, 0.005)
    own_pg.stop()
    producer.join(30)  # the rest arrives while the database is down
    wait_for(lambda: "not committed" in ing.output(), 10, what="the worker saw the database go")
    rc, took = sigterm_and_time(ing)
    out = ing.output()
    assert rc == 0 and took < DRAIN_DEADLINE + EXIT_SLACK, (rc, took, out)
    assert "ingestion stopped after" in out and "left unacknowledged for redelivery" in out
    assert not source.all_confirmed(n)
    own_pg.start()
    ing2 = daemons("ingestion", env)  # unconfirmed batches are re-sent by the source to the new worker
    wait_for(lambda: source.all_confirmed(n), 90, what=f"all {n} messages confirmed\n{ing2.output()}")
    assert ing2.stop() == 0
    assert_exact(dsn, n)
    assert source.resent > 0


def test_sigterm_while_a_table_lock_blocks_the_copy(own_pg, broker, prefix, source, daemons) -> None:
    n = 400
    dsn, env, ing, producer = streaming(own_pg, broker, prefix, source, daemons, n, 0.01)
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE nexus.points IN ACCESS EXCLUSIVE MODE")  # held until the block ends
        locked_at = time.monotonic()
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'nexus.points'::regclass"
        wait_for(lambda: query(dsn, waiting)[0][0] > 0, 10, what="the worker's COPY waits for the lock")
        rc, took = sigterm_and_time(ing)
        out = ing.output()
        assert rc == 0 and took < DRAIN_DEADLINE + EXIT_SLACK, (rc, took, out)
        assert "left unacknowledged for redelivery" in out
        assert query(dsn, waiting)[0][0] == 0  # the stuck COPY was cancelled, not left behind
        time.sleep(max(0.0, 20 - (time.monotonic() - locked_at)))  # the 20 s lock itself
        locker.rollback()
    producer.join(30)
    ing2 = daemons("ingestion", env)
    wait_for(lambda: source.all_confirmed(n), 90, what=f"all {n} messages confirmed\n{ing2.output()}")
    assert ing2.stop() == 0
    assert_exact(dsn, n)


def test_sigterm_while_migrations_wait_for_another_worker(db, broker, prefix, daemons) -> None:
    # another worker migrating holds the advisory lock (ingestion/schema.py); ours waits in migrate()
    with psycopg.connect(db, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (0x6E657875,))
        ing = daemons("ingestion", ingestion_env(broker, db, prefix))
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        wait_for(lambda: query(db, waiting)[0][0] > 0, 20, what=f"migrations waiting\n{ing.output()}")
        rc, took = sigterm_and_time(ing)
        assert rc == 0 and took < 3, (rc, took, ing.output())
        assert query(db, waiting)[0][0] == 0
        assert "stopped before the historian was ready" in ing.output()


def test_statement_slower_than_query_timeout_is_cancelled_and_retried(own_pg, broker, prefix, source,
                                                                       daemons) -> None:
    dsn = own_pg.create_database("nexus")
    ing = daemons("ingestion", ingestion_env(broker, dsn, prefix, NEXUS_INGESTION_DB_QUERY_TIMEOUT="1.5"))
    wait_for(lambda: "mqtt connected" in ing.output(), 30, what=f"ingestion connected\n{ing.output()}")
    n = 300
    producer = source.stream(n, 0.01)
    wait_for(lambda: stored_points(dsn) >= 1000, 30, interval=0.02, what="first points stored")
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE nexus.points IN ACCESS EXCLUSIVE MODE")
        wait_for(lambda: "TimeoutError" in ing.output(), 10, what="a write timed out")
        locker.rollback()
    producer.join(30)
    wait_for(lambda: source.all_confirmed(n), 60, what=f"all {n} messages confirmed\n{ing.output()}")
    assert ing.stop() == 0
    assert_exact(dsn, n)
