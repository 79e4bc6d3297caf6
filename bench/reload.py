"""Hot-reload latency: REST commit → first value of a new tag stored in PostgreSQL, next to the raw floor.

Run: ``.venv/bin/python bench/reload.py [--reloads 50] [--interval-ms 1000 100]``. Goal (issue #4): p99 < 2 s.

1. Starts everything in a temp folder on free loopback ports: a PostgreSQL cluster (``fast``: fsync off),
   mosquitto, one ingestion worker, gateway_core (``python -m gateway_core``), one gateway in core mode, and
   a simulated Modbus PLC serving 200 holding registers with distinct constant values (register i = 1000+i).
2. Per poll interval: creates a device with one tag through the REST API and waits for its first value.
3. Reloads: N times, ``PUT /devices/{id}/tags/t<i>`` (a new tag at a new address, If-Match: the device
   ETag), timed from just before the HTTP request until the first row of that tag is visible in
   ``nexus.points`` (one autocommit connection polls every ~10 ms). Each row's value is checked.
4. Raw floor, same run, interleaved with the reloads: a batch message with one new tag published straight
   to the ingestion topic by a bare paho client (QoS 1), timed until its row is visible, same DB polling.
   It is the broker + ingestion (batching window) + COPY/commit path that every reload ends with.
5. Where the time goes: a paho observer stamps the config message (gateway_core → gateway), the gateway's
   status with the applied revision and the first batch message holding the new tag; the point's source
   timestamp stamps the PLC read; ``nexus.tags.created_at`` (= now() of the ingestion transaction) stamps
   the start of the commit. All stamps are wall clock on this machine.
A request lands at a random phase of the poll schedule (a random pause of 0..interval, at most 1 s, first).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.local import Mosquitto, Postgres, free_port, stop_process  # noqa: E402
from gateway.config import parse_plant  # noqa: E402
from gateway.drivers.modbus.simulator import SimulatedPlc  # noqa: E402
from ingestion.settings import BatchSettings  # noqa: E402
from proto import DevicePath, Point, batch_topic, decode_batch, encode_batch  # noqa: E402
from proto import config as pc  # noqa: E402

KEY = "bench-reload-admin-key-0123456789"
TOPIC_ROOT = "nexus"
CONTROL_ROOT = "$nexus"
GATEWAY_ID = "gw-bench"
REGISTERS = 200  #: holding registers the simulated PLC serves; register i holds 1000 + i
LEVELS = {"enterprise": "acme", "site": "bench", "area": "reload", "line": "l1"}
RAW_DEVICE = DevicePath("acme", "bench", "reload", "raw", "raw-dev")
DB_POLL_S = 0.010  #: pause between two visibility queries
JITTER_PCT = 5.0  #: the gateway's default poll jitter (gateway.config), for the expected poll-wait share

# --- processes ---------------------------------------------------------------------------------------


class Proc:
    """A daemon subprocess (``python -m <module>``) with its own log file; stopped by its pid only."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module, self.log = module, log
        full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", module], env=full_env, stdout=out, stderr=out,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)


class SimLoop:
    """An asyncio loop in a thread for the in-process simulated PLC."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, procs: Sequence[Proc] = (),
               every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise SystemExit(f"{p.module} exited while waiting for {what}:\n{p.tail()}")
        try:
            got = predicate()
        except (httpx.HTTPError, psycopg.Error):
            got = None
        if got:
            return got
        time.sleep(every)
    logs = "\n".join(f"--- {p.module}\n{p.tail()}" for p in procs)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}\n{logs}")


# --- observers ---------------------------------------------------------------------------------------


class Observer:
    """A bare paho subscriber that stamps (wall clock) what crosses the broker: config messages by
    revision, gateway statuses by applied revision, and the first batch message holding each tag."""

    def __init__(self, port: int) -> None:
        self.config: dict[int, float] = {}  # revision -> first config message seen
        self.applied: dict[int, float] = {}  # applied_revision -> first gateway status reporting it
        self.first_batch: dict[str, float] = {}  # "<device path>/<tag>" -> first batch message holding it
        self.undecodable = 0
        self._lock = threading.Lock()
        self._prefix = f"{TOPIC_ROOT}/batch/v1/"
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-observer",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(pc.device_filter(CONTROL_ROOT), 1), (pc.status_filter(CONTROL_ROOT), 1),
                               (f"{self._prefix}#", 1)])
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        now = time.time()
        topic = msg.topic
        try:
            if topic.startswith(self._prefix):
                dev = topic[len(self._prefix):]
                for p in decode_batch(msg.payload).points:
                    self.first_batch.setdefault(f"{dev}/{p.tag}", now)
            elif "/config/devices/" in topic:
                self.config.setdefault(pc.decode_device(msg.payload).revision, now)
            elif "/status/gateways/" in topic and msg.payload and not msg.retain:
                st = pc.decode_status(msg.payload)
                if st.online:
                    self.applied.setdefault(st.applied_revision, now)
        except Exception:  # noqa: BLE001 - not ours to judge here; counted and printed
            self.undecodable += 1

    def applied_at(self, revision: int) -> float | None:
        """First status reporting a revision >= ``revision`` (a status may cover several changes)."""
        hits = [t for r, t in list(self.applied.items()) if r >= revision]
        return min(hits) if hits else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


FIRST_ROW = ("SELECT p.time, p.value, p.status, t.created_at FROM nexus.tags t JOIN nexus.points p"
             " ON p.tag_id = t.id WHERE t.path = %s ORDER BY p.time LIMIT 1")


@dataclass
class DbWatch:
    """One autocommit connection polling for a tag's first row; keeps the sampling periods."""

    conn: psycopg.Connection[Any]
    periods: list[float] = field(default_factory=list)

    def first_row(self, path: str, timeout: float) -> tuple[float, tuple[Any, ...]]:
        """(wall time the successful query started, row). The row became visible after the previous
        query's snapshot: the figure is late by 0..one sampling period."""
        deadline = time.time() + timeout
        prev = None
        while True:
            t = time.time()
            if prev is not None:
                self.periods.append(t - prev)
            prev = t
            row = self.conn.execute(FIRST_ROW, (path,), prepare=True).fetchone()
            if row is not None:
                return t, row
            if t > deadline:
                raise TimeoutError(f"no row of {path} within {timeout}s")
            time.sleep(DB_POLL_S)


