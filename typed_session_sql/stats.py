"""What a session table holds: live and expired rows, the oldest expiry, its size.

Backs ``typed-session-sql stats``; SQL backends only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["TableStats", "table_stats"]


@dataclass(frozen=True, slots=True)
class TableStats:
    """What a session table holds, as of one moment."""

    live: int
    """Rows not expired at that moment, never-expiring ones included."""
    never_expire: int
    expired: int
    """Rows a purge would remove."""
    oldest_expiry: datetime | None
    """The earliest expiry in the table (None if no row expires); in the past, it says how
    far behind cleanup is."""
    size_bytes: int | None
    """The table's size on disk, where the database can tell; see ``size_of``."""
    size_of: str


async def table_stats(backend: Any, now: datetime) -> TableStats:
    """Count ``backend``'s rows (an :class:`SqlBackend`: it needs ``engine`` and ``table``).

    One aggregate statement for the counts; the size comes from ``pg_total_relation_size``
    (table, indexes and TOAST) on PostgreSQL and from the ``dbstat`` table on SQLite, or the
    whole database file where SQLite was built without it.
    """
    from sqlalchemy import case, func, select, text

    engine, table = backend.engine, backend.table
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
                size, size_of = int(pages) * int(page_size), "whole database file"
    return TableStats(
        live=int(total) - int(expired),
        never_expire=int(never),
        expired=int(expired),
        oldest_expiry=oldest,
        size_bytes=int(size) if size is not None else None,
        size_of=size_of,
    )
