"""The configuration store on PostgreSQL: devices, every version of them, global revisions, audit.

Every change runs in one transaction that locks ``core.state`` (the global revision), so commits are
serialised and revisions dense; it bumps the revision, writes the new device rows, one
``core.device_versions`` row per changed device (enough to rebuild any revision) and one audit row
per changed device with its before/after documents.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway_core.errors import ApiError
from gateway_core.validate import LEVELS, device_path

#: an If-Match precondition: None (none given), "*" (must exist) or the accepted revisions
Precondition = None | Literal["*"] | frozenset[int]


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    doc: dict[str, Any]
    revision: int  #: revision of the device's last change (its ETag)
    owner: str | None = None  #: who manages it besides the API's users (X-Nexus-Owner); None: nobody


@dataclass(frozen=True, slots=True)
class Change:
    device_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None  #: None = deleted


@dataclass(frozen=True, slots=True)
class Commit:
    revision: int  #: the new global revision (the current one when nothing changed)
    changes: tuple[Change, ...]


class Pool:
    """At most ``size`` autocommit connections, opened on demand and reused; broken ones are dropped."""

    def __init__(self, dsn: str, *, size: int = 4, connect_timeout: float = 10.0) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(size)
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = (
                self._idle.pop()
                if self._idle
                else await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=int(self.connect_timeout)
                )
            )
            try:
                yield conn
            finally:
                if (
                    conn.closed
                    or conn.broken
                    or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
                ):
                    await conn.close()
                else:
                    self._idle.append(conn)

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()


def check_precondition(pre: Precondition, current: int | None, what: str) -> None:
    if pre is None:
        return
    if current is None:
        raise ApiError(412, f"If-Match: {what} does not exist", field="If-Match")
    if pre != "*" and current not in pre:
        raise ApiError(412, f"If-Match: {what} is at revision {current}, not {sorted(pre)}", field="If-Match")


class Store:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    # -- reads -------------------------------------------------------------------------------------
    async def revision(self) -> int:
        async with self.pool.connection() as conn:
            return await self._revision(conn)

    async def get_device(self, device_id: str) -> DeviceRow | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT id, doc, revision, owner FROM core.devices WHERE id = %s", (device_id,))
            ).fetchone()
        return DeviceRow(*row) if row else None

    async def all_devices(self) -> list[DeviceRow]:
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute("SELECT id, doc, revision, owner FROM core.devices ORDER BY id")
            ).fetchall()
        return [DeviceRow(*r) for r in rows]

    async def list_devices(
        self,
        *,
        filters: dict[str, str | None],
        ids: set[str] | None,
        limit: int,
        offset: int,
        after: str | None = None,
    ) -> tuple[list[DeviceRow], int]:
        """A page of devices by id (``after``: keyset cursor) and the number matching the filters."""
        where: list[str] = []
        params: list[object] = []
        for key in ("protocol", *LEVELS):
            if filters.get(key) is not None:
                where.append(f"{key} = %s")
                params.append(filters[key])
        if ids is not None:
            where.append("id = ANY(%s)")
            params.append(sorted(ids))
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        async with self.pool.connection() as conn:
            total = await (await conn.execute(f"SELECT count(*) FROM core.devices {cond}", params)).fetchone()
            page = f"{cond} AND id > %s" if cond else "WHERE id > %s"
            rows = await (
                await conn.execute(
                    f"SELECT id, doc, revision, owner FROM core.devices {page if after is not None else cond}"
                    " ORDER BY id LIMIT %s OFFSET %s",
                    [*params, *([after] if after is not None else []), limit, offset],
                )
            ).fetchall()
        assert total is not None
        return [DeviceRow(*r) for r in rows], int(total[0])

    async def snapshot(self, revision: int) -> list[dict[str, Any]]:
        """Every device document as it was at ``revision``."""
        async with self.pool.connection() as conn:
            current = await self._revision(conn)
            if not 0 <= revision <= current:
                raise ApiError(
                    404, f"revision {revision} does not exist (current: {current})", field="revision"
                )
            rows = await (
                await conn.execute(
                    "SELECT doc FROM (SELECT DISTINCT ON (device_id) device_id, doc FROM core.device_versions"
                    " WHERE revision <= %s ORDER BY device_id, revision DESC) v"
                    " WHERE doc IS NOT NULL ORDER BY device_id",
                    (revision,),
                )
            ).fetchall()
        return [r[0] for r in rows]

    async def revisions(self, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        async with self.pool.connection() as conn:
            current = await self._revision(conn)
            cur = conn.cursor(row_factory=dict_row)
            rows = await (
                await cur.execute(
                    "SELECT r.revision, r.at, r.actor, r.action, r.summary, r.rollback_of,"
                    " (SELECT count(*) FROM core.device_versions v WHERE v.revision = r.revision) AS devices_changed"
                    " FROM core.revisions r ORDER BY r.revision DESC LIMIT %s OFFSET %s",
                    (limit, offset),
                )
            ).fetchall()
        return rows, current + 1

    async def audit(
        self, *, target: str | None, revision: int | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        where: list[str] = []
        params: list[object] = []
        if target is not None:
            where.append("target = %s")
            params.append(target)
        if revision is not None:
            where.append("revision = %s")
            params.append(revision)
        cond = f"WHERE {' AND '.join(where)}" if where else ""
        async with self.pool.connection() as conn:
            total = await (await conn.execute(f"SELECT count(*) FROM core.audit {cond}", params)).fetchone()
            cur = conn.cursor(row_factory=dict_row)
            rows = await (
                await cur.execute(
                    f"SELECT id, revision, at, actor, action, target, before, after FROM core.audit {cond}"
                    " ORDER BY id DESC LIMIT %s OFFSET %s",
                    [*params, limit, offset],
                )
            ).fetchall()
        assert total is not None
        return rows, int(total[0])

    # -- writes ------------------------------------------------------------------------------------
    async def create_device(self, doc: dict[str, Any], *, actor: str, owner: str | None = None) -> Commit:
        async with self.pool.connection() as conn, conn.transaction():
            rev = await self._revision(conn, lock=True)
            row = await (
                await conn.execute(
                    "SELECT path FROM core.devices WHERE id = %s OR path = %s", (doc["id"], device_path(doc))
                )
            ).fetchone()
            if row:
                raise ApiError(
                    409, f"device {doc['id']!r} already exists (duplicate UNS path {row[0]!r})", field="id"
                )
            commit = await self._commit(
                conn, rev, actor, "device.create", f"create {doc['id']}", [Change(doc["id"], None, doc)]
            )
            await self._set_owner(conn, doc["id"], None, owner, actor)
            return commit

    async def update_device(
        self,
        device_id: str,
        fn: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        actor: str,
        action: str,
        if_match: Precondition,
        owner: str | None = None,
    ) -> tuple[Commit, DeviceRow | None]:
        """Read-modify-write one device under the revision lock: ``fn(doc)`` returns the new doc (None: delete)."""
        async with self.pool.connection() as conn, conn.transaction():
            rev = await self._revision(conn, lock=True)
            row = await (
                await conn.execute("SELECT id, doc, revision, owner FROM core.devices WHERE id = %s", (device_id,))
            ).fetchone()
            check_precondition(if_match, row[2] if row else None, f"device {device_id!r}")
            if row is None:
                raise ApiError(404, f"device {device_id!r} not found", field="device_id")
            current = DeviceRow(*row)
            new = fn(current.doc)
            if new is not None and owner is not None:
                await self._set_owner(conn, device_id, current.owner, owner, actor)
            owner = current.owner if owner is None else (owner or None)
            if new == current.doc:
                return Commit(rev, ()), DeviceRow(device_id, new, current.revision, owner)
            commit = await self._commit(
                conn,
                rev,
                actor,
                action,
                f"{action.split('.')[1]} {device_id}",
                [Change(device_id, current.doc, new)],
            )
            return commit, (DeviceRow(device_id, new, commit.revision, owner) if new is not None else None)

    async def replace_all(
        self,
        docs: list[dict[str, Any]],
        *,
        actor: str,
        action: str,
        summary: str,
        delete_missing: bool,
        if_match: Precondition,
        rollback_of: int | None = None,
    ) -> Commit:
        """Make the configuration hold ``docs`` (and nothing else when ``delete_missing``): import, rollback."""
        async with self.pool.connection() as conn, conn.transaction():
            rev = await self._revision(conn, lock=True)
            check_precondition(if_match, rev, "the configuration")
            rows = await (await conn.execute("SELECT id, doc FROM core.devices")).fetchall()
            current = {r[0]: r[1] for r in rows}
            changes = [Change(d["id"], current.get(d["id"]), d) for d in docs if current.get(d["id"]) != d]
            if delete_missing:
                wanted = {d["id"] for d in docs}
                changes += [Change(i, doc, None) for i, doc in sorted(current.items()) if i not in wanted]
            if not changes:
                return Commit(rev, ())
            return await self._commit(conn, rev, actor, action, summary, changes, rollback_of=rollback_of)

    async def _set_owner(self, conn: psycopg.AsyncConnection[Any], device_id: str, old: str | None,
                         new: str | None, actor: str) -> None:
        """``new`` becomes the device's owner ('' clears it): audited, not a configuration change."""
        if new is not None and (new or None) != old:
            await conn.execute("UPDATE core.devices SET owner = %s WHERE id = %s", (new or None, device_id))
            await conn.execute(
                "INSERT INTO core.audit (actor, action, target, before, after) VALUES (%s, %s, %s, %s, %s)",
                (actor, "device.owner", f"device:{device_id}", Jsonb({"owner": old}), Jsonb({"owner": new or None})),
            )

    async def _revision(self, conn: psycopg.AsyncConnection[Any], *, lock: bool = False) -> int:
        row = await (await conn.execute(f"SELECT revision FROM core.state{' FOR UPDATE' if lock else ''}")).fetchone()
        assert row is not None
        return int(row[0])

    async def _commit(
        self,
        conn: psycopg.AsyncConnection[Any],
        rev: int,
        actor: str,
        action: str,
        summary: str,
        changes: list[Change],
        *,
        rollback_of: int | None = None,
    ) -> Commit:
        new = rev + 1
        await conn.execute("UPDATE core.state SET revision = %s", (new,))
        await conn.execute(
            "INSERT INTO core.revisions (revision, actor, action, summary, rollback_of)"
            " VALUES (%s, %s, %s, %s, %s)",
            (new, actor, action, summary, rollback_of),
        )
        try:
            for ch in changes:
                if ch.after is None:
                    await conn.execute("DELETE FROM core.devices WHERE id = %s", (ch.device_id,))
                else:
                    d = ch.after
                    await conn.execute(
                        "INSERT INTO core.devices (id, path, enterprise, site, area, line, protocol, doc, revision,"
                        " created_rev) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
                        " path = EXCLUDED.path, enterprise = EXCLUDED.enterprise, site = EXCLUDED.site,"
                        " area = EXCLUDED.area, line = EXCLUDED.line, protocol = EXCLUDED.protocol,"
                        " doc = EXCLUDED.doc, revision = EXCLUDED.revision",
                        (
                            d["id"],
                            device_path(d),
                            *(d[k] for k in LEVELS),
                            d.get("protocol", "modbus_tcp"),
                            Jsonb(d),
                            new,
                            new,
                        ),
                    )
                await conn.execute(
                    "INSERT INTO core.device_versions (device_id, revision, doc) VALUES (%s, %s, %s)",
                    (ch.device_id, new, Jsonb(ch.after) if ch.after is not None else None),
                )
                await conn.execute(
                    "INSERT INTO core.audit (revision, actor, action, target, before, after)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (new, actor, action, f"device:{ch.device_id}", _jsonb(ch.before), _jsonb(ch.after)),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise ApiError(409, f"duplicate UNS path: {exc.diag.message_detail or exc}", field="id") from exc
        return Commit(new, tuple(changes))

    # -- API keys ----------------------------------------------------------------------------------
    async def key_by_hash(self, key_hash: str) -> tuple[str, str] | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT name, role FROM core.api_keys WHERE key_hash = %s", (key_hash,))
            ).fetchone()
        return (row[0], row[1]) if row else None

    async def list_keys(self) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            return await (
                await cur.execute(
                    "SELECT name, role, created_at, created_by FROM core.api_keys ORDER BY name"
                )
            ).fetchall()

    async def create_key(self, name: str, role: str, key_hash: str, *, actor: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            try:
                await conn.execute(
                    "INSERT INTO core.api_keys (name, role, key_hash, created_by) VALUES (%s, %s, %s, %s)",
                    (name, role, key_hash, actor),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise ApiError(409, f"API key {name!r} already exists", field="name") from exc
            await conn.execute(
                "INSERT INTO core.audit (actor, action, target, after) VALUES (%s, %s, %s, %s)",
                (actor, "key.create", f"key:{name}", Jsonb({"name": name, "role": role})),
            )

    async def delete_key(self, name: str, *, actor: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute("DELETE FROM core.api_keys WHERE name = %s RETURNING role", (name,))
            ).fetchone()
            if row is None:
                raise ApiError(404, f"API key {name!r} not found", field="name")
            await conn.execute(
                "INSERT INTO core.audit (actor, action, target, before) VALUES (%s, %s, %s, %s)",
                (actor, "key.delete", f"key:{name}", Jsonb({"name": name, "role": row[0]})),
            )


def _jsonb(doc: dict[str, Any] | None) -> Jsonb | None:
    return Jsonb(doc) if doc is not None else None
