"""The SQL backend's table statistics, on a connection of its own from the engine's pool,
through SQLAlchemy (rare, and dialect-specific), never on the connections the backend holds
for sessions. The purge lock is in `.locks`, beside the migration lock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from typed_session_sql.backend import TableStats
from typed_session_sql.backends.sql.table import MYSQL_DIALECTS

__all__ = ["table_stats"]


async def table_stats(engine: AsyncEngine, table: Table, now: datetime) -> TableStats:
    """Count ``table``'s rows at ``now`` and measure its size.

    One aggregate statement for the counts; the size comes from ``pg_total_relation_size``
    (table, indexes and TOAST) on PostgreSQL, from ``information_schema.TABLES`` on MySQL and
    MariaDB, and from the ``dbstat`` table on SQLite, or the whole database file where
    SQLite was built without it.
    """
    c = table.c
    counts = select(
        func.count(),
        func.count(case((c.expires_at <= now, 1))),
        func.count(case((c.expires_at.is_(None), 1))),
        func.min(c.expires_at),
    ).select_from(table)
    size: int | None = None
    size_of = "unknown"
    async with engine.connect() as conn:
        total, expired, never, oldest = (await conn.execute(counts)).one()
        dialect = engine.dialect.name
        if dialect == "postgresql":
            name = engine.dialect.identifier_preparer.format_table(table)
            query = text("SELECT pg_total_relation_size(CAST(:t AS regclass))")
            size, size_of = (await conn.execute(query, {"t": name})).scalar(), "table + indexes"
        elif dialect in MYSQL_DIALECTS:
            # InnoDB's own estimate (pages, not rows), as SHOW TABLE STATUS shows it; MySQL 8
            # caches it for information_schema_stats_expiry (a day by default).
            query = text(
                "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"
            )
            size = (await conn.execute(query, {"s": table.schema, "t": table.name})).scalar()
            size_of = "table + indexes, InnoDB's estimate"
        elif dialect == "sqlite":
            try:
                query = text(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name = :t OR name IN "
                    "(SELECT name FROM sqlite_master WHERE tbl_name = :t)"
                )
                size, size_of = (
                    (await conn.execute(query, {"t": table.name})).scalar(),
                    "table + indexes",
                )
            except Exception:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
                pages = (await conn.execute(text("PRAGMA page_count"))).scalar()
                page_size = (await conn.execute(text("PRAGMA page_size"))).scalar()
                size, size_of = int(pages or 0) * int(page_size or 0), "whole database file"
    return TableStats(
        live=int(total) - int(expired),
        never_expire=int(never),
        expired=int(expired),
        oldest_expiry=oldest,
        size_bytes=int(size) if size is not None else None,
        size_of=size_of,
    )
