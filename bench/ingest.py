"""Ingestion throughput: points/s committed by ONE ingestion worker, next to raw binary COPY.

Run: ``.venv/bin/python bench/ingest.py [--points 500000] [--per-message 100]`` (or ``make bench``).

1. Starts a private PostgreSQL (fsync on, default settings) and mosquitto in a temp folder.
2. Starts the worker once (creates schema and its persistent session), stops it.
3. Publishes N points in batch messages to the broker; they queue for the worker's session.
4. Starts the worker (a real subprocess) and times the drain: points committed between two reads of
   the worker's /metrics (every 0.2 s; the table is counted once at the end, exactly).
5. Raw limit, same run, same database: binary COPY of the very same rows (pre-encoded bytes, same
   table shape and index) in transactions of the same batch size; on plain PostgreSQL also into a
   table with nexus.points' late-data trigger (the same table the worker writes).
6. Steps 3-5 ``--repeat`` times (default 3; the historian emptied between rounds): on 2 shared cores one
   round moves by a third, so the medians are compared.
Prints every round, the medians and the ratios.

``--sparkplug`` (issue 12): also the same points as Sparkplug B DDATA (one edge node, aliases, a Quality
property on each metric) through the worker's primary host, published while it is online (the host's session is
clean), next to the JSON batches drained by one worker that is online too (``drain_online``), in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
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

# -- Sparkplug (bench/ingest.py --sparkplug, issue 12) ------------------------------------------------------
from proto.sparkplug import REBIRTH, DataType, Metric, Payload, bdseq_metric, encode_payload  # noqa: E402
from proto.sparkplug.mapping import point_to_metric  # noqa: E402
from proto.sparkplug.topics import build_topic  # noqa: E402

#: today, 01:00 UTC: the points land in a day partition of plain PostgreSQL's nexus.points (created below)
T0 = (int(time.time()) // 86400 * 86400 + 3600) * 1000
#: seconds between two reads of the worker's /metrics during a drain (each read costs the worker a few ms of
#: CPU: at 50 ms that was ~8 % of its time, so the measurement slowed what it measured)
SAMPLE_EVERY = 0.2


def worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ingestion"], env={**os.environ, **env,
                                "PYTHONPATH": str(ROOT)}, stdout=out, stderr=out)


async def make_partitions(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        await partitions.ensure(c, ahead_days=1)


def copy_rate(c: psycopg.Connection[Any], rows: list[bytes], batch: int, table: str) -> float:
    """Points/s of binary COPY of ``rows`` into ``table``, ``batch`` rows per transaction."""
    t = time.perf_counter()
    for k in range(0, len(rows), batch):
        with c.cursor().copy(f"COPY {table} ({COLUMNS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.write(HEADER + b"".join(rows[k:k + batch]) + TRAILER)
        c.commit()
    return len(rows) / (time.perf_counter() - t)


def has_timescale(dsn: str) -> bool:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM nexus.points").fetchone()[0]  # type: ignore[index]


def publisher(port: int) -> paho.Client:
    """A started paho client on the bench's broker, its window wide and its queue unbounded."""
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    return pub


def rate(samples: list[tuple[float, int]]) -> float:
    """Points/s between the first and the last ``(time, points stored)`` sample of a drain."""
    if len(samples) < 2:
        raise SystemExit(f"the drain took less than two samples ({SAMPLE_EVERY}s apart): give more --points")
    (t0, n0), (t1, n1) = samples[0], samples[-1]
    return (n1 - n0) / (t1 - t0)


def publish(port: int, payloads: list[tuple[str, bytes]]) -> float:
    """Publish ``payloads`` at QoS 1 from one paho client (they queue for the worker's session); seconds."""
    pub = publisher(port)
    t = time.perf_counter()
    infos = [pub.publish(topic, payload, qos=1) for topic, payload in payloads]
    for info in infos:
        info.wait_for_publish(120)
    pub_s = time.perf_counter() - t
    pub.loop_stop()
    pub.disconnect()
    return pub_s