# --- one phase (one poll interval) -------------------------------------------------------------------


@dataclass
class Sample:
    total: float  #: request start → first row visible
    rest: float  #: HTTP request (commit; the response is sent before the config message is published)
    to_config: float  #: response → config message at the broker
    to_applied: float | None  #: config message → gateway status with that revision applied
    to_read: float  #: config message → PLC read of the first value (point source timestamp)
    to_batch: float | None  #: read → first batch message with the tag at the broker
    to_txn: float | None  #: batch message → start of the ingestion transaction that stored it
    to_visible: float  #: transaction start → row visible (COPY + commit + sampling)


@dataclass
class Phase:
    interval_ms: int
    ours: list[Sample] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    raw_txn: list[float] = field(default_factory=list)  #: raw publish → ingestion transaction start


def run_phase(interval_ms: int, reloads: int, api: httpx.Client, watch: DbWatch, obs: Observer,
              raw_pub: paho.Client, plc_port: int, procs: Sequence[Proc], phase_no: int) -> Phase:
    dev_id = f"plc-{interval_ms}ms"
    base = "/".join([*LEVELS.values(), dev_id])
    doc = {"id": dev_id, **LEVELS, "protocol": "modbus_tcp", "port": plc_port, "interval_ms": interval_ms,
           "tags": [{"name": "t0", "address": 0}]}
    r = api.post("/devices", json=doc)
    if r.status_code != 201:
        raise SystemExit(f"POST /devices: {r.status_code} {r.text}")
    wait_until(f"first value of {dev_id}/t0", lambda: watch.conn.execute(
        FIRST_ROW, (f"{base}/t0",)).fetchone(), 30, procs)
    etag = api.get(f"/devices/{dev_id}").headers["etag"]
    ph = Phase(interval_ms)
    interval = interval_ms / 1000
    for i in range(1, reloads + 1):
        # raw floor: one batch message with a new tag, straight to the ingestion topic
        pause_until = time.time() + random.uniform(0, min(interval, 1.0))
        tag = f"p{phase_no}_{i}"
        t0 = time.time()
        raw_pub.publish(batch_topic(RAW_DEVICE, TOPIC_ROOT),
                        encode_batch([Point(tag, float(i), int(t0 * 1000))], seq=i), qos=1)
        seen, row = watch.first_row(f"{RAW_DEVICE.path}/{tag}", 20)
        ph.raw.append(seen - t0)
        ph.raw_txn.append(row[3].timestamp() - t0)
        time.sleep(max(0.0, pause_until - time.time()))

        # ours: a new tag through the REST API
        name = f"t{i}"
        t_req = time.time()
        r = api.put(f"/devices/{dev_id}/tags/{name}", json={"address": i}, headers={"If-Match": etag})
        t_resp = time.time()
        if r.status_code not in (200, 201):
            raise SystemExit(f"PUT tag {name}: {r.status_code} {r.text}")
        etag, revision = r.headers["etag"], r.json()["revision"]
        try:
            seen, row = watch.first_row(f"{base}/{name}", 20)
        except TimeoutError as exc:
            raise SystemExit(f"{exc}\n" + "\n".join(f"--- {p.module}\n{p.tail()}" for p in procs)) from None
        ts_read, value, status, created = row[0].timestamp(), row[1], row[2], row[3].timestamp()
        if value != 1000 + i or status != 0:
            raise SystemExit(f"{base}/{name}: first row value={value!r} status={status}, "
                             f"expected {1000 + i} GOOD")
        t_cfg = wait_until(f"config message of revision {revision}",
                           lambda rev=revision: obs.config.get(rev), 5)
        applied = obs.applied_at(revision)
        t_batch = obs.first_batch.get(f"{base}/{name}")
        ph.ours.append(Sample(
            total=seen - t_req, rest=t_resp - t_req, to_config=t_cfg - t_resp,
            to_applied=applied - t_cfg if applied else None, to_read=ts_read - t_cfg,
            to_batch=t_batch - ts_read if t_batch else None, to_txn=created - t_batch if t_batch else None,
            to_visible=seen - created))
        time.sleep(random.uniform(0, min(interval, 1.0)))  # next request at a random phase of the schedule
    r = api.delete(f"/devices/{dev_id}")
    if r.status_code != 204:
        raise SystemExit(f"DELETE /devices/{dev_id}: {r.status_code} {r.text}")
    return ph


