"""The SQL that stores edge windows and alarm events (``nexus.windows``, ``nexus.alarm_events``; see
``migrations/004_windows_alarms.sql``). Called by :class:`ingestion.writer.Writer` on its connection,
inside its batch transaction, with tag ids it resolved: the writer stays the one owner of the
connection, this module only says what the statements are.

Idempotency. A message stored before is skipped as a whole by its digest (the writer). Below that:

* a window is keyed (tag, width, start): one sent again replaces the stored row, except that an
  incomplete window never replaces a complete one; the same key twice in one transaction keeps the
  last (by the same rule), so the upsert touches each row once;
* an alarm event is keyed (tag, alarm, ts, raised/cleared): a repeat is skipped. Raise/clear rows
  (``nexus.alarms``) are derived from the events at read time, so the order events arrive in (re-sends,
  several workers) does not change the result, and no lock is needed.

Rows are written in key order, so two workers upserting the same windows take row locks in the same
order and cannot deadlock each other.
"""

from __future__ import annotations

import math

import psycopg

from proto.aggregates import AlarmEvent, Window


def _num(x: float | None) -> float | None:
    """NaN (no value: the contract's null) and infinities are stored as NULL."""
    return x if x is not None and math.isfinite(x) else None


async def store_windows(conn: psycopg.AsyncConnection, windows: list[tuple[int, Window]]) -> int:
    """Upsert ``(tag id, window)`` pairs; how many rows were inserted or replaced."""
    chosen: dict[tuple[int, int, int], Window] = {}
    for tag_id, w in windows:
        key = (tag_id, w.width, w.start)
        old = chosen.get(key)
        if old is None or w.complete or not old.complete:
            chosen[key] = w
    if not chosen:
        return 0
    keys = sorted(chosen)
    ws = [chosen[k] for k in keys]
    cur = await conn.execute(
        "INSERT INTO nexus.windows (tag_id, width_ms, start, count, min, max, avg, twa, first, last, status,"
        " complete)"
        " SELECT t, w, TIMESTAMPTZ 'epoch' + s * INTERVAL '1 millisecond', c, mn, mx, a, tw, f, l, q, ok"
        " FROM unnest(%s::int[], %s::int[], %s::bigint[], %s::int[], %s::float8[], %s::float8[], %s::float8[],"
        " %s::float8[], %s::float8[], %s::float8[], %s::bigint[], %s::bool[])"
        " AS u(t, w, s, c, mn, mx, a, tw, f, l, q, ok)"
        " ON CONFLICT (tag_id, width_ms, start) DO UPDATE SET count = EXCLUDED.count, min = EXCLUDED.min,"
        " max = EXCLUDED.max, avg = EXCLUDED.avg, twa = EXCLUDED.twa, first = EXCLUDED.first,"
        " last = EXCLUDED.last, status = EXCLUDED.status, complete = EXCLUDED.complete"
        " WHERE EXCLUDED.complete OR NOT nexus.windows.complete",
        ([k[0] for k in keys], [w.width for w in ws], [w.start for w in ws], [w.count for w in ws],
         [_num(w.min) for w in ws], [_num(w.max) for w in ws], [_num(w.avg) for w in ws],
         [_num(w.twa) for w in ws], [_num(w.first) for w in ws], [_num(w.last) for w in ws],
         [w.status for w in ws], [w.complete for w in ws]))
    return max(cur.rowcount, 0)


async def store_events(conn: psycopg.AsyncConnection, events: list[tuple[int, AlarmEvent]]) -> tuple[int, int]:
    """Insert ``(tag id, event)`` pairs not stored yet; ``(stored, repeats)``: a repeat is an event
    already in the historian, or the same event twice in this transaction (the first is kept)."""
    chosen: dict[tuple[int, str, int, bool], AlarmEvent] = {}
    for tag_id, e in events:
        chosen.setdefault((tag_id, e.alarm, e.ts, e.active), e)
    if not chosen:
        return 0, len(events)
    keys = sorted(chosen)
    es = [chosen[k] for k in keys]
    cur = await conn.execute(
        "INSERT INTO nexus.alarm_events (tag_id, alarm, ts, active, value, limit_value, severity)"
        " SELECT t, a, TIMESTAMPTZ 'epoch' + s * INTERVAL '1 millisecond', r, v, l, sev"
        " FROM unnest(%s::int[], %s::text[], %s::bigint[], %s::bool[], %s::float8[], %s::float8[], %s::int[])"
        " AS u(t, a, s, r, v, l, sev)"
        " ON CONFLICT (tag_id, alarm, ts, active) DO NOTHING",
        ([k[0] for k in keys], [e.alarm for e in es], [e.ts for e in es], [e.active for e in es],
         [_num(e.value) for e in es], [_num(e.limit) for e in es], [e.severity for e in es]))
    stored = max(cur.rowcount, 0)
    return stored, len(events) - stored