def drain(env: dict[str, str], tmp: Path, ops_port: int, total: int) -> float:
    """Start the worker on its queued session and time the drain: points/s committed between two samples of
    its /metrics (the first with points stored, the last before all are), so a coarse sampling interval
    costs no accuracy; the worker is stopped afterwards."""
    p = worker(env, tmp / "worker.log")
    samples: list[tuple[float, int]] = []
    while True:
        n = stored(ops_port)
        now = time.perf_counter()
        if n >= total:
            break
        if n > 0:
            samples.append((now, n))
        if p.poll() is not None:
            raise SystemExit(f"worker died:\n{(tmp / 'worker.log').read_text()[-3000:]}")
        time.sleep(SAMPLE_EVERY)
    p.terminate()
    p.wait()
    return rate(samples)


def raw_tables(c: psycopg.Connection[Any], args: argparse.Namespace, devices: list[DevicePath], n_msgs: int,
               per: int) -> list[bytes]:
    """The raw limit's tables (like nexus.points: a hypertable without and with a continuous aggregate of
    nexus.points_1m's definition over it, or partitioned by day without and with its late-data trigger) and the
    worker's rows, pre-encoded."""
    ids = dict(c.execute("SELECT path, id FROM nexus.tags").fetchall())
    for table in ("nexus.points_raw", "nexus.points_raw_trigger"):
        if args.timescale:  # the same kind of table: a hypertable of 1-day chunks
            hyper = c.execute("SELECT count(*) FROM timescaledb_information.hypertables "
                              "WHERE hypertable_name = 'points'").fetchone()
            assert hyper and hyper[0] == 1, "nexus.points is not a hypertable: TimescaleDB not in use"
            c.execute(f"CREATE TABLE {table} (LIKE nexus.points INCLUDING ALL)")
            c.execute(f"SELECT create_hypertable('{table}', 'time', chunk_time_interval => interval '1 day')")
            if table.endswith("_trigger"):  # what the worker's inserts pay for: the aggregate's invalidation
                c.execute(f"CREATE MATERIALIZED VIEW {table}_1m WITH (timescaledb.continuous,"
                          " timescaledb.materialized_only = false) AS"
                          " SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, tag_id, min(value) AS min,"
                          " max(value) AS max, avg(value) AS avg, last(value, time) AS last, count(*) AS samples,"
                          " sum(value) AS value_sum, count(value) AS value_count"
                          f" FROM {table} GROUP BY 1, 2 WITH NO DATA")
            continue
        c.execute(f"CREATE TABLE {table} (LIKE nexus.points INCLUDING DEFAULTS) PARTITION BY RANGE (time)")
        c.execute(f"CREATE INDEX ON {table} (tag_id, time DESC)")
        c.execute(f"CREATE INDEX ON {table} USING brin (time)")
        c.execute(f"CREATE TABLE {table}_day PARTITION OF {table} FOR VALUES FROM "
                  f"(to_timestamp({T0 // 1000 - 3600})) TO (to_timestamp({T0 // 1000 + 82800}))")
    if not args.timescale:
        c.execute("CREATE TRIGGER raw_inserted AFTER INSERT ON nexus.points_raw_trigger REFERENCING NEW TABLE AS"
                  " changed_rows FOR EACH STATEMENT EXECUTE FUNCTION nexus.points_changed()")
    c.commit()
    rows = []
    for i in range(n_msgs):
        dev = devices[i % len(devices)]
        for j in range(per):
            rows.append(encode_row(T0 + (i // len(devices)) * 1000, ids[f"{dev.path}/tag{j}"], (i * per + j) * 0.5, 0))
    return rows


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
    pub = publisher(mq.port)
    root = f"scale{workers}"
    infos = [pub.publish(root + topic[len("nexus"):], payload, qos=1) for topic, payload in payloads]
    samples: list[tuple[float, int]] = []
    try:
        while True:
            n = sum(stored(port) for port in ports)
            now = time.perf_counter()
            if n >= total:
                break
            if n > 0:
                samples.append((now, n))
            for proc in procs:
                if proc.poll() is not None:
                    raise SystemExit("a worker died; see the logs in " + str(tmp))
            time.sleep(SAMPLE_EVERY)
        for info in infos:
            info.wait_for_publish(120)
    finally:
        pub.loop_stop()
        for proc in procs:
            proc.terminate()
            proc.wait()
    assert count(dsn) == total, "duplicates or loss"
    return rate(samples)


def sparkplug_messages(n_msgs: int, per: int, devices: int) -> list[tuple[str, bytes]]:
    """One edge node's NBIRTH, a DBIRTH per device (``per`` Double metrics, aliases) and ``n_msgs`` DDATA of
    ``per`` metrics by alias (the points of the JSON run, seq wrapping)."""
    group, node = "bench", "bench-node"
    out = [(build_topic(group, "NBIRTH", node), encode_payload(Payload(
        timestamp=T0 - 2000, seq=0, metrics=[bdseq_metric(0), Metric(REBIRTH, DataType.BOOLEAN, False)])))]
    seq = 0
    for d in range(devices):
        seq += 1
        out.append((build_topic(group, "DBIRTH", node, f"dev{d}"), encode_payload(Payload(
            timestamp=T0 - 1000, seq=seq % 256, metrics=[Metric(f"tag{j}", DataType.DOUBLE, 0.0, alias=d * per + j + 1)
                                                         for j in range(per)]))))
    for i in range(n_msgs):
        d, seq = i % devices, seq + 1
        metrics = [point_to_metric(Point(f"tag{j}", (i * per + j) * 0.5, T0 + (i // devices) * 1000, 0),
                                   DataType.DOUBLE, alias=d * per + j + 1, with_unit=False) for j in range(per)]
        out.append((build_topic(group, "DDATA", node, f"dev{d}"), encode_payload(
            Payload(timestamp=T0 + (i // devices) * 1000, seq=seq % 256, metrics=metrics), with_datatypes=False)))
    return out


def drain_sparkplug(pg: Postgres, mq: Mosquitto, tmp: Path, messages: list[tuple[str, bytes]], total: int,
                    batch: int) -> float:
    """Points/s stored by one worker hosting Sparkplug (first to last /metrics sample while it drains what one
    paho client publishes); the table counted exactly at the end."""
    dsn = pg.create_database("sparkplug")
    port, log = free_port(), tmp / "sparkplug.log"
    env = {"NEXUS_INGESTION_WORKER_ID": "spb-1", "NEXUS_INGESTION_MQTT_PORT": str(mq.port),
           "NEXUS_INGESTION_TOPIC_ROOT": "spb", "NEXUS_INGESTION_DB_DSN": dsn, "NEXUS_INGESTION_LOG_JSON": "false",
           "NEXUS_INGESTION_OPS_PORT": str(port), "NEXUS_INGESTION_BATCH_MAX_POINTS": str(batch),
           "NEXUS_INGESTION_BATCH_MAX_PENDING_POINTS": str(max(50_000, batch * 4)),
           "NEXUS_INGESTION_SPARKPLUG_ENABLED": "true", "NEXUS_INGESTION_SPARKPLUG_HOST_ID": "bench",
           "NEXUS_INGESTION_SPARKPLUG_GROUP_FILTER": "bench"}
    proc = worker(env, log)
    while "STATE online" not in log.read_text():
        if proc.poll() is not None:
            raise SystemExit(f"the Sparkplug worker died:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    if not has_timescale(dsn):
        asyncio.run(make_partitions(dsn))
    pub = publisher(mq.port)
    infos = [pub.publish(topic, payload, qos=1) for topic, payload in messages]
    samples: list[tuple[float, int]] = []
    try:
        while (n := stored(port)) < total:
            if n > 0:
                samples.append((time.perf_counter(), n))
            if proc.poll() is not None:
                raise SystemExit(f"the Sparkplug worker died:\n{log.read_text()[-3000:]}")
            time.sleep(SAMPLE_EVERY)
        for info in infos:
            info.wait_for_publish(120)
    finally:
        pub.loop_stop()
        proc.terminate()
        proc.wait()
    assert count(dsn) == total, "duplicates or loss"
    return rate(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=500_000)
    ap.add_argument("--per-message", type=int, default=100)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--batch", type=int, default=5000, help="worker batch size (points) and raw COPY transaction size")
    ap.add_argument("--timescale", action="store_true",
                    help="PostgreSQL with TimescaleDB preloaded: nexus.points (and the raw table) hypertables")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of worker drain, raw COPY (and raw COPY + trigger);"
                    " the medians are compared")
    ap.add_argument("--sparkplug", action="store_true",
                    help="also: the same points as Sparkplug DDATA through the worker's host, next to JSON (online)")
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
        pub_s = publish(mq.port, payloads)
        print(f"published {n_msgs:,} messages ({total:,} points) in {pub_s:.2f}s "
              f"(broker accepts {n_msgs / pub_s:,.0f} msg/s = {total / pub_s:,.0f} points/s from one paho client)")

        rows = None
        ours_runs: list[float] = []
        raw_runs: list[float] = []
        trig_runs: list[float] = []
        for r in range(args.repeat):
            if r:  # the same messages again, into an empty historian (the digests of the last round gone)
                publish(mq.port, payloads)
                with psycopg.connect(dsn, autocommit=True) as c:
                    c.execute("TRUNCATE nexus.points, nexus.ingested_messages")
            ours_runs.append(drain(env, tmp, ops_port, total))
            assert count(dsn) == total, "duplicates or loss"
            # raw limit: the same rows, pre-encoded, COPY'd in transactions of the same size
            with psycopg.connect(dsn) as c:
                if rows is None:
                    rows = raw_tables(c, args, devices, n_msgs, per)
                c.execute("TRUNCATE nexus.points_raw")
                c.commit()
                raw_runs.append(copy_rate(c, rows, args.batch, "nexus.points_raw"))
                # nexus.points' own kind of table: with its late-data trigger, or its continuous aggregate
                c.execute("TRUNCATE nexus.points_raw_trigger")
                c.commit()
                trig_runs.append(copy_rate(c, rows, args.batch, "nexus.points_raw_trigger"))
            print(f"round {r + 1}: worker {ours_runs[-1]:,.0f}, raw COPY {raw_runs[-1]:,.0f}"
                  + (f", raw COPY + trigger {trig_runs[-1]:,.0f}" if trig_runs else "") + " points/s", flush=True)
        ours, raw = statistics.median(ours_runs), statistics.median(raw_runs)
        print(f"ingestion worker : {ours:>10,.0f} points/s committed (median of {args.repeat}; 1 worker, batches of "
              f"{args.batch}, {per} points/message, dedup + ack after commit)")
        kind = "hypertables (TimescaleDB)" if args.timescale else "tables partitioned by day"
        print(f"raw binary COPY  : {raw:>10,.0f} points/s (median; same rows, same table shape, same transaction "
              f"size; {kind})")
        print(f"ratio            : {ours / raw:.2f} x raw COPY")
        if trig_runs:
            trig = statistics.median(trig_runs)
            what = "continuous aggregate (1 minute)" if args.timescale else "late-data trigger"
            print(f"raw COPY + trigger: {trig:>9,.0f} points/s (median; the same table with nexus.points' {what}, "
                  f"i.e. the same table the worker writes: {trig / raw:.2f} x raw)")
            print(f"ratio (same table): {ours / trig:.2f} x raw COPY into a table like nexus.points, its {what} "
                  "included")
        if args.scale_out:
            one = drain_online(pg, mq, tmp, payloads, total, 1, args.batch)
            two = drain_online(pg, mq, tmp, payloads, total, 2, args.batch)
            print(f"scale-out        : 1 worker {one:,.0f} points/s, 2 workers (one share group) {two:,.0f} points/s "
                  f"= {two / one:.2f} x; same rows, workers subscribed before the publisher starts")
        if args.sparkplug:
            json_online = one if args.scale_out else drain_online(pg, mq, tmp, payloads, total, 1, args.batch)
            spb = drain_sparkplug(pg, mq, tmp, sparkplug_messages(n_msgs, per, args.devices),
                                  total + args.devices * per, args.batch)
            print(f"sparkplug        : {spb:>10,.0f} points/s (DDATA of {per} metrics through the primary host, 1 "
                  f"worker, online) against JSON batches {json_online:,.0f} points/s (1 worker, online) = "
                  f"{spb / json_online:.2f} x")
    finally:
        mq.stop()
        pg.stop()


if __name__ == "__main__":
    main()
