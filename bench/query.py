"""Historian queries: each question through the layer it should use, next to the same question of the raw table.

Run: ``.venv/bin/python bench/query.py [--backend both|postgres|timescaledb] [--tags 1000] [--days 31]
[--interval-s 60] [--repeat 50]``; ``--quick`` for a smoke run (100 tags, 3 days, 10 repetitions).

Per backend (plain PostgreSQL, then PostgreSQL with TimescaleDB preloaded and no job scheduler, so no policy
job races the measurements and raw chunks stay uncompressed):

1. A private cluster in a temp folder (removed afterwards); the schema made by ``ingestion.schema.migrate``;
   on plain PostgreSQL the day partitions of the history made before the load (``nexus.add_partitions``).
2. A deterministic history: ``--tags`` tags (devices of 100 tags, UNS paths
   acme/bench/areaA/lineL/devDD/tagTTT), one point per tag every ``--interval-s`` seconds for ``--days`` days,
   ending at the hour the run started, time-major as ingestion writes it; a value is a per-tag sine plus a
   fixed pseudo-noise, about one point in a thousand has an uncertain status. Loaded by binary COPY
   ``(time, tag_id, value, status)`` in transactions of ``--copy-rows`` rows; the load time and the size on
   disk are printed.
3. The aggregate layers brought up to date: TimescaleDB refreshes ``nexus.points_1m`` then ``nexus.points_1h``
   over the whole history; plain PostgreSQL rolls ``nexus.rollup_1m`` and ``nexus.rollup_1h`` up with the
   upkeep's own code (``ingestion.rollups.refresh_all``; where there are no rollups the layers are plain views
   and nothing is needed). Then ``VACUUM ANALYZE``.
4. The questions, each asked ``--repeat`` times (fewer when a variant has used up ``--budget-s``) after one
   untimed warm-up whose result is compared between the two variants (same rows, same values):
   Q1 a 20-tag, 8-hour trend panel in 1-minute buckets (``points_1m`` vs ``date_bin`` over ``points``);
   Q2 the last-value overview of every tag (value, status, quality, age): the best raw query (a LATERAL
   newest-row lookup per tag over the ``(tag_id, time DESC)`` index) vs a naive ``DISTINCT ON`` over the raw
   table; Q2b the same overview from the newest ``points_1m`` bucket's ``last`` (no status there) vs the naive
   one; Q3 a 30-day one-tag trend in 1-hour buckets (``points_1h`` vs ``date_bin`` over ``points``).
   Repetition i asks of other tags and a window shifted by i (deterministically), the same for both variants.
   Times are client wall times of execute + fetch, planned per call (no server-side prepared statements);
   p99 is the nearest-rank percentile, so with 50 samples it is the slowest but none.
Prints p50, p99 and max in ms per variant, the ratio raw/layer, and whether the layer meets the question's goal.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.local import Postgres, free_port  # noqa: E402
from ingestion import partitions, rollups  # noqa: E402
from ingestion.rows import HEADER, TRAILER  # noqa: E402
from ingestion.schema import migrate  # noqa: E402

Conn = psycopg.Connection[tuple[Any, ...]]
Params = dict[str, Any]

# a TimescaleDB server as its tuning tool (timescaledb-tune, run by the official image) sets it up on SSDs:
# random_page_cost 1.1 lets the planner take the minute layer's (tag_id, bucket) index for a few tags' trend
# (docs/historian.md, "Query planning on TimescaleDB")
TS_SETTINGS = {"shared_preload_libraries": "timescaledb", "timescaledb.telemetry_level": "off",
               "timescaledb.max_background_workers": "0", "random_page_cost": "1.1"}
COPY_SQL = "COPY nexus.points (time, tag_id, value, status) FROM STDIN (FORMAT BINARY)"
# field count | time (len, int64 µs since 2000) | tag_id (len, int32) | value (len, float8) | status (len, int64)
ROW = struct.Struct(">hiqiiidiq")
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
UNCERTAIN = 1 << 30  # OPC UA StatusCode: top two bits 01


@dataclass(frozen=True, kw_only=True)
class History:
    tags: int  #: number of tags
    days: int  #: length of the history in days
    interval_s: int  #: seconds between two points of one tag
    end: datetime  #: the history ends here (exclusive): the hour the run started

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)

    @property
    def steps(self) -> int:
        return self.days * 86_400 // self.interval_s

    @property
    def rows(self) -> int:
        return self.steps * self.tags


def tag_rows(n: int) -> list[tuple[str, ...]]:
    """(path, enterprise, site, area, line, device, tag, unit) of ``n`` tags, 100 per device."""
    out: list[tuple[str, ...]] = []
    for i in range(n):
        d, t = divmod(i, 100)
        parts = ("acme", "bench", f"area{d // 4}", f"line{d % 4}", f"dev{d:02d}", f"tag{t:03d}")
        out.append(("/".join(parts), *parts, ("degC", "bar", "rpm", "%")[t % 4]))
    return out


def create(dsn: str, hist: History) -> tuple[bool, int]:
    """Migrate like ingestion does (an autocommit async connection): whether the TimescaleDB path is active, and
    how many day partitions the history has (plain PostgreSQL; 0 where nexus.points is not partitioned)."""
    async def run() -> tuple[bool, int]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            timescale = (await migrate(conn)).timescale
            if timescale or not await partitions.present(conn):
                return timescale, 0
            # the days of the history, made before the load as an operator loading by hand would
            await conn.execute("SELECT nexus.add_partitions(%s, %s)", (hist.start, hist.end))
            row = await (await conn.execute("SELECT count(*) FROM nexus.point_partitions")).fetchone()
            return timescale, int(row[0]) if row else 0
    return asyncio.run(run())


def load(conn: Conn, hist: History, ids: list[int], copy_rows: int) -> float:
    """COPY the whole history, time-major; seconds taken."""
    pack = ROW.pack
    rng = random.Random(7)
    # per tag: id, base, amplitude, angular step per point, phase
    waves = [(tid, rng.uniform(0, 100), rng.uniform(1, 20), 2 * math.pi * hist.interval_s / rng.uniform(600, 86_400),
              rng.uniform(0, 2 * math.pi), j * 104_729) for j, tid in enumerate(ids)]
    t0 = int((hist.start - PG_EPOCH).total_seconds()) * 1_000_000
    step_us = hist.interval_s * 1_000_000
    per_tx = max(1, copy_rows // len(ids))
    began = time.perf_counter()
    for k0 in range(0, hist.steps, per_tx):
        with conn.cursor().copy(COPY_SQL) as cp:
            cp.write(HEADER)
            for k in range(k0, min(k0 + per_tx, hist.steps)):
                t, noise = t0 + k * step_us, k * 7_919
                cp.write(b"".join([pack(4, 8, t, 4, tid, 8, base + amp * math.sin(w * k + ph)
                                        + (noise + salt) % 1000 * 0.001, 8, UNCERTAIN if (k + salt) % 997 == 0 else 0)
                                   for tid, base, amp, w, ph, salt in waves]))
            cp.write(TRAILER)
        conn.commit()
    return time.perf_counter() - began


def refresh(dsn: str, timescale: bool) -> str:
    """Bring points_1m and points_1h up to date; what was done."""
    if timescale:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for view in ("nexus.points_1m", "nexus.points_1h"):
                conn.execute("CALL refresh_continuous_aggregate(%s::regclass, NULL, NULL)", (view,))
        return "refresh_continuous_aggregate(points_1m), then (points_1h), whole history"

    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            if not await rollups.present(conn):
                return "no rollups: points_1m and points_1h are views over nexus.points"
            res = await rollups.refresh_all(conn)
            return f"ingestion.rollups.refresh_all: {res.buckets:,} buckets rolled up (minutes, then hours)"
    return asyncio.run(run())


def mb(n: int | None) -> str:
    return f"{(n or 0) / 2**20:,.0f} MB"


def sizes(conn: Conn, timescale: bool) -> list[str]:
    out = []
    if timescale:
        row = conn.execute("SELECT hypertable_size('nexus.points'), (SELECT count(*) FROM"
                           " timescaledb_information.chunks WHERE hypertable_name = 'points')").fetchone()
        assert row
        out.append(f"nexus.points: hypertable, {row[1]} chunks, {mb(row[0])} (table + indexes)")
        for view, size in conn.execute(
                "SELECT view_name, hypertable_size(format('%I.%I', materialization_hypertable_schema,"
                " materialization_hypertable_name)::regclass) FROM timescaledb_information.continuous_aggregates"
                " WHERE view_schema = 'nexus' ORDER BY view_name").fetchall():
            out.append(f"nexus.{view}: continuous aggregate, materialized {mb(size)}")
    else:
        for name, kind, size, parts in conn.execute(
                "SELECT c.relname, c.relkind, CASE c.relkind WHEN 'p' THEN (SELECT"
                " sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i WHERE i.inhparent = c.oid)::bigint"
                " ELSE pg_total_relation_size(c.oid) END,"
                " (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'nexus' AND NOT c.relispartition"
                " AND (c.relname IN ('points', 'points_1m', 'points_1h') OR (c.relkind IN ('r', 'm')"
                " AND pg_total_relation_size(c.oid) > 1048576)) ORDER BY c.relname").fetchall():
            what = {"v": "view", "m": "materialized view",
                    "p": f"partitioned table, {parts} partitions"}.get(kind, "table")
            out.append(f"nexus.{name}: {what}" + ("" if kind == "v" else f", {mb(size)} (table + indexes)"))
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    out.append(f"database: {mb(row[0] if row else 0)}")
    return out


@dataclass
class Timing:
    label: str
    ms: list[float]
    warm: list[tuple[Any, ...]]  #: the warm-up's rows, compared between the variants of a question

    def pct(self, q: float) -> float:
        s = sorted(self.ms)
        return s[max(0, math.ceil(q * len(s)) - 1)]

    def line(self) -> str:
        return (f"p50 {self.pct(0.5):8.1f}  p99 {self.pct(0.99):8.1f}  max {max(self.ms):8.1f} ms"
                f"  (n={len(self.ms)}, {len(self.warm)} rows)")


def measure(conn: Conn, label: str, sql: str, params: Callable[[int], Params], repeat: int, budget_s: float,
            explain: bool) -> Timing:
    with conn.cursor(binary=True) as cur:
        warm = cur.execute(sql, params(repeat)).fetchall()  # a window no timed repetition asks
        if explain:
            plan = cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params(repeat)).fetchall()
            print(f"    -- {label}\n" + "\n".join(f"    {r[0]}" for r in plan))
        ms: list[float] = []
        began = time.perf_counter()
        for i in range(repeat):
            t = time.perf_counter()
            cur.execute(sql, params(i)).fetchall()
            ms.append((time.perf_counter() - t) * 1000)
            if time.perf_counter() - began > budget_s:
                break
    return Timing(label, ms, warm)


def same(a: Sequence[tuple[Any, ...]], b: Sequence[tuple[Any, ...]], cols: int) -> bool:
    if len(a) != len(b):
        return False
    for ra, rb in zip(sorted(r[:cols] for r in a), sorted(r[:cols] for r in b), strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif x != y:
                return False
    return True


Q1_LAYER = ("SELECT tag_id, bucket, avg, min, max FROM nexus.points_1m WHERE tag_id = ANY(%(tags)s::int[])"
            " AND bucket >= %(start)s AND bucket < %(end)s ORDER BY 1, 2")
Q1_RAW = ("SELECT tag_id, date_bin('1 minute', time, TIMESTAMPTZ '2000-01-01') AS bucket, avg(value), min(value),"
          " max(value) FROM nexus.points WHERE tag_id = ANY(%(tags)s::int[]) AND time >= %(start)s"
          " AND time < %(end)s GROUP BY 1, 2 ORDER BY 1, 2")
_QUALITY = "CASE (p.status >> 30) WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END"
Q2_BEST = (f"SELECT t.path, p.value, p.time, p.status, {_QUALITY} AS quality, %(asof)s - p.time AS age"
           " FROM nexus.tags t CROSS JOIN LATERAL (SELECT time, value, status FROM nexus.points"
           " WHERE tag_id = t.id AND time <= %(asof)s ORDER BY time DESC LIMIT 1) p")
Q2_NAIVE = (f"SELECT t.path, p.value, p.time, p.status, {_QUALITY} AS quality, %(asof)s - p.time AS age"
            " FROM (SELECT DISTINCT ON (tag_id) tag_id, time, value, status FROM nexus.points"
            " WHERE time <= %(asof)s ORDER BY tag_id, time DESC) p JOIN nexus.tags t ON t.id = p.tag_id")
# the newest bucket of each tag within a short lookback: an unbounded "ORDER BY bucket DESC LIMIT 1" per tag reads
# every bucket of the tag (neither TimescaleDB's real-time union nor a GROUP BY view takes the ordering down)
Q2_1M = ("SELECT t.path, m.last, m.bucket, %(asof)s - m.bucket AS age FROM (SELECT DISTINCT ON (tag_id) tag_id,"
         " bucket, last FROM nexus.points_1m WHERE bucket > %(asof)s - %(lookback)s::interval AND bucket <= %(asof)s"
         " ORDER BY tag_id, bucket DESC) m JOIN nexus.tags t ON t.id = m.tag_id")
Q3_LAYER = ("SELECT bucket, avg, min, max FROM nexus.points_1h WHERE tag_id = %(tag)s AND bucket >= %(start)s"
            " AND bucket < %(end)s ORDER BY 1")
Q3_RAW = ("SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01') AS bucket, avg(value), min(value), max(value)"
          " FROM nexus.points WHERE tag_id = %(tag)s AND time >= %(start)s AND time < %(end)s GROUP BY 1 ORDER BY 1")


@dataclass(frozen=True)
class Result:
    backend: str
    question: str
    layer: Timing
    raw: Timing
    goal_ms: float
    equal: bool  #: the warm-up answers of both variants were the same


def questions(conn: Conn, backend: str, hist: History, ids: list[int], args: argparse.Namespace) -> list[Result]:
    end, start = hist.end, hist.start

    def q1(i: int) -> Params:  # another 20 tags and a window up to 54 minutes earlier each time
        e = end - timedelta(minutes=6 * (i % 10))
        return {"tags": sorted(random.Random(i).sample(ids, min(20, len(ids)))), "start": e - timedelta(hours=8),
                "end": e}

    lookback = timedelta(seconds=max(600, 2 * hist.interval_s))

    def q2(i: int) -> Params:  # the overview as of 0..29 minutes before the end
        return {"asof": end - timedelta(minutes=i % 30), "lookback": lookback}

    def q3(i: int) -> Params:  # another tag and a 30-day window up to 23 hours earlier
        e = end - timedelta(hours=i % 24)
        return {"tag": ids[(i * 7_919) % len(ids)], "start": max(start, e - timedelta(days=30)), "end": e}

    def run(label: str, sql: str, params: Callable[[int], Params]) -> Timing:
        timing = measure(conn, label, sql, params, args.repeat, args.budget_s, args.explain)
        print(f"  {label:<44} {timing.line()}", flush=True)
        return timing

    out = []
    print("Q1 trend panel: 20 tags x 8 h, 1-minute buckets (avg, min, max)")
    a, b = run("layer: nexus.points_1m", Q1_LAYER, q1), run("raw: date_bin over nexus.points", Q1_RAW, q1)
    out.append(Result(backend, "Q1 20 tags x 8 h, 1 min", a, b, 100, same(a.warm, b.warm, 5)))
    print(f"Q2 last-value overview: {len(ids)} tags (value, status, quality, age)")
    a = run("best raw: LATERAL newest row per tag", Q2_BEST, q2)
    b = run("naive raw: DISTINCT ON (tag_id)", Q2_NAIVE, q2)
    c = run(f"layer: points_1m last, newest in {lookback.seconds // 60} min", Q2_1M, q2)
    out.append(Result(backend, f"Q2 last value, {len(ids)} tags", a, b, 100, same(a.warm, b.warm, 6)))
    out.append(Result(backend, "Q2b last value from points_1m", c, b, 100, same(c.warm, b.warm, 2)))
    print(f"Q3 one-tag trend: {min(30, hist.days)} days, 1-hour buckets (avg, min, max)")
    a, b = run("layer: nexus.points_1h", Q3_LAYER, q3), run("raw: date_bin over nexus.points", Q3_RAW, q3)
    out.append(Result(backend, f"Q3 1 tag x {min(30, hist.days)} d, 1 h", a, b, 50, same(a.warm, b.warm, 4)))
    for r in out:
        if not r.equal:
            print(f"  !! {r.question}: the two variants' answers differ", flush=True)
    return out


def bench_backend(backend: str, hist: History, args: argparse.Namespace) -> list[Result]:
    timescale = backend == "timescaledb"
    tmp = Path(tempfile.mkdtemp(prefix=f"nexus-bench-query-{backend}-"))
    settings = {**(TS_SETTINGS if timescale else {}), **({"jit": "off"} if args.no_jit else {})}
    pg = Postgres(tmp / "pg", free_port(), settings=settings)
    print(f"\n=== {backend} ===", flush=True)
    try:
        pg.start()
        dsn = pg.create_database("bench")
        active, made = create(dsn, hist)
        if active != timescale:
            raise SystemExit(f"{backend}: the schema's TimescaleDB path is {'in' if not timescale else ''}active")
        if made:
            print(f"nexus.points partitioned by day: {made} day partitions before the load")
        with psycopg.connect(dsn, prepare_threshold=None) as conn:
            version = conn.execute("SELECT version(), (SELECT extversion FROM pg_extension WHERE extname ="
                                   " 'timescaledb'), current_setting('jit'), pg_jit_available(),"
                                   " current_setting('shared_buffers'), current_setting('work_mem')").fetchone()
            assert version
            print(f"{version[0].split(',')[0]}; timescaledb {version[1] or '-'}; jit {version[2]} (available:"
                  f" {version[3]}); shared_buffers {version[4]}, work_mem {version[5]}")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag, unit)"
                                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", tag_rows(hist.tags))
            conn.commit()
            ids = [r[0] for r in conn.execute("SELECT id FROM nexus.tags ORDER BY path").fetchall()]
            load_s = load(conn, hist, ids, args.copy_rows)
            print(f"loaded {hist.rows:,} rows in {load_s:.1f} s ({hist.rows / load_s:,.0f} rows/s; binary COPY, "
                  f"{max(1, args.copy_rows // hist.tags) * hist.tags:,} rows per transaction, "
                  "encoded by this process while the server stores)", flush=True)
            t = time.perf_counter()
            done = refresh(dsn, timescale)
            print(f"layers: {done} in {time.perf_counter() - t:.1f} s", flush=True)
            t = time.perf_counter()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
            print(f"VACUUM ANALYZE in {time.perf_counter() - t:.1f} s", flush=True)
            row = conn.execute("SELECT count(*) FROM nexus.points").fetchone()
            if not row or row[0] != hist.rows:
                raise SystemExit(f"nexus.points holds {row[0] if row else None} rows, expected {hist.rows}")
            print(f"size: {row[0]:,} rows in nexus.points")
            for line in sizes(conn, timescale):
                print(f"  {line}")
            return questions(conn, backend, hist, ids, args)
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--backend", choices=["both", "postgres", "timescaledb"], default="both")
    ap.add_argument("--tags", type=int, help="number of tags (default 1000; --quick 100)")
    ap.add_argument("--days", type=int, help="days of history (default 31; --quick 3)")
    ap.add_argument("--interval-s", type=int, default=60, help="seconds between two points of a tag")
    ap.add_argument("--repeat", type=int, help="timed repetitions per query (default 50; --quick 10)")
    ap.add_argument("--budget-s", type=float, default=60.0,
                    help="stop repeating a query once its timed runs took this long (seconds)")
    ap.add_argument("--copy-rows", type=int, default=1_000_000, help="rows per COPY transaction")
    ap.add_argument("--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of each query once")
    ap.add_argument("--no-jit", action="store_true", help="run the servers with jit = off (default: on)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 100 tags, 3 days, 10 repetitions")
    args = ap.parse_args()
    quick = (100, 3, 10) if args.quick else (1000, 31, 50)
    args.tags = args.tags or quick[0]
    args.days = args.days or quick[1]
    args.repeat = args.repeat or quick[2]
    now = datetime.now(UTC)
    hist = History(tags=args.tags, days=args.days, interval_s=args.interval_s,
                   end=now.replace(minute=0, second=0, microsecond=0))
    print(f"history: {hist.tags:,} tags x {hist.days} days, one point per tag every {hist.interval_s} s = "
          f"{hist.rows:,} rows, {hist.start:%Y-%m-%d %H:%M} to {hist.end:%Y-%m-%d %H:%M} UTC; "
          f"{args.repeat} repetitions per query (budget {args.budget_s:.0f} s)")
    backends = ["postgres", "timescaledb"] if args.backend == "both" else [args.backend]
    results = [r for b in backends for r in bench_backend(b, hist, args)]
    print(f"\n{'backend':<12} {'question':<30} {'layer p50':>10} {'p99':>8} {'raw p50':>10} {'p99':>9}"
          f" {'raw/layer':>10} {'goal (p99)':>11} {'met':>4}")
    for r in results:
        print(f"{r.backend:<12} {r.question:<30} {r.layer.pct(0.5):10.1f} {r.layer.pct(0.99):8.1f}"
              f" {r.raw.pct(0.5):10.1f} {r.raw.pct(0.99):9.1f} {r.raw.pct(0.5) / r.layer.pct(0.5):9.1f}x"
              f" {f'< {r.goal_ms:.0f} ms':>11} {'yes' if r.layer.pct(0.99) < r.goal_ms else 'no':>4}"
              + ("" if r.equal else "  (answers differ!)"))
    print("ms, client wall time per query; ratio of the p50s; Q2's 'layer' column is the best raw query, "
          "Q2b's the points_1m variant, both against the naive DISTINCT ON")


if __name__ == "__main__":
    main()
