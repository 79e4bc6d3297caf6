"""The console's live stream: what gateway_core's ``/api/v1/live`` WebSocket costs and how late its values reach
a client, next to a bare MQTT subscriber of the same messages in the same run (the raw floor).

- mosquitto, PostgreSQL (gateway_core's store) and ``python -m gateway_core`` (pinned to core 0) are started
  here; publisher processes (core 1) send what gateways send for ``--tags`` tags, each changing once per
  ``--period`` seconds, spread evenly in 20 ms slices: per slice one batch message per device (encode_batch on
  proto.uns batch topics, QoS 1, as a gateway's publisher does) and each tag's retained per-tag state message
  (encode_point, QoS 0, as its statetopics does); every point's ``ts`` is its publish time (ms).
- ``--changes batches`` (gateway_core's default ``live.changes``) streams the changes from the batch messages;
  ``--changes tags`` from the per-tag messages (one MQTT message per change).
- a WebSocket client (websockets, core 1) authenticates with the admin key and subscribes to the enterprise;
  a bare paho subscriber (core 1) subscribes to the same messages gateway_core takes its changes from (the batch
  or the per-tag topics) and decodes them (orjson). Latency = arrival - ts, per value.
- gateway_core's CPU over the window comes from /proc (user + system, all its threads).

Goal (issue 14): 5,000 tags changing every second cost gateway_core ≤ 25 % of a core, values on the page within
250 ms p99 of the broker. A WebSocket client is the page's transport without its rendering (a browser would add
its own parse and paint); the stream coalesces per tag and sends every ``live.batch_interval`` (100 ms), which
is most of its latency by design.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from bench.gateway import PINNED, cpu_seconds, pct, spawn  # noqa: E402
from devtools.local import Mosquitto, Postgres, free_port, stop_process  # noqa: E402
from proto.points import Point, encode_batch, encode_point  # noqa: E402
from proto.uns import BATCH_ROOT, DevicePath, batch_filter, batch_topic  # noqa: E402

CORE_CORE, LOAD_CORE = 0, 1  #: gateway_core alone on core 0; publishers, subscribers, broker, database on 1
KEY = "bench-admin-key-0123456789abcdef"
PREFIX = "uns"
TAGS_PER_DEVICE = 50


def device_of(i: int) -> DevicePath:
    d = i // TAGS_PER_DEVICE
    return DevicePath("acme", "berlin", f"area-{d % 4}", f"line-{d % 10}", f"dev-{d}")


def topic_of(i: int) -> str:
    return device_of(i).tag(f"t{i}").topic(PREFIX)


def publisher(port: int, first: int, count: int, period: float, seconds: float, ready: Any) -> None:
    """Tags first..first+count-1, each once per ``period``, spread in 20 ms slices: per slice a batch message per
    device (QoS 1) and a retained per-tag state message per tag (QoS 0)."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    ids = list(range(first, first + count))
    topics = {i: topic_of(i) for i in ids}
    batches = {i // TAGS_PER_DEVICE: batch_topic(device_of(i), BATCH_ROOT) for i in ids}
    ready.wait()
    slices = max(1, int(period / 0.02))
    per = -(-count // slices)
    start = time.monotonic()
    n, value = 0, 0
    while time.monotonic() - start < seconds:
        for s in range(slices):
            due = start + n * period + s * period / slices
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ts = time.time_ns() // 1_000_000
            points = [Point(f"t{i}", float(value), ts) for i in ids[s * per:(s + 1) * per]]
            by_device: dict[int, list[Point]] = {}
            for p in points:
                by_device.setdefault(int(p.tag[1:]) // TAGS_PER_DEVICE, []).append(p)
            for d, of_device in by_device.items():
                c.publish(batches[d], encode_batch(of_device), qos=1)
            for p in points:
                c.publish(topics[int(p.tag[1:])], encode_point(p), qos=0, retain=True)
        n += 1
        value += 1
    time.sleep(0.5)
    c.loop_stop()
    c.disconnect()


def raw_subscriber(port: int, changes: str, go: Any, stop: Any, out: Any) -> None:
    """The floor, in a process of its own: a bare paho subscriber of the messages gateway_core takes its changes
    from (``changes``: the batch or the per-tag topics), decoding each payload (orjson); sends back arrival - ts
    of each point between ``go`` and ``stop`` and its CPU seconds."""
    lat: list[float] = []

    def on_message(c: Any, u: Any, msg: paho.MQTTMessage) -> None:
        if go.is_set() and not stop.is_set() and not msg.retain and msg.payload:
            now = time.time_ns() / 1e6
            doc = orjson.loads(msg.payload)
            if changes == "batches":
                lat.extend(now - p["ts"] for p in doc["points"])
            else:
                lat.append(now - doc["ts"])

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe(batch_filter(BATCH_ROOT) if changes == "batches" else f"{PREFIX}/acme/#", qos=0)
    c.loop_start()
    go.wait()
    c0 = time.process_time()
    stop.wait()
    cpu = time.process_time() - c0
    c.loop_stop()
    c.disconnect()
    out.send((lat, cpu))


async def ws_client(port: int, seconds: float, warmup: float, started: threading.Event) -> tuple[list[float], int]:
    """Subscribe to the enterprise; arrival - ts of every value after the warm-up; and values dropped (said)."""
    lat: list[float] = []
    dropped = 0
    async with connect(f"ws://127.0.0.1:{port}/api/v1/live", open_timeout=10, max_size=2**24) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": KEY}).decode())
        await ws.send(orjson.dumps({"type": "subscribe", "paths": ["acme"]}).decode())
        started.set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < warmup + seconds:
            try:
                async with asyncio.timeout(1.0):
                    msg = orjson.loads(await ws.recv())
            except TimeoutError:
                continue
            if msg.get("type") != "values":
                continue
            dropped += int(msg.get("dropped", 0))
            if time.monotonic() - t0 < warmup:
                continue
            now = time.time_ns() / 1e6
            lat += [now - v["ts"] for v in msg["values"] if "ts" in v]
    return lat, dropped


def quantiles(xs: list[float]) -> str:
    if len(xs) < 2:
        return "no samples"
    q = statistics.quantiles(xs, n=100, method="inclusive")
    return f"p50 {q[49]:6.1f} ms, p99 {q[98]:6.1f} ms, max {max(xs):6.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--tags", type=int, default=5000)
    ap.add_argument("--period", type=float, default=1.0, help="seconds between two changes of one tag")
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes (paho costs ~0.1 ms a message)")
    ap.add_argument("--changes", choices=["batches", "tags"], default="batches",
                    help="gateway_core's live.changes: from the batch messages or from every per-tag message")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy (on PATH or beside this Python) samples gateway_core over the window; top frames")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-console-"))
    mq, pg = Mosquitto(tmp / "mq", free_port()), Postgres(tmp / "pg", free_port())
    http = free_port()
    core = None
    raw: mp.Process | None = None
    go, stop = mp.Event(), mp.Event()
    raw_end, raw_out = mp.Pipe(duplex=False)
    pubs: list[mp.Process] = []
    try:
        mq.start()
        pg.start()
        for p in (mq.proc, pg.proc):
            if PINNED and p is not None:
                os.sched_setaffinity(p.pid, {LOAD_CORE})
        if PINNED:
            os.sched_setaffinity(0, {LOAD_CORE})
        dsn = pg.create_database("bench")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NEXUS_CORE_DB_DSN": dsn, "NEXUS_CORE_ADMIN_KEY": KEY,
               "NEXUS_CORE_HTTP_PORT": str(http), "NEXUS_CORE_MQTT_PORT": str(mq.port), "NEXUS_CORE_LOG_JSON": "false",
               "NEXUS_CORE_LIVE_UNS_PREFIX": PREFIX, "NEXUS_CORE_LIVE_MAX_TAGS": str(max(10_000, args.tags)),
               "NEXUS_CORE_LIVE_TOPIC_ROOT": BATCH_ROOT, "NEXUS_CORE_LIVE_CHANGES": args.changes}
        log = tmp / "gateway_core.log"
        with open(log, "ab") as out:
            core = spawn([sys.executable, "-m", "gateway_core"], CORE_CORE, env=env, cwd=ROOT, stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=2)
                break
            except OSError:
                if core.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gateway_core did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.3)

        raw = mp.Process(target=raw_subscriber, args=(mq.port, args.changes, go, stop, raw_out),
                         name="raw-subscriber", daemon=True)
        raw.start()
        if PINNED and raw.pid is not None:
            os.sched_setaffinity(raw.pid, {LOAD_CORE})
        ready = mp.Event()
        per = -(-args.tags // args.publishers)
        total_s = args.warmup + args.seconds + 2
        for k in range(args.publishers):
            count = min(per, args.tags - k * per)
            p = mp.Process(target=publisher, args=(mq.port, k * per, count, args.period, total_s, ready),
                           name=f"publisher-{k}", daemon=True)
            p.start()
            pubs.append(p)
            if PINNED and p.pid is not None:
                os.sched_setaffinity(p.pid, {LOAD_CORE})

        started = threading.Event()
        result: dict[str, Any] = {}

        def run_ws() -> None:
            result["ws"] = asyncio.run(ws_client(http, args.seconds, args.warmup, started))

        t = threading.Thread(target=run_ws, name="ws-client")
        t.start()
        if not started.wait(15):
            raise SystemExit("the WebSocket client did not start")
        ready.set()
        time.sleep(args.warmup)
        go.set()
        spy = None
        if args.profile:
            exe = Path(sys.executable).with_name("py-spy")
            spy = spawn([str(exe) if exe.exists() else "py-spy", "record", "--pid", str(core.pid), "--duration",
                         str(int(args.seconds)), "--rate", "200", "--gil", "--format", "raw", "--output",
                         str(tmp / "core.pyspy.txt")], LOAD_CORE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c0, w0 = cpu_seconds(core.pid), time.perf_counter()
        time.sleep(args.seconds)
        c1, w1 = cpu_seconds(core.pid), time.perf_counter()
        stop.set()
        if not raw_end.poll(30):
            raise SystemExit("the raw subscriber did not report")
        raw_lat, raw_cpu = raw_end.recv()
        t.join(args.seconds + 30)
        ws_lat, dropped = result.get("ws", ([], 0))
        if spy is not None:
            spy.wait(60)
    finally:
        for p in pubs:
            p.join(5)
            if p.is_alive():
                p.kill()
        stop.set()
        if raw is not None:
            raw.join(5)
        stop_process(core)
        pg.stop()
        mq.stop()

    offered = args.tags / args.period
    cpu = (c1 - c0) / (w1 - w0)
    print(f"console live stream: {args.tags:,} tags changing every {args.period:g} s = {offered:,.0f} changes/s "
          f"offered by {args.publishers} publisher processes (batch messages per device, QoS 1, and retained "
          f"per-tag messages, QoS 0); gateway_core's changes from {args.changes}; {args.seconds:.0f} s window after "
          f"{args.warmup:.0f} s warm-up; gateway_core pinned to core {CORE_CORE}, the rest on core {LOAD_CORE}"
          + ("" if PINNED else " (not pinned: fewer than 2 cores)"))
    print(f"  raw MQTT subscriber  : {len(raw_lat) / args.seconds:>9,.0f} values/s, {quantiles(raw_lat)}; its CPU "
          f"{pct(raw_cpu / (w1 - w0))} ({raw_cpu / max(len(raw_lat), 1) * 1e6:.1f} us per value: paho + orjson, "
          f"{args.changes})")
    print(f"  WebSocket /api/v1/live: {len(ws_lat) / args.seconds:>8,.0f} values/s, {quantiles(ws_lat)} "
          f"(coalesced, sent every 100 ms; {dropped} dropped)")
    print(f"  gateway_core CPU     : {pct(cpu):>9}  of one core ({(c1 - c0) / max(len(ws_lat), 1) * 1e6:.1f} us per "
          f"value streamed, MQTT intake included)")
    p99 = statistics.quantiles(ws_lat, n=100, method="inclusive")[98] if len(ws_lat) > 1 else float("inf")
    raw99 = statistics.quantiles(raw_lat, n=100, method="inclusive")[98] if len(raw_lat) > 1 else float("nan")
    print(f"  goal                 : CPU <= 25 % {'met' if cpu <= 0.25 else 'NOT met'}; p99 <= 250 ms "
          f"{'met' if p99 <= 250 else 'NOT met'} ({p99:.1f} ms against the raw floor's {raw99:.1f} ms)")
    prof = tmp / "core.pyspy.txt"
    if prof.exists():
        print("  where gateway_core's CPU goes (py-spy, share of samples by their deepest frame):")
        for share, frame in top_frames(prof):
            print(f"    {share:6.1%}  {frame}")
    print(f"logs: {tmp}")


def top_frames(path: Path, most: int = 15) -> list[tuple[float, str]]:
    """Samples by their leaf frame (function and file), the idle epoll wait left out."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit() or "select (selectors.py" in stack.rsplit(";", 1)[-1]:
            continue
        leaf = stack.rsplit(";", 1)[-1]
        counts[leaf] = counts.get(leaf, 0) + int(n)
    total = sum(counts.values()) or 1
    return [(c / total, f) for f, c in sorted(counts.items(), key=lambda kv: -kv[1])[:most]]


if __name__ == "__main__":
    main()
