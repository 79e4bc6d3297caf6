"""``nexus demo``: the whole pipeline on the embedded default, with live progress.

Starts, in ``.nexus/``: a PostgreSQL cluster, a mosquitto broker, simulated PLCs (two Modbus TCP,
one OPC UA, one S7), gateway_core (REST API), one ingestion worker and one gateway in core mode
(real processes, real protocols). The demo plant is loaded through the REST API; gateway_core
assigns its devices to the gateway over MQTT. Prints points/s confirmed (end to end) and stored,
points waiting in the gateway's spool, rows in the database and a few latest values every second; on
Ctrl-C (or after ``--duration``) stops everything it started, in order, and prints a summary.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any, LiteralString

import orjson
import psycopg

from devtools.local import LocalServerError, Mosquitto, Postgres, ensure_port_free, stop_process, wait_port


class DemoError(RuntimeError):
    pass


def scrape(port: int) -> dict[str, float]:
    """Sum every sample of each metric family on a /metrics page (labels folded)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value)
    return out


def _count(conn: psycopg.Connection[Any], sql: LiteralString) -> int:
    """The number a ``SELECT count(*) ...`` answers."""
    row = conn.execute(sql).fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return int(row[0])


def _fmt(value: float | None, text: str | None) -> str:
    if text is not None:
        return text
    if value is None:
        return "-"
    return str(int(value)) if value.is_integer() else f"{value:g}"


