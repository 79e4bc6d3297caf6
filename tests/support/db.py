"""Reading a test database directly (what ingestion stored)."""

from __future__ import annotations

from typing import Any

import psycopg


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def stored_points(dsn: str) -> int:
    """Rows in nexus.points; 0 while the schema does not exist yet (ingestion creates it) or the
    database is down."""
    try:
        return int(query(dsn, "SELECT count(*) FROM nexus.points")[0][0])
    except psycopg.Error:
        return 0