# --- report ------------------------------------------------------------------------------------------


def pct(xs: Sequence[float], q: int) -> float:
    """Percentile q (1..99), linear between order statistics (with 50 samples p99 ≈ the maximum)."""
    if len(xs) < 2:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]


def ms(x: float) -> str:
    return f"{x * 1000:7.0f}"


def stage_line(label: str, xs: Sequence[float | None]) -> str:
    vals = [x for x in xs if x is not None]
    if not vals:
        return f"  {label:<44} (not observed)"
    return (f"  {label:<44}{ms(pct(vals, 50))}{ms(pct(vals, 99))}{ms(statistics.fmean(vals))}{ms(max(vals))}"
            + (f"   ({len(vals)}/{len(xs)} observed)" if len(vals) < len(xs) else ""))


def report(ph: Phase, sample_ms: float) -> list[str]:
    o = [s.total for s in ph.ours]
    p50, p99, r50, r99 = pct(o, 50), pct(o, 99), pct(ph.raw, 50), pct(ph.raw, 99)
    interval = ph.interval_ms / 1000
    jitter = interval * JITTER_PCT / 100
    waited = interval / 2 + jitter / 2  # mean wait for the next scheduled poll at a random phase
    to_read = statistics.fmean(s.to_read for s in ph.ours)
    how = ("the changed device is restarted and polled at once, after its start jitter "
           f"(0..{jitter * 1000:.0f} ms) and a Modbus connect; it does not wait for the schedule"
           if to_read < waited / 2 else "the new tag waits for the next scheduled poll")
    return [
        (f"poll interval {ph.interval_ms} ms ({len(o)} reloads). The interval bounds the latency if a new "
         f"tag waits for the next scheduled poll: +interval/2 + jitter/2 = {waited * 1000:.0f} ms mean"),
        f"  {'':<44}{'p50':>7}{'p99':>7}{'mean':>7}{'max':>7}  ms",
        stage_line("reload: REST request → first row in DB", o),
        stage_line("raw floor: paho publish → row in DB", ph.raw),
        (f"  reload p50 {p50 * 1000:.0f} ms / p99 {p99 * 1000:.0f} ms  vs raw p50 {r50 * 1000:.0f} ms / "
         f"p99 {r99 * 1000:.0f} ms  → ratio p50(reload)/p50(raw) = {p50 / r50:.2f};  goal p99 < 2000 ms: "
         f"{'met' if p99 < 2.0 else 'NOT MET'}"),
        "  where a reload's time goes (successive stamps, wall clock):",
        stage_line("1 REST request (auth, COMMIT, response)", [s.rest for s in ph.ours]),
        stage_line("2 response → config message at broker", [s.to_config for s in ph.ours]),
        stage_line("3 config msg → gateway status 'applied'", [s.to_applied for s in ph.ours]),
        stage_line("4 config msg → PLC read of the new tag", [s.to_read for s in ph.ours]),
        stage_line("5 PLC read → batch message at broker", [s.to_batch for s in ph.ours]),
        stage_line("6 batch msg → ingestion transaction start", [s.to_txn for s in ph.ours]),
        stage_line("7 transaction start → row visible", [s.to_visible for s in ph.ours]),
        stage_line("raw: publish → ingestion transaction start", ph.raw_txn),
        (f"  poll-interval share: {to_read * 1000:.0f} ms mean from config message to PLC read "
         f"(vs {waited * 1000:.0f} ms if waiting for the schedule): {how}"),
        (f"  DB sampling: one query every {sample_ms:.1f} ms on average → every figure ending 'in DB' is "
         f"late by 0..{sample_ms:.0f} ms (mean ≈ {sample_ms / 2:.0f} ms), reload and raw alike"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reloads", type=int, default=50, help="new tags added per poll interval")
    ap.add_argument("--interval-ms", type=int, nargs="+", default=[1000],
                    help="poll interval(s) of the device, ms; several = one phase each in the same run")
    args = ap.parse_args()
    if not 1 <= args.reloads < REGISTERS:
        raise SystemExit(f"--reloads must be 1..{REGISTERS - 1} (one new register per reload)")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-reload-"))
    pg = Postgres(tmp / "pg", free_port(), fast=True)
    mq = Mosquitto(tmp / "mq", free_port())
    sim = SimLoop()
    procs: list[Proc] = []
    plc_port, http = free_port(), free_port()
    plc_doc = {"id": "sim", **LEVELS, "protocol": "modbus_tcp", "port": plc_port,
               "tags": [{"name": f"r{a}", "address": a} for a in range(REGISTERS)]}
    plc = SimulatedPlc(parse_plant({"devices": [plc_doc]}).devices[0],
                       constants={f"r{a}": 1000 + a for a in range(REGISTERS)})
    api = httpx.Client(base_url=f"http://127.0.0.1:{http}/api/v1", headers={"Authorization": f"Bearer {KEY}"},
                       timeout=10)
    obs: Observer | None = None
    raw_pub: paho.Client | None = None
    try:
        pg.start()
        mq.start()
        sim.run(plc.start())
        dsn = pg.create_database("bench")
        for module, prefix, env in (
            ("ingestion", "NEXUS_INGESTION_", {"WORKER_ID": "bench-1", "TOPIC_ROOT": TOPIC_ROOT,
                                               "DB_DSN": dsn}),
            ("gateway_core", "NEXUS_CORE_", {"SERVICE_ID": "core-bench", "DB_DSN": dsn, "ADMIN_KEY": KEY,
                                             "HTTP_PORT": str(http), "CONTROL_ROOT": CONTROL_ROOT,
                                             "STARTUP_SETTLE": "0.5"}),
            ("gateway", "NEXUS_GATEWAY_", {"GATEWAY_ID": GATEWAY_ID, "CONFIG_SOURCE": "core",
                                           "PLANT": str(tmp / "none.toml"), "CONTROL_ROOT": CONTROL_ROOT,
                                           "TOPIC_ROOT": TOPIC_ROOT}),
        ):
            env |= {"MQTT_PORT": str(mq.port), "LOG_JSON": "false"}
            procs.append(Proc(module, {prefix + k: v for k, v in env.items()}, tmp / f"{module}.log"))
        wait_until("ingestion connected", lambda: "mqtt connected" in (tmp / "ingestion.log").read_text(),
                   60, procs)
        wait_until("gateway registered with gateway_core",
                   lambda: any(g["id"] == GATEWAY_ID and g.get("online")
                               for g in api.get("/gateways").json()["items"]), 60, procs)
        obs = Observer(mq.port)
        raw_pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=paho.MQTTv5)
        raw_pub.connect("127.0.0.1", mq.port)
        raw_pub.loop_start()
        ready = time.monotonic() - started
        with psycopg.connect(dsn, autocommit=True) as conn:
            watch = DbWatch(conn)
            phases = []
            for n, interval_ms in enumerate(args.interval_ms):
                watch.periods.clear()
                ph = run_phase(interval_ms, args.reloads, api, watch, obs, raw_pub, plc_port, procs, n)
                phases.append((ph, statistics.fmean(watch.periods) * 1000))
        cmd = shlex.join([".venv/bin/python", "bench/reload.py", *sys.argv[1:]])
        print(f"hot reload: {cmd}")
        window = BatchSettings().max_age_ms
        print(f"{os.cpu_count()} cores; PostgreSQL fsync off (fast test cluster), mosquitto, 1 ingestion "
              f"worker (batch window max_age_ms={window}, default), gateway_core, 1 gateway (core mode), "
              f"simulated Modbus PLC with {REGISTERS} registers; stack ready in {ready:.1f}s")
        for ph, sample_ms in phases:
            print("\n".join(report(ph, sample_ms)))
        if obs.undecodable:
            print(f"observer: {obs.undecodable} messages it could not decode (stamps may be missing)")
        print(f"total run {time.monotonic() - started:.0f}s")
    finally:
        if raw_pub is not None:
            raw_pub.loop_stop()
            raw_pub.disconnect()
        if obs is not None:
            obs.close()
        api.close()
        for p in reversed(procs):
            p.stop()
        sim.run(plc.stop())
        sim.close()
        mq.stop()
        pg.stop()


if __name__ == "__main__":
    main()
