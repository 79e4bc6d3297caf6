"""Ingestion throughput: points/s committed by ONE ingestion worker, next to raw binary COPY.

Run: ``.venv/bin/python bench/ingest.py [--points 500000] [--per-message 100]`` (or ``make bench``).

1. Starts a private PostgreSQL (fsync on, default settings) and mosquitto in a temp folder.
2. Starts the worker once (creates schema and its persistent session), stops it.
3. Publishes N points in batch messages to the broker; they queue for the worker's session.
4. Starts the worker (a real subprocess) and times the drain: first stored point → all N stored (read
   from the worker's /metrics every 50 ms; the table is counted once at the end, exactly).
5. Raw limit, same run, same database: binary COPY of the very same rows (pre-encoded bytes, same
   table shape and index) in transactions of the same batch size.
Prints both rates and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.local import Mosquitto, Postgres, free_port  # noqa: E402
from ingestion import partitions  # noqa: E402
from ingestion.rows import COLUMNS, HEADER, TRAILER, encode_row  # noqa: E402
from proto import DevicePath, Point, batch_topic, encode_batch  # noqa: E402

#: today, 01:00 UTC: the points land in a day partition of plain PostgreSQL's nexus.points (created below)
T0 = (int(time.time()) // 86400 * 86400 + 3600) * 1000


def worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ingestion"], env={**os.environ, **env,
                                "PYTHONPATH": str(ROOT)}, stdout=out, stderr=out)


async def make_partitions(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        await partitions.ensure(c, ahead_days=1)


def copy_rate(c: psycopg.Connection[Any], rows: list[bytes], batch: int) -> float:
    """Points/s of binary COPY of ``rows`` into nexus.points_raw, ``batch`` rows per transaction."""
    t = time.perf_counter()
    for k in range(0, len(rows), batch):
        with c.cursor().copy(f"COPY nexus.points_raw ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(HEADER + b"".join(rows[k:k + batch]) + TRAILER)
        c.commit()
    return len(rows) / (time.perf_counter() - t)


def has_timescale(dsn: str) -> bool:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM nexus.points").fetchone()[0]  # type: ignore[index]


def stored(ops_port: int) -> int:
    """Points the worker has committed, from its /metrics: a cheap HTTP request, where a count(*) of the
    growing table every few ms would take CPU from the worker and its database (2 cores)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("nexus_ingest_points_stored_total "):
                    return int(float(line.split()[1]))
    except OSError:
        pass
    return 0


