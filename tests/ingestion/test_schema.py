"""Migrations on plain PostgreSQL: applied once, TimescaleDB steps skipped, views usable."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from ingestion.schema import migrate, migrations
from tests.support.historian import cover


async def test_migrations_apply_once_and_skip_timescale_on_plain_postgres(db: str) -> None:
    async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
        first = await migrate(conn)
        second = await migrate(conn)
        assert first.applied == (1, 3, 4, 6, 8, 9) and not first.timescale
        assert second.applied == () and not second.timescale  # 002, 005, 007 looked at again, skipped again
        rows = await (await conn.execute("SELECT version, name FROM nexus.schema_migrations")).fetchall()
        assert rows == [(1, "001_core.sql"), (3, "003_dead_letter_size.sql"), (4, "004_windows_alarms.sql"),
                        (6, "006_points_1h.sql"), (8, "008_reasons.sql"), (9, "009_partitions_rollups.sql")]
        assert [m.requires_timescale for m in migrations()] == [False, True, False, False, True, False, True, False,
                                                                False]
        assert [m.version for m in migrations() if m.requires_plain] == [9]
        await conn.execute("INSERT INTO nexus.tags (path, enterprise, site, area, line, device, tag, unit)"
                           " VALUES ('e/s/a/l/d/t', 'e', 's', 'a', 'l', 'd', 't', 'bar')")
        await cover(conn, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
        await conn.execute("INSERT INTO nexus.points (time, tag_id, value, status) VALUES"
                           " ('2026-01-01 00:00:10+00', 1, 1.0, 0), ('2026-01-01 00:00:50+00', 1, 3.0, 0),"
                           " ('2026-01-01 00:01:10+00', 1, 5.0, 2150236160),"
                           " ('2026-01-01 00:01:20+00', 1, NULL, 2148139008)")
        m = await (await conn.execute(
            "SELECT path, value, quality, unit FROM nexus.metrics ORDER BY time")).fetchall()
        assert m == [("e/s/a/l/d/t", 1.0, "good", "bar"), ("e/s/a/l/d/t", 3.0, "good", "bar"),
                     ("e/s/a/l/d/t", 5.0, "bad", "bar"), ("e/s/a/l/d/t", None, "bad", "bar")]
        b = await (await conn.execute(
            "SELECT min, max, avg, last, samples, value_sum, value_count FROM nexus.points_1m ORDER BY bucket"
        )).fetchall()
        assert b == [(1.0, 3.0, 2.0, 3.0, 2, 4.0, 2), (5.0, 5.0, 5.0, None, 2, 5.0, 1)]
        h = await (await conn.execute(
            "SELECT bucket, min, max, avg, last, samples, value_sum, value_count FROM nexus.points_1h")).fetchall()
        assert [r[1:] for r in h] == [(1.0, 5.0, 3.0, None, 4, 9.0, 3)]
        assert h[0][0].isoformat() == "2026-01-01T00:00:00+00:00"