class Demo:
    def __init__(self, args: Any) -> None:
        self.args = args
        self.home = Path(args.home).resolve()
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.pg: Postgres | None = None
        self.mq: Mosquitto | None = None
        self.stopping = False
        self.api_key = ""
        self.admin_password = ""

    # -- start -----------------------------------------------------------------------------------
    def _check_ports(self) -> None:
        a = self.args
        for port, what in ((a.mqtt_port, "mosquitto (--mqtt-port)"), (a.pg_port, "PostgreSQL (--pg-port)"),
                           (a.modbus_port, "simulated PLC press-1 (--modbus-port)"),
                           (a.modbus_port + 1, "simulated PLC oven-1 (--modbus-port + 1)"),
                           (a.opcua_port, "simulated OPC UA server filler-1 (--opcua-port)"),
                           (a.s7_port, "simulated S7 PLC packer-1 (--s7-port)"),
                           (a.api_port, "gateway_core REST API (--api-port)"),
                           (a.ops_port, "gateway ops (--ops-port)"), (a.ops_port + 1, "ingestion ops (--ops-port + 1)"),
                           (a.ops_port + 2, "gateway_core ops (--ops-port + 2)")):
            try:
                ensure_port_free(port, what)
            except LocalServerError as exc:
                raise DemoError(str(exc)) from None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=log, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def start(self) -> str:
        a = self.args
        self._check_ports()
        self.home.mkdir(parents=True, exist_ok=True)
        print(f"starting PostgreSQL on 127.0.0.1:{a.pg_port} (cluster in {self.home / 'pg'}) ...", flush=True)
        self.pg = Postgres(self.home / "pg", a.pg_port)
        self.pg.start()
        dsn = self.pg.create_database("nexus")
        print(f"starting mosquitto on 127.0.0.1:{a.mqtt_port} ...", flush=True)
        self.mq = Mosquitto(self.home / "mosquitto", a.mqtt_port)
        self.mq.start()
        plant = resources.files("devtools").joinpath("demo_plant.toml").read_text()
        plant = (plant.replace("port = 15020", f"port = {a.modbus_port}")
                 .replace("port = 15021", f"port = {a.modbus_port + 1}")
                 .replace("opc.tcp://127.0.0.1:14840", f"opc.tcp://127.0.0.1:{a.opcua_port}")
                 .replace("port = 10102", f"port = {a.s7_port}"))
        plant_file = self.home / "plant.toml"
        plant_file.write_text(plant)
        py = sys.executable
        print(f"starting simulated PLCs: Modbus TCP on {a.modbus_port},{a.modbus_port + 1}, OPC UA on "
              f"{a.opcua_port}, S7 on {a.s7_port} ...", flush=True)
        sims = [self._spawn("simulator", [py, "-m", "gateway.drivers.modbus.simulator", str(plant_file)], {}),
                self._spawn("opcua-sim", [py, "-m", "gateway.drivers.opcua.simulator", "--port", str(a.opcua_port),
                                          "--animate"], {}),
                self._spawn("s7-sim", [py, "-m", "gateway.drivers.s7.simulator", str(plant_file)], {})]
        for port, sim in ((a.modbus_port, sims[0]), (a.modbus_port + 1, sims[0]), (a.opcua_port, sims[1]),
                          (a.s7_port, sims[2])):
            wait_port(port, 30, sim, "simulator")
        common = {"MQTT_PORT": str(a.mqtt_port), "LOG_JSON": "false", "OPS_HOST": "127.0.0.1"}
        print(f"starting gateway_core (REST API on http://127.0.0.1:{a.api_port}/docs), ingestion, gateway ...",
              flush=True)
        self.api_key = secrets.token_urlsafe(24)
        self.admin_password = self._console_password()
        self._spawn("gateway_core", [py, "-m", "gateway_core"], {
            **{f"NEXUS_CORE_{k}": v for k, v in common.items()},
            "NEXUS_CORE_SERVICE_ID": "demo-core", "NEXUS_CORE_DB_DSN": dsn, "NEXUS_CORE_HTTP_PORT": str(a.api_port),
            "NEXUS_CORE_ADMIN_KEY": self.api_key, "NEXUS_CORE_OPS_PORT": str(a.ops_port + 2),
            "NEXUS_CORE_ADMIN_USER": "admin", "NEXUS_CORE_ADMIN_PASSWORD": self.admin_password})
        self._spawn("ingestion", [py, "-m", "ingestion"], {
            **{f"NEXUS_INGESTION_{k}": v for k, v in common.items()},
            "NEXUS_INGESTION_WORKER_ID": "demo-1", "NEXUS_INGESTION_DB_DSN": dsn,
            "NEXUS_INGESTION_OPS_PORT": str(a.ops_port + 1)})
        # the ingestion session must exist before the first batch: the broker keeps messages only
        # for sessions it knows (afterwards it queues for them across restarts)
        self._wait_ready(a.ops_port + 1, "ingestion")
        # its API port, not its ops port: the ops port answers before the REST API listens
        self._wait_ready(a.api_port, "gateway_core")
        self._spawn("gateway", [py, "-m", "gateway"], {
            **{f"NEXUS_GATEWAY_{k}": v for k, v in common.items()},
            "NEXUS_GATEWAY_GATEWAY_ID": "demo-gw", "NEXUS_GATEWAY_CONFIG_SOURCE": "core",
            "NEXUS_GATEWAY_SPOOL_DIR": str(self.home / "spool"),
            "NEXUS_GATEWAY_OPS_PORT": str(a.ops_port)})
        self._import_plant(plant)
        self._print_console()
        return dsn

    def _console_password(self) -> str:
        """The console's admin password: made at the first run and kept in the project folder, as the database
        is (gateway_core creates the bootstrap user only when it is missing, so a new password each run would
        not log in)."""
        path = self.home / "console-admin-password"
        if path.is_file() and (kept := path.read_text().strip()):
            return kept
        password = secrets.token_urlsafe(12)
        path.touch(mode=0o600)
        path.write_text(password + "\n")
        return password

    def _print_console(self) -> None:
        url = f"http://127.0.0.1:{self.args.api_port}/"
        built = (Path(__file__).resolve().parent.parent / "console" / "dist" / "index.html").is_file()
        print(f"web console: {url}  user: admin  password: {self.admin_password}"
              + ("" if built else "  -- not built: run `make console` (Node.js 20.19+)"), flush=True)

    def _import_plant(self, plant: str) -> None:
        """Configure the demo plant the way a user would: one POST of the plant document."""
        doc = tomllib.loads(plant)
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.args.api_port}/api/v1/import", data=orjson.dumps(doc), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = orjson.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise DemoError(f"gateway_core refused the demo plant: {exc.code} {exc.read().decode()}") from None
        except OSError as exc:
            raise DemoError(f"gateway_core API not reachable: {exc}") from None
        print(f"configured {len(doc['devices'])} devices through POST /api/v1/import (revision "
              f"{body.get('revision')}); API key for this run: {self.api_key}", flush=True)

    def _wait_ready(self, port: int, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n, proc in self.procs:
                if proc.poll() is not None:
                    raise DemoError(f"{n} exited with code {proc.returncode}; see {self.home / 'logs' / n}.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise DemoError(f"{name} not ready after {timeout}s; see {self.home / 'logs' / name}.log")

    # -- run -------------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        started = time.monotonic()
        ok = True
        try:
            try:
                dsn = self.start()
            except LocalServerError as exc:
                raise DemoError(str(exc)) from None
            rows_before = self._rows(dsn)
            print(f"\nrunning{f' for {int(self.args.duration)}s' if self.args.duration else ''}; Ctrl-C stops. "
                  f"Logs in {self.home / 'logs'}. Ops: http://127.0.0.1:{self.args.ops_port}/metrics\n", flush=True)
            ok = self._progress(dsn, time.monotonic())  # the duration counts from "running"
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
            dsn = self.pg.dsn_for("nexus") if self.pg else ""
            rows_before = None
        except BaseException:  # a failed start: no summary, so the database stops here (the rest below)
            if self.pg:
                self.stop()
                self.pg.stop()
                self.pg = None
            raise
        finally:
            figures = self.stop()
        if not dsn:
            return 1
        stored_ok = self._summary(dsn, rows_before, figures, time.monotonic() - started)
        return 0 if stored_ok and ok else 1

    def _rows(self, dsn: str) -> int:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                return _count(conn, "SELECT count(*) FROM nexus.points")
        except psycopg.Error:
            return 0

    def _progress(self, dsn: str, started: float) -> bool:
        a = self.args
        last_pub = last_sto = 0.0
        last_t = time.monotonic()
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not a.duration or time.monotonic() - started < a.duration:
                time.sleep(1.0)
                for name, proc in self.procs:
                    if proc.poll() is not None:
                        print(f"\n{name} exited with code {proc.returncode}; see {self.home / 'logs' / name}.log")
                        return False
                gw, ing = scrape(a.ops_port), scrape(a.ops_port + 1)
                pub = gw.get("nexus_gateway_points_confirmed_total", 0.0)
                waiting = gw.get("nexus_gateway_waiting_points", 0.0)
                sto = ing.get("nexus_ingest_points_stored_total", 0.0)
                now = time.monotonic()
                dt = now - last_t
                try:
                    rows = _count(conn, "SELECT count(*) FROM nexus.points")
                    latest = conn.execute(
                        "SELECT DISTINCT ON (t.path) t.device || '/' || t.tag, p.value, p.value_text, t.unit "
                        "FROM nexus.points p JOIN nexus.tags t ON t.id = p.tag_id "
                        "WHERE p.time > now() - interval '5 seconds' AND t.tag IN ('zone1_temp', 'ambient_temp', "
                        "'avg_zone_temp', 'stroke_count', 'state', 'speed', 'film_temp') "
                        "ORDER BY t.path, p.time DESC").fetchall()
                    windows = _count(conn, "SELECT count(*) FROM nexus.windows")
                    alarms = conn.execute("SELECT t.tag || ':' || a.alarm || (CASE WHEN a.active THEN ' RAISED' "
                                          "ELSE ' cleared' END) FROM nexus.alarms a JOIN nexus.tags t "
                                          "ON t.id = a.tag_id ORDER BY coalesce(a.cleared_at, a.raised_at) DESC "
                                          "LIMIT 1").fetchall()
                except psycopg.Error:
                    rows, latest, windows, alarms = 0, [], 0, []
                values = "  ".join(f"{n}={_fmt(v, t)}{(' ' + u) if u else ''}" for n, v, t, u in latest)
                values += f"  windows={windows}" + (f"  alarm {alarms[0][0]}" if alarms else "")
                print(f"[{now - started:5.0f}s] confirmed {pub:>9,.0f} pts ({(pub - last_pub) / dt:6,.0f}/s)  "
                      f"waiting {waiting:>6,.0f}  stored {sto:>9,.0f} ({(sto - last_sto) / dt:6,.0f}/s)  "
                      f"rows in DB {rows:>10,}  {values}", flush=True)
                last_pub, last_sto, last_t = pub, sto, now
        return True

    # -- stop ------------------------------------------------------------------------------------
    def stop(self) -> tuple[int, int, int]:
        """Stop in order; return the gateway's (confirmed, waiting, re-sent) figures from its last log line."""
        if self.stopping:
            return 0, 0, 0
        self.stopping = True
        procs = dict(self.procs)
        # 1. gateway: stops polling, spools what it has queued, waits for ingestion's confirmations
        stop_process(procs.get("gateway"), timeout=30)
        figures = (0, 0, 0)
        log = self.home / "logs" / "gateway.log"
        for line in reversed(log.read_text(errors="replace").splitlines() if log.exists() else []):
            m = re.search(r"gateway stopped .*?(\d+) points in \d+ messages confirmed by ingestion, (\d+) points in "
                          r"\d+ messages waiting in the spool, (\d+) messages re-sent", line)
            if m:
                figures = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
                break
        # 2. ingestion: everything confirmed is committed; its final batch on SIGTERM
        stop_process(procs.get("ingestion"), timeout=30)
        stop_process(procs.get("gateway_core"), timeout=30)
        for sim in ("simulator", "opcua-sim", "s7-sim"):
            stop_process(procs.get(sim), timeout=10)
        if self.mq:
            self.mq.stop()
        # the database stays up for the summary, then stops
        return figures

    def _summary(self, dsn: str, rows_before: int | None, figures: tuple[int, int, int], elapsed: float) -> bool:
        confirmed, waiting, resent = figures
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                rows = _count(conn, "SELECT count(*) FROM nexus.points")
                tags = _count(conn, "SELECT count(*) FROM nexus.tags")
                dead = _count(conn, "SELECT count(*) FROM nexus.dead_letters")
                bad = _count(conn, "SELECT count(*) FROM nexus.points WHERE status >> 30 >= 2")
                windows = _count(conn, "SELECT count(*) FROM nexus.windows")
                alarms = _count(conn, "SELECT count(*) FROM nexus.alarms")
                active = _count(conn, "SELECT count(*) FROM nexus.alarms WHERE active")
        finally:
            if self.pg:
                self.pg.stop()
        new_rows = rows - rows_before if rows_before is not None else None
        print("\n== NEXUS demo summary ==")
        print(f"ran for            {elapsed:.0f} s")
        print(f"points confirmed   {confirmed:,} (committed in the historian, confirmed to the gateway)")
        print(f"points waiting     {waiting:,} (in the gateway's spool {self.home / 'spool'}: sent at the next start)")
        print(f"messages re-sent   {resent:,}")
        if new_rows is not None:
            print(f"rows stored        {new_rows:,} this run ({rows:,} in the database, {tags} tags)")
        else:
            print(f"rows in database   {rows:,} ({tags} tags)")
        print(f"bad-quality rows   {bad:,}")
        print(f"dead letters       {dead:,}")
        print(f"windows stored     {windows:,} (nexus.windows: 10 s and 1 min aggregates of zone1_temp)")
        print(f"alarms             {alarms:,} raised, {active:,} active now (nexus.alarms)")
        if new_rows is not None and confirmed:
            lost = confirmed - new_rows
            print(f"lost               {max(lost, 0):,}")
        print(f"database           {dsn} (started by `make demo`; data kept in {self.home / 'pg'})")
        return (new_rows or rows) > 0