def drain_online(pg: Postgres, mq: Mosquitto, tmp: Path, payloads: list[tuple[str, bytes]], total: int,
                 workers: int, batch: int) -> float:
    """Points/s stored by ``workers`` workers of one share group, subscribed before the same messages are
    published (a shared subscription hands each message to one live member): first stored point to the
    last, summed over the workers' /metrics; the table counted exactly at the end."""
    dsn = pg.create_database(f"scale{workers}")
    procs, ports = [], []
    for w in range(workers):
        port = free_port()
        ports.append(port)
        env = {"NEXUS_INGESTION_WORKER_ID": f"scale{workers}-{w}", "NEXUS_INGESTION_MQTT_PORT": str(mq.port),
               "NEXUS_INGESTION_SHARE_GROUP": f"scale{workers}", "NEXUS_INGESTION_TOPIC_ROOT": f"scale{workers}",
               "NEXUS_INGESTION_DB_DSN": dsn, "NEXUS_INGESTION_LOG_JSON": "false",
               "NEXUS_INGESTION_OPS_PORT": str(port), "NEXUS_INGESTION_BATCH_MAX_POINTS": str(batch),
               "NEXUS_INGESTION_BATCH_MAX_PENDING_POINTS": str(max(50_000, batch * 4))}
        log = tmp / f"scale{workers}-{w}.log"
        procs.append(worker(env, log))
        while "mqtt connected" not in log.read_text() or "historian ready" not in log.read_text():
            time.sleep(0.1)
    if not has_timescale(dsn):
        asyncio.run(make_partitions(dsn))
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", mq.port)
    pub.loop_start()
    root = f"scale{workers}"
    infos = [pub.publish(root + topic[len("nexus"):], payload, qos=1) for topic, payload in payloads]
    first_t = None
    try:
        while True:
            n = sum(stored(port) for port in ports)
            now = time.perf_counter()
            if first_t is None and n > 0:
                first_t, first_n = now, n
            if n >= total:
                break
            for proc in procs:
                if proc.poll() is not None:
                    raise SystemExit("a worker died; see the logs in " + str(tmp))
            time.sleep(0.05)
        for info in infos:
            info.wait_for_publish(120)
    finally:
        pub.loop_stop()
        for proc in procs:
            proc.terminate()
            proc.wait()
    assert count(dsn) == total, "duplicates or loss"
    return (total - first_n) / (now - first_t)  # type: ignore[operator]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=500_000)
    ap.add_argument("--per-message", type=int, default=100)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--batch", type=int, default=5000, help="worker batch size (points) and raw COPY transaction size")
    ap.add_argument("--timescale", action="store_true",
                    help="PostgreSQL with TimescaleDB preloaded: nexus.points (and the raw table) hypertables")
    ap.add_argument("--scale-out", action="store_true",
                    help="also: the same rows drained by 1 worker and by 2 workers of one share group (online)")
    args = ap.parse_args()
    per, n_msgs = args.per_message, args.points // args.per_message
    total = n_msgs * per
    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    settings = {"shared_preload_libraries": "timescaledb", "timescaledb.telemetry_level": "off"} \
        if args.timescale else None
    pg = Postgres(tmp / "pg", free_port(), settings=settings)
    mq = Mosquitto(tmp / "mq", free_port())
    pg.start()
    mq.start()
    try:
        dsn = pg.create_database("bench")
        ops_port = free_port()
        # a persistent session: this bare publisher does not re-send, and the worker starts after it
        env = {"NEXUS_INGESTION_WORKER_ID": "bench-1", "NEXUS_INGESTION_MQTT_PORT": str(mq.port),
               "NEXUS_INGESTION_SESSION_EXPIRY": "3600",
               "NEXUS_INGESTION_DB_DSN": dsn, "NEXUS_INGESTION_LOG_JSON": "false",
               "NEXUS_INGESTION_OPS_PORT": str(ops_port),
               "NEXUS_INGESTION_BATCH_MAX_POINTS": str(args.batch),
               "NEXUS_INGESTION_BATCH_MAX_PENDING_POINTS": str(max(50_000, args.batch * 4))}
        p = worker(env, tmp / "worker.log")
        while "mqtt connected" not in (tmp / "worker.log").read_text():
            time.sleep(0.1)
        p.terminate()
        p.wait()
        if not args.timescale:  # the day partitions of the plain historian, as the upkeep leader makes them
            asyncio.run(make_partitions(dsn))

        devices = [DevicePath("acme", "bench", "area", "line", f"dev{i}") for i in range(args.devices)]
        payloads = []
        for i in range(n_msgs):
            dev = devices[i % len(devices)]
            pts = [Point(f"tag{j}", (i * per + j) * 0.5, T0 + (i // len(devices)) * 1000, 0) for j in range(per)]
            payloads.append((batch_topic(dev), encode_batch(pts, seq=i)))
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        pub.max_inflight_messages_set(1000)
        pub.max_queued_messages_set(0)
        pub.connect("127.0.0.1", mq.port)
        pub.loop_start()
        t = time.perf_counter()
        infos = [pub.publish(topic, payload, qos=1) for topic, payload in payloads]
        for info in infos:
            info.wait_for_publish(120)
        pub_s = time.perf_counter() - t
        pub.loop_stop()
        print(f"published {n_msgs:,} messages ({total:,} points) in {pub_s:.2f}s "
              f"(broker accepts {n_msgs / pub_s:,.0f} msg/s = {total / pub_s:,.0f} points/s from one paho client)")

        p = worker(env, tmp / "worker.log")
        first_t = first_n = None
        while True:
            n = stored(ops_port)
            now = time.perf_counter()
            if first_t is None and n > 0:
                first_t, first_n = now, n
            if n >= total:
                break
            if p.poll() is not None:
                raise SystemExit(f"worker died:\n{(tmp / 'worker.log').read_text()[-3000:]}")
            time.sleep(0.05)
        ours = (total - first_n) / (now - first_t)  # type: ignore[operator]
        p.terminate()
        p.wait()
        assert count(dsn) == total, "duplicates or loss"

        # raw limit: the same rows, pre-encoded, COPY'd in transactions of the same size
        with psycopg.connect(dsn) as c:
            ids = dict(c.execute("SELECT path, id FROM nexus.tags").fetchall())
            if args.timescale:
                c.execute("CREATE TABLE nexus.points_raw (LIKE nexus.points INCLUDING ALL)")
            else:  # partitioned by day as nexus.points is (without its trigger: the stricter limit)
                c.execute("CREATE TABLE nexus.points_raw (LIKE nexus.points INCLUDING DEFAULTS)"
                          " PARTITION BY RANGE (time)")
                c.execute("CREATE INDEX ON nexus.points_raw (tag_id, time DESC)")
                c.execute("CREATE INDEX ON nexus.points_raw USING brin (time)")
                c.execute(f"CREATE TABLE nexus.points_raw_day PARTITION OF nexus.points_raw FOR VALUES FROM "
                          f"(to_timestamp({T0 // 1000 - 3600})) TO (to_timestamp({T0 // 1000 + 82800}))")
            if args.timescale:  # the raw limit into the same kind of table: a hypertable of 1-day chunks
                hyper = c.execute("SELECT count(*) FROM timescaledb_information.hypertables "
                                  "WHERE hypertable_name = 'points'").fetchone()
                assert hyper and hyper[0] == 1, "nexus.points is not a hypertable: TimescaleDB not in use"
                c.execute("SELECT create_hypertable('nexus.points_raw', 'time', chunk_time_interval => "
                          "interval '1 day')")
            c.commit()
            rows = []
            for i in range(n_msgs):
                dev = devices[i % len(devices)]
                for j in range(per):
                    rows.append(encode_row(T0 + (i // len(devices)) * 1000, ids[f"{dev.path}/tag{j}"],
                                           (i * per + j) * 0.5, 0))
            raw = copy_rate(c, rows, args.batch)
            with_trigger = None
            if not args.timescale:  # what the late-data trigger of nexus.points costs a COPY (same rows again)
                c.execute("TRUNCATE nexus.points_raw")
                c.execute("CREATE TRIGGER raw_inserted AFTER INSERT ON nexus.points_raw REFERENCING NEW TABLE AS"
                          " changed_rows FOR EACH STATEMENT EXECUTE FUNCTION nexus.points_changed()")
                c.commit()
                with_trigger = copy_rate(c, rows, args.batch)
        print(f"ingestion worker : {ours:>10,.0f} points/s committed (1 worker, batches of {args.batch}, "
              f"{per} points/message, dedup + ack after commit)")
        kind = "hypertables (TimescaleDB)" if args.timescale else "tables partitioned by day"
        print(f"raw binary COPY  : {raw:>10,.0f} points/s (same rows, same table shape, same transaction size; {kind})")
        print(f"ratio            : {ours / raw:.2f} x raw COPY")
        if with_trigger is not None:
            print(f"raw COPY + trigger: {with_trigger:>9,.0f} points/s (the same, with nexus.points' late-data trigger:"
                  f" {with_trigger / raw:.2f} x)")
        if args.scale_out:
            one = drain_online(pg, mq, tmp, payloads, total, 1, args.batch)
            two = drain_online(pg, mq, tmp, payloads, total, 2, args.batch)
            print(f"scale-out        : 1 worker {one:,.0f} points/s, 2 workers (one share group) {two:,.0f} points/s "
                  f"= {two / one:.2f} x; same rows, workers subscribed before the publisher starts")
    finally:
        mq.stop()
        pg.stop()


if __name__ == "__main__":
    main()
