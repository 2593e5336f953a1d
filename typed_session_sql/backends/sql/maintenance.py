"""The SQL backend's table statistics, on a connection of its own from the engine's pool,
through SQLAlchemy (rare, and dialect-specific), never on the connections the backend holds
for sessions. The purge lock is in `.locks`, beside the migration lock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from typed_session_sql.backend import TableStats
from typed_session_sql.backends.sql.dialects import DialectSupport

__all__ = ["table_stats"]


async def table_stats(
    engine: AsyncEngine, table: Table, now: datetime, support: DialectSupport
) -> TableStats:
    """Count ``table``'s rows at ``now`` and measure its size.

    One aggregate statement for the counts; the size is the dialect's (``support``):
    ``pg_total_relation_size`` (table, indexes and TOAST) on PostgreSQL,
    ``information_schema.TABLES`` on MySQL and MariaDB, the ``dbstat`` table on SQLite, or
    the whole database file where SQLite was built without it.
    """
    c = table.c
    counts = select(
        func.count(),
        func.count(case((c.expires_at <= now, 1))),
        func.count(case((c.expires_at.is_(None), 1))),
        func.min(c.expires_at),
    ).select_from(table)
    async with engine.connect() as conn:
        total, expired, never, oldest = (await conn.execute(counts)).one()
        size, size_of = await support.table_size(conn, table)
    return TableStats(
        live=int(total) - int(expired),
        never_expire=int(never),
        expired=int(expired),
        oldest_expiry=oldest,
        size_bytes=int(size) if size is not None else None,
        size_of=size_of,
    )
