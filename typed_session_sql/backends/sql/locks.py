"""The SQL wing's cross-process locks, per dialect, in one place: the purge lock (one
purger at a time across instances, never waited for) and the migration lock (one migrator
at a time, waited for). Both are named by one scheme (`advisory_key`,
`server_lock_name`), and neither is ever handed back to a pool while it may still be held.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from blake3 import blake3
from sqlalchemy import Table, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from typed_session_sql.backends.sql.failures import translated
from typed_session_sql.backends.sql.table import MYSQL_DIALECTS
from typed_session_sql.errors import StoreUnavailableError
from typed_session_sql.urls import mask_password

__all__ = [
    "MIGRATION_LOCK_WAIT",
    "PURGE_LOCK_HELD_TOO_LONG",
    "advisory_key",
    "end_migration",
    "lock_key",
    "lock_name",
    "purge_lock",
    "server_lock_name",
    "take_migration_lock",
]

_log = logging.getLogger("typed_session_sql")
_HELD = "typed_session_sql.migration_lock"  # connection.info: the GET_LOCK name held


Purpose = Literal["purge", "migrate"]


def _digest(purpose: Purpose, scope: str) -> blake3:
    # The one naming scheme of both locks: every instance of every version must work out
    # the same key for the same table, so this text is frozen.
    return blake3(f"typed_session_sql {purpose} {scope}".encode())


def advisory_key(purpose: Purpose, scope: str) -> int:
    """The PostgreSQL advisory-lock key (a signed 64-bit int) of ``purpose`` on ``scope``."""
    return int.from_bytes(_digest(purpose, scope).digest(8), "big", signed=True)


def server_lock_name(purpose: Purpose, scope: str) -> str:
    """The ``GET_LOCK`` name (MySQL, MariaDB) of ``purpose`` on ``scope``: names are
    server-wide, so ``scope`` names the database, and MySQL refuses names over 64
    characters, so it is hashed."""
    return f"typed_session_sql_{purpose}_{_digest(purpose, scope).hexdigest(8)}"


def lock_key(table_name: str) -> int:
    """The advisory-lock key (a signed 64-bit int) for purging ``table_name``."""
    return advisory_key("purge", table_name)


def lock_name(database: str | None, table_name: str) -> str:
    """The ``GET_LOCK`` name (MySQL, MariaDB) for purging ``table_name`` in ``database``."""
    return server_lock_name("purge", f"{database}.{table_name}")


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


# -- the migration lock: on the one connection a migration runs on, in a greenlet ---------


def take_migration_lock(connection: Connection, table: str, schema: str | None) -> None:
    """Take the migration lock for ``table`` in the transaction `end_migration` ends:
    ``pg_advisory_xact_lock`` on PostgreSQL (released at commit), ``BEGIN IMMEDIATE`` on
    SQLite (its write lock), ``GET_LOCK`` on MySQL and MariaDB (the connection's, as DDL
    commits there by itself; released by `end_migration`)."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # The write lock, taken before the first read, so a second migrator cannot read
        # "no table yet" while the first is creating it. The driver is in autocommit mode,
        # so this is the transaction; end_migration() commits or rolls it back.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        key = advisory_key("migrate", f"{schema}.{table}")
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif dialect in MYSQL_DIALECTS:
        # Waited for a bounded time, and not for a squatter (see take_server_lock).
        database = schema or connection.exec_driver_sql("SELECT DATABASE()").scalar()
        name = server_lock_name("migrate", f"{database}.{table}")
        if take_server_lock(connection, name, f"the migration lock of {table}"):
            connection.info[_HELD] = name


def end_migration(connection: Connection, *, commit: bool) -> None:
    """Commit or roll back the migration's transaction and release its lock; a connection
    that may still hold the lock is invalidated, never handed back to the pool."""
    if connection.dialect.name == "sqlite" and not connection.invalidated:
        try:
            connection.exec_driver_sql("COMMIT" if commit else "ROLLBACK")
        except SQLAlchemyError:
            if commit:
                raise
            connection.invalidate()  # never hand back a connection holding the lock
            return
    if commit:
        connection.commit()
    else:
        connection.rollback()
    name = connection.info.pop(_HELD, None)
    if name is not None and not connection.invalidated:
        try:
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
        except SQLAlchemyError:
            connection.invalidate()  # closing it releases the lock
