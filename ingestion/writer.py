"""The historian connection and all its SQL.

:class:`Writer` owns one psycopg connection: it connects (:mod:`nexus.pg`), migrates
(:mod:`ingestion.schema`), writes one batch per transaction (dedup messages, resolve tag and reason ids, COPY
points, upsert windows and insert alarm events (statements in :mod:`ingestion.aggregates`), keep dead
letters), expires old message digests, reconnects after a failed or cancelled statement, and closes.
Every operation is bounded (``db.query_timeout``, ``db.migrate_timeout``) and cut short by the
caller's ``stop``. What it stores are :class:`~ingestion.items.Item`s, decoded on arrival.

The caller acknowledges the batch's MQTT messages only after :meth:`Writer.write` returns, i.e.
after COMMIT. A crash before that means redelivery; the ``nexus.ingested_messages`` digests make
the redelivered messages no-ops, so points are neither lost nor doubled.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from ingestion import partitions
from ingestion.aggregates import store_events, store_windows
from ingestion.errors import DbError, DbStopped
from ingestion.items import MAX_ERROR_BYTES, OVERSIZE_PREFIX_BYTES, Item, bounded_text, decode_item
from ingestion.rows import COPY_SQL, HEADER, TRAILER, encode_rows, with_reason
from ingestion.schema import SchemaState, migrate
from ingestion.settings import DbSettings
from nexus import pg
from nexus.runtime import Backoff
from proto import DevicePath
from proto.aggregates import AlarmEvent, Window

# decoding moved to ingestion.items; these names stay importable from here
__all__ = ["MAX_ERROR_BYTES", "OVERSIZE_PREFIX_BYTES", "Item", "WriteResult", "Writer", "bounded_text", "decode_item"]

log = logging.getLogger("ingestion.writer")

T = TypeVar("T")

#: reason ids kept in memory; reasons are categories (a few per tag at most), so this is a bound, not a size
MAX_CACHED_REASONS = 10_000


@dataclass
class WriteResult:
    stored_messages: int = 0
    duplicate_messages: int = 0
    dead_letters: int = 0
    points: int = 0
    windows: int = 0  #: rows of nexus.windows inserted or replaced
    events: int = 0  #: alarm events stored
    repeated_events: int = 0  #: alarm events already stored (or twice in the transaction): skipped
    copy_seconds: float = 0.0
    new_tags: int = 0
    partitions: int = 0  #: day partitions made for these points (plain PostgreSQL: a backfill)
    dead: list[Item] = field(default_factory=list)

    def add(self, other: WriteResult) -> None:
        for name in ("stored_messages", "duplicate_messages", "dead_letters", "points", "windows", "events",
                     "repeated_events", "copy_seconds", "new_tags", "partitions"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dead += other.dead


def _point_times(items: list[Item]) -> Iterator[int]:
    for it in items:
        if it.batch is not None and it.error is None:
            for p in it.batch.points:
                yield p.ts


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {bounded_text(str(exc).strip())}"


class Writer:
    """The one owner of the historian connection and of every SQL statement ingestion runs. Not
    concurrency-safe: one task at a time (the daemon's flush loop)."""

    def __init__(self, db: DbSettings, *, worker: str) -> None:
        self.db = db
        self.worker = worker
        self._conn: psycopg.AsyncConnection | None = None
        self._ready = False
        # device path -> tag name -> (tag id, unit); filled after commits only, kept across reconnects
        self._tags: dict[str, dict[str, tuple[int, str | None]]] = {}
        self._reasons: dict[str, int] = {}  # reason text -> nexus.reasons id; the same


    @property
    def ready(self) -> bool:
        """Migrated, and the last batch transaction (if any since) committed: ``/readyz``'s "db"."""
        return self._ready

    # -- the connection --------------------------------------------------------------------------------
    async def open(self, stop: asyncio.Event) -> SchemaState | None:
        """Connect and bring the schema up to date, retried until it works; None if ``stop`` came
        first. Raises :class:`~ingestion.errors.PermanentError` when a migration itself fails."""
        db = self.db
        backoff = Backoff(first=0.5, cap=10.0)
        while (conn := await self._connect(stop)) is not None:
            try:
                state = await pg.bounded(migrate(conn, retention_days=db.retention_days,
                                                 compress_after_days=db.compress_after_days,
                                                 retention_1m_days=db.retention_1m_days,
                                                 retention_1h_days=db.retention_1h_days,
                                                 late_data_days=db.late_data_days),
                                         timeout=db.migrate_timeout, stop=stop)
            except pg.Stopped:
                break
            except (psycopg.Error, TimeoutError) as exc:
                log.warning("migrations not applied (%s); retrying", bounded_text(str(exc) or type(exc).__name__))
                await conn.close()
                if await backoff.wait(stop):
                    return None
                continue
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
            self._ready = True
            return state
        if conn is not None:
            await conn.close()
        return None

    async def reconnect(self, stop: asyncio.Event) -> bool:
        """A new connection in place of the old one (closed first); False if ``stop`` came first."""
        await self.close()
        conn = await self._connect(stop)
        if conn is None:
            return False
        self._conn = conn
        return True

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connect(self, stop: asyncio.Event) -> psycopg.AsyncConnection | None:
        """Connect with capped backoff until it works or ``stop`` is set."""
        return await pg.connect(self.db.dsn, connect_timeout=self.db.connect_timeout, stop=stop)

    def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None:  # closed after a failure and not reconnected: as psycopg says of a closed one
            raise psycopg.OperationalError("the connection is closed")
        return self._conn

    async def _bounded(self, op: Coroutine[Any, Any, T], stop: asyncio.Event) -> T:
        """``op`` under ``db.query_timeout``, cut short by ``stop``; failures as :class:`DbError`."""
        try:
            return await pg.bounded(op, timeout=self.db.query_timeout, stop=stop)
        except pg.Stopped as exc:
            raise DbStopped(_describe(exc)) from exc
        except (psycopg.Error, TimeoutError) as exc:
            raise DbError(_describe(exc)) from exc

    # -- statements ------------------------------------------------------------------------------------
    async def write(self, items: list[Item], *, stop: asyncio.Event) -> WriteResult:
        """Store ``items`` in one transaction, committed when this returns. Raises :class:`DbStopped`
        if ``stop`` came first, :class:`DbError` if it failed or timed out; either way the connection
        is closed (the statement may have left it in any state) until :meth:`reconnect`."""
        try:
            res = await self._bounded(self._write_or_split(items), stop)
        except DbStopped:
            await self.close()
            raise
        except DbError:
            self._ready = False
            await self.close()
            raise
        self._ready = True
        return res

    async def expire_digests(self, *, stop: asyncio.Event) -> int:
        """Delete the message digests older than ``db.dedup_window_hours`` (a redelivery older than
        that is stored again); how many. Raises :class:`DbError`; the connection is left as it is (the
        next batch finds out whether it still works)."""
        return await self._bounded(self._expire_digests(), stop)

    async def _expire_digests(self) -> int:
        cur = await self._connection().execute(
            "DELETE FROM nexus.ingested_messages WHERE ingested_at < now() - make_interval(hours => %s)",
            (self.db.dedup_window_hours,))
        return cur.rowcount

    async def _write_or_split(self, items: list[Item], *, partition_tries: int = 3) -> WriteResult:
        """On a data error, fall back to one transaction per message so that only the offending
        message becomes a dead letter. Points of a day without a partition (plain PostgreSQL: a backfill)
        get it made, and the transaction is tried again (a few times: another worker may be making the
        same days); a point too far ahead for one makes its message a dead letter."""
        try:
            return await self._write(items)
        except psycopg.errors.CheckViolation as exc:
            if not partitions.is_missing_partition(exc) or partition_tries == 0:
                return await self._split(items, exc)
            days, made = await partitions.add_for_points(self._connection(), _point_times(items),
                                                         future_days=self.db.partition_future_days)
            if not days:
                return await self._split(items, exc)
            res = await self._write_or_split(items, partition_tries=partition_tries - 1)
            res.partitions += made
            return res
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            return await self._split(items, exc)

    async def _split(self, items: list[Item], exc: psycopg.Error) -> WriteResult:
        if len(items) == 1:
            items[0].fail(exc, "rejected by database: ")
            return await self._write(items)
        log.warning("batch of %d messages rejected (%s); retrying message by message", len(items),
                    bounded_text(str(exc)))
        total = WriteResult()
        for item in items:
            total.add(await self._write_or_split([item]))
        return total

    async def _write(self, items: list[Item]) -> WriteResult:
        res = WriteResult()
        good: dict[bytes, Item] = {}
        for it in items:
            if it.error is not None:
                res.dead.append(it)
            elif it.digest not in good:
                good[it.digest] = it
            else:
                res.duplicate_messages += 1
        conn = self._connection()
        new_tag_rows: dict[str, dict[str, tuple[int, str | None]]] = {}
        new_reasons: dict[str, int] = {}
        units: list[tuple[str, str, int, str]] = []  # (device, tag, id, new unit): cached once committed
        async with conn.transaction():
            fresh: list[Item] = []
            if good:
                digests = list(good)
                cur = await conn.execute(
                    "INSERT INTO nexus.ingested_messages (digest, topic, points)"
                    " SELECT * FROM unnest(%s::bytea[], %s::text[], %s::int[])"
                    " ON CONFLICT (digest) DO NOTHING RETURNING digest",
                    (digests, [good[d].topic for d in digests], [good[d].rows for d in digests]))
                inserted = {r[0] for r in await cur.fetchall()}
                fresh = [good[d] for d in digests if d in inserted]
                res.duplicate_messages += len(good) - len(fresh)
            if fresh:
                new_tag_rows, units = await self._resolve_tags(fresh)
                point_items = [it for it in fresh if it.batch is not None]
                if point_items:
                    t0 = time.perf_counter()
                    res.points, new_reasons = await self._copy_points(point_items, new_tag_rows)
                    res.copy_seconds = time.perf_counter() - t0
                if len(point_items) < len(fresh):
                    await self._store_aggregates(fresh, new_tag_rows, res)
                res.stored_messages = len(fresh)
            if res.dead:
                await conn.execute(
                    "INSERT INTO nexus.dead_letters (topic, payload, error, worker, size, sha256)"
                    " SELECT t, p, e, %s, s, h FROM unnest(%s::text[], %s::bytea[], %s::text[], %s::bigint[],"
                    " %s::bytea[]) AS d(t, p, e, s, h)",
                    (self.worker, [i.topic for i in res.dead], [i.payload for i in res.dead],
                     [i.error for i in res.dead], [i.size or len(i.payload) for i in res.dead],
                     [i.sha256 or hashlib.sha256(i.payload).digest() for i in res.dead]))
                res.dead_letters = len(res.dead)
        # committed: now the new tag and reason ids are real and may be cached
        if len(self._reasons) + len(new_reasons) > MAX_CACHED_REASONS:
            self._reasons.clear()  # reasons are categories, so this is rare; the next batches look them up again
        self._reasons.update(new_reasons)
        for dev, tag, tag_id, unit in units:
            self._tags[dev][tag] = (tag_id, unit)
        for dev, tags in new_tag_rows.items():
            self._tags.setdefault(dev, {}).update(tags)
            res.new_tags += len(tags)
        return res

    async def _copy_points(self, items: list[Item], new_tag_rows: dict[str, dict[str, tuple[int, str | None]]],
                           ) -> tuple[int, dict[str, int]]:
        """COPY the points of ``items`` (tags resolved), each item's rows sent while the next are encoded
        (the server works while Python does); how many, and the ids of reasons not cached yet. A row whose
        reason has no id yet is held back, the reasons are created after the COPY and those rows follow in a
        second one: the common path never waits for a lookup."""
        conn, reasons = self._connection(), self._reasons
        held: list[tuple[bytes, str]] = []
        n = 0
        async with conn.cursor().copy(COPY_SQL) as copy:
            await copy.write(HEADER)
            for it in items:
                device, batch = it.decoded()
                ids = self._tags.get(device.path, {})
                extra = new_tag_rows.get(device.path)
                if extra:  # tags new in this transaction (none known under the same name)
                    ids = {**ids, **extra}
                await copy.write(encode_rows(batch.points, ids, reasons, held))
                n += len(batch.points)
            await copy.write(TRAILER)
        if not held:
            return n, {}
        new = await self._resolve_reasons({r for _, r in held})
        async with conn.cursor().copy(COPY_SQL) as copy:
            await copy.write(HEADER + b"".join(with_reason(row, new[r]) for row, r in held) + TRAILER)
        return n, new

    async def _resolve_reasons(self, texts: set[str]) -> dict[str, int]:
        """``nexus.reasons`` ids of ``texts``, created where new."""
        conn = self._connection()
        wanted = sorted(texts)  # one order for every worker: concurrent inserts of the same texts cannot deadlock
        await conn.execute("INSERT INTO nexus.reasons (text) SELECT unnest(%s::text[]) ON CONFLICT (text) DO NOTHING",
                           (wanted,))
        cur = await conn.execute("SELECT text, id FROM nexus.reasons WHERE text = ANY(%s)", (wanted,))
        return {text: rid for text, rid in await cur.fetchall()}  # noqa: C416 - typed: text -> id

    async def _store_aggregates(self, items: list[Item], new_tag_rows: dict[str, dict[str, tuple[int, str | None]]],
                                res: WriteResult) -> None:
        """The windows and alarm events of ``items`` (tags resolved), in the open transaction."""
        windows: list[tuple[int, Window]] = []
        events: list[tuple[int, AlarmEvent]] = []
        for it in items:
            if it.device is None:
                continue
            ids, extra = self._tags.get(it.device.path, {}), new_tag_rows.get(it.device.path, {})
            if it.windows is not None:
                windows += [((ids.get(w.tag) or extra[w.tag])[0], w) for w in it.windows.windows]
            elif it.events is not None:
                events += [((ids.get(e.tag) or extra[e.tag])[0], e) for e in it.events.events]
        conn = self._connection()
        res.windows = await store_windows(conn, windows)
        res.events, res.repeated_events = await store_events(conn, events)

    async def _resolve_tags(self, items: list[Item]) -> tuple[dict[str, dict[str, tuple[int, str | None]]],
                                                              list[tuple[str, str, int, str]]]:
        """Ids for tags not in the cache (created if new), and the (device, tag, id, unit) of the cached tags
        whose unit changed (their rows updated here; the cache only once the transaction commits)."""
        missing: dict[str, tuple[DevicePath, str, str | None]] = {}
        changed: dict[int, tuple[str, str, str]] = {}  # tag id -> (device, tag, new unit)
        for it in items:
            dev = it.device
            assert dev is not None, it.error
            known = self._tags.get(dev.path, {})
            if it.batch is not None:  # the hot case: every tag known, its unit unchanged (one pass, no generator)
                get = known.get
                for p in it.batch.points:
                    entry = get(p[0])
                    if entry is None or (p[4] and p[4] != entry[1]):
                        break
                else:
                    continue
            for tag, unit in it.tag_refs():
                entry = known.get(tag)
                if entry is None:
                    path = f"{dev.path}/{tag}"
                    if path not in missing or (unit and not missing[path][2]):  # windows/events name no unit
                        missing[path] = (dev, tag, unit)
                elif unit and unit != entry[1]:
                    changed[entry[0]] = (dev.path, tag, unit)
        conn = self._connection()
        units = [(d, tag, tag_id, unit) for tag_id, (d, tag, unit) in changed.items()]
        if units:
            await conn.execute(
                "UPDATE nexus.tags t SET unit = u.unit FROM unnest(%s::int[], %s::text[]) AS u(id, unit)"
                " WHERE t.id = u.id", ([u[2] for u in units], [u[3] for u in units]))
        out: dict[str, dict[str, tuple[int, str | None]]] = {}
        if not missing:
            return out, units
        paths = list(missing)
        cols = list(zip(*[(path, d.enterprise, d.site, d.area, d.line, d.device, tag, unit)
                          for path, (d, tag, unit) in missing.items()], strict=True))
        await conn.execute(
            "INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag, unit)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::text[], %s::text[], %s::text[]) ON CONFLICT (path) DO NOTHING", [list(c) for c in cols])
        cur = await conn.execute("SELECT id, path, unit FROM nexus.tags WHERE path = ANY(%s)", (paths,))
        for tag_id, path, unit in await cur.fetchall():
            dev, tag, _ = missing[path]
            out.setdefault(dev.path, {})[tag] = (tag_id, unit)
        return out, units
