"""The SQL backend's two maintenance capabilities: the purge lock and table statistics.

Both run on a connection of their own from the engine's pool, through SQLAlchemy (they are
rare, and need a connection-scoped lock or dialect-specific queries), never on the
connections the backend holds for sessions.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import anyio
from blake3 import blake3
from sqlalchemy import Table, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from typed_session_sql.backends.sql.failures import translated
from typed_session_sql.backends.sql.table import MYSQL_DIALECTS
from typed_session_sql.stats import TableStats
from typed_session_sql.urls import mask_password

__all__ = ["lock_key", "lock_name", "purge_lock", "table_stats"]

_log = logging.getLogger("typed_session_sql")


def lock_key(table_name: str) -> int:
    """The advisory-lock key (a signed 64-bit int) for purging ``table_name``."""
    digest = blake3(f"typed_session_sql purge {table_name}".encode()).digest(8)
    return int.from_bytes(digest, "big", signed=True)


def lock_name(database: str | None, table_name: str) -> str:
    """The ``GET_LOCK`` name (MySQL, MariaDB) for purging ``table_name`` in ``database``:
    lock names are server-wide, and MySQL refuses names over 64 characters."""
    digest = blake3(f"typed_session_sql purge {database}.{table_name}".encode()).hexdigest(8)
    return f"typed_session_sql_purge_{digest}"


@asynccontextmanager
async def purge_lock(engine: AsyncEngine, table: Table) -> AsyncIterator[bool]:
    """Hold the cross-instance purge lock for ``table``; yield whether it was taken.

    On PostgreSQL: ``pg_try_advisory_xact_lock`` in a transaction of its own, on a
    dedicated connection, held open for the pass and rolled back after it, which releases
    the lock (a crashed purger's lock dies with its connection). A transaction, not a
    session-level lock: behind a pooler in transaction mode (PgBouncer) the open transaction
    keeps the client on one server connection, where a session-level lock would be taken on
    one server connection and released on another. It holds no snapshot meanwhile, so it
    keeps no purged row from VACUUM. On MySQL and MariaDB: ``GET_LOCK`` on a dedicated
    autocommit connection, released with ``RELEASE_LOCK`` (per server: on a Galera cluster
    each node has its own, see docs/production.md). Elsewhere (SQLite, whose writers its
    file lock serialises): always yields True.
    """
    dialect = engine.dialect.name
    if dialect != "postgresql" and dialect not in MYSQL_DIALECTS:
        yield True
        return
    where = mask_password(engine.url.render_as_string(hide_password=True))
    doing = f"take the purge lock for {table.fullname} on {where}"
    with translated(str(table.fullname), doing):
        conn = await engine.connect()
    got = released = False
    try:
        with translated(str(table.fullname), doing):
            if dialect == "postgresql":
                got = await _take_transaction_lock(conn, lock_key(str(table.fullname)))
            else:
                name = lock_name(table.schema or engine.url.database, table.name)
                got = await _take_server_lock(conn, name)
        released = not got and dialect != "postgresql"  # nothing held: nothing to release
        yield got
    finally:
        with anyio.CancelScope(shield=True):
            if not released:
                with anyio.move_on_after(10):
                    try:
                        if dialect == "postgresql":
                            await conn.rollback()  # ends the transaction: the lock goes with it
                        else:
                            name = lock_name(table.schema or engine.url.database, table.name)
                            await conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": name})
                        released = True
                    except Exception:
                        _log.debug("could not release the purge lock", exc_info=True)
            if not released:
                # Never hand a connection that may hold the lock back to the pool (a failure
                # or a cancellation while taking it, or a release that failed): closing it
                # ends its database session, which releases the lock.
                await conn.invalidate()
            await conn.close()


async def _take_transaction_lock(conn: AsyncConnection, key: int) -> bool:
    """PostgreSQL: a transaction-level advisory lock, in a transaction left open."""
    conn = await conn.execution_options(isolation_level="READ COMMITTED")
    await conn.begin()
    lock = text("SELECT pg_try_advisory_xact_lock(:k)")
    got = bool((await conn.execute(lock, {"k": key})).scalar())
    # The server keeps a query's portal, and its snapshot, until the next statement: one
    # that takes no snapshot (SAVEPOINT) lets VACUUM clean up during the pass.
    await conn.begin_nested()
    return got


async def _take_server_lock(conn: AsyncConnection, name: str) -> bool:
    """MySQL and MariaDB: ``GET_LOCK``, held by the connection until released or closed."""
    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
    return (await conn.execute(text("SELECT GET_LOCK(:k, 0)"), {"k": name})).scalar() == 1


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
