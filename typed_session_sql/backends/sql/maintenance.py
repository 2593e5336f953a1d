"""The SQL backend's two maintenance capabilities: the purge lock and table statistics.

Both run on a connection of their own from the engine's pool, through SQLAlchemy (they are
rare, and need a connection-scoped lock or dialect-specific queries), never on the
connections the backend holds for sessions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from blake3 import blake3
from sqlalchemy import Table, case, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from typed_session_sql.backend import TableStats
from typed_session_sql.backends.sql.failures import translated
from typed_session_sql.backends.sql.table import MYSQL_DIALECTS
from typed_session_sql.errors import StoreUnavailableError
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


# A purge pass takes seconds to minutes; a purger holding the lock longer than this has
# probably hung (its connection idle, its pass stuck), and every other purger's passes are
# skipped meanwhile: each skip says so in a warning.
PURGE_LOCK_HELD_TOO_LONG = 600  # seconds

# Who holds a GET_LOCK name: the holder's connection id, the database this connection is
# in, and, where this user can see the holder (always its own connections; all of them with
# the PROCESS privilege), the holder's database and how long it has been idle (seconds).
# A lock connection is idle from the GET_LOCK on: that is how long it has held the lock.
LOCK_HOLDER_QUERY = text(
    "SELECT IS_USED_LOCK(:k), DATABASE(), p.DB, p.TIME FROM (SELECT 1) AS one"
    " LEFT JOIN information_schema.PROCESSLIST AS p ON p.ID = IS_USED_LOCK(:k)"
)


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a ``GET_LOCK`` name another connection asked for (MySQL, MariaDB)."""

    seen: bool
    """Whether this user can see the holder (its own connections; all with PROCESS)."""
    here: bool
    """Whether the holder is a connection to this connection's database, as every instance
    of the application is: GET_LOCK names are server-wide, so a connection to another
    database holding one is squatting it, by mistake or not."""
    seconds: int
    """How long it has held it (0 where unknown)."""


def lock_holder(row: Sequence[Any] | None) -> LockHolder | None:
    """The holder `LOCK_HOLDER_QUERY`'s ``row`` describes; None if the lock is free."""
    if row is None or row[0] is None:
        return None
    _, database, holders_database, seconds = row
    seen = seconds is not None
    here = seen and holders_database == database
    return LockHolder(seen=seen, here=here, seconds=int(seconds or 0))


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
    each node has its own, see docs/production.md). Its name is server-wide and anyone can
    work it out: refused it, the purger asks who holds it (`LOCK_HOLDER_QUERY`), and
    yields True where that is not a connection to its own database. Elsewhere (SQLite,
    whose writers its file lock serialises): always yields True.
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
        if not got and dialect != "postgresql":
            got = await _purge_without_a_squatted_lock(conn, table)
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


# How long a migrator waits for the migration lock (MySQL, MariaDB), in steps of
# _LOCK_STEP seconds (GET_LOCK's own wait): a migration takes seconds, so a lock held this
# long is kept by mistake (a squatter this user cannot see, a stuck session).
MIGRATION_LOCK_WAIT = 300  # seconds
_LOCK_STEP = 10


def take_server_lock(connection: Connection, name: str, what: str) -> bool:
    """Take the ``GET_LOCK`` ``name`` (``what`` it is, for messages) on ``connection``,
    waiting up to `MIGRATION_LOCK_WAIT`; whether it was taken. False where a
    connection to another database holds it: that is a squatter, no other migrator, and
    the caller goes on without it (with a warning). Raises `StoreUnavailableError`
    when the wait is over."""
    deadline = time.monotonic() + MIGRATION_LOCK_WAIT
    while True:
        wait = max(0, min(_LOCK_STEP, math.ceil(deadline - time.monotonic())))
        lock = text("SELECT GET_LOCK(:name, :wait)")
        taken = connection.execute(lock, {"name": name, "wait": wait}).scalar()
        if taken == 1:
            return True
        if taken != 0:
            raise StoreUnavailableError(f"could not take {what} (GET_LOCK)")
        holder = lock_holder(connection.execute(LOCK_HOLDER_QUERY, {"k": name}).first())
        if holder is not None and holder.seen and not holder.here:
            _log.warning(
                "%s is held by a connection to another database: going on without it", what
            )
            return False
        if time.monotonic() >= deadline:
            raise StoreUnavailableError(
                f"could not take {what} within {MIGRATION_LOCK_WAIT} s: another migration "
                "holds it, or a connection this user cannot see (another user's, or another "
                "database's)"
            )


async def _purge_without_a_squatted_lock(conn: AsyncConnection, table: Table) -> bool:
    """Whether to purge although GET_LOCK refused the lock: yes if a connection to another
    database holds it (a pass running beside another is safe, ``SKIP LOCKED``, just not
    useful); no if another purger does, with a warning if it has held it too long."""
    name = lock_name(table.schema or conn.engine.url.database, table.name)
    holder = lock_holder((await conn.execute(LOCK_HOLDER_QUERY, {"k": name})).first())
    if holder is None:
        return False  # released meanwhile: the next pass takes it
    if not holder.here:
        _log.warning(
            "the purge lock of %s is held by a connection to another database, or one this "
            "user cannot see: purging without it",
            table.fullname,
        )
        return True
    if holder.seconds >= PURGE_LOCK_HELD_TOO_LONG:
        _log.warning(
            "purge pass skipped: another purger has held the purge lock of %s for %d s",
            table.fullname,
            holder.seconds,
        )
    return False


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
