"""MySQL and MariaDB (asyncmy): what the SQL backend does differently there.

SQLAlchemy names the family ``mysql`` (``mysql+asyncmy://``, whatever the server) or
``mariadb`` (``mariadb+asyncmy://``); this module serves both.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Delete,
    Dialect,
    MetaData,
    PrimaryKeyConstraint,
    Select,
    String,
    Table,
    delete,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.functions import func
from sqlalchemy.types import TypeDecorator

from typed_session_sql.backends.sql import locks
from typed_session_sql.backends.sql.dialects.support import (
    DialectSupport,
    MigrationLock,
    PurgeLock,
    no_engine_hooks,
)
from typed_session_sql.backends.sql.table import MYSQL_DIALECTS
from typed_session_sql.errors import StoreUnavailableError

__all__ = ["LOCK_HOLDER_QUERY", "SUPPORT", "HexBytes", "LockHolder", "lock_holder"]

_log = logging.getLogger("typed_session_sql")
_HELD = "typed_session_sql.migration_lock"  # connection.info: the GET_LOCK name held


class HexBytes(TypeDecorator[bytes | str]):
    """Bytes (or a str, as its UTF-8 bytes) sent to MySQL or MariaDB as hexadecimal
    digits, unhexed by the server: ``UNHEX(%s)``.

    Without a prepared statement (``prepared_statements=false``, an engine the app made,
    or asyncmy's silent fallback when the server refuses a ``PREPARE``), the driver inlines
    each value in the statement with backslash escapes it makes without regard to the
    connection's charset or ``sql_mode``: under ``gbk``, ``big5``, ``sjis`` or ``cp932`` a
    value's last byte can swallow the backslash (``NO_BACKSLASH_ESCAPES`` breaks every
    escaped quote), and the rest of the value is SQL. Hex digits need no escaping, mean
    the same in every ASCII-based charset and ``sql_mode``, and the server turns them back
    into the exact bytes: no statement depends on escaping being right.
    """

    impl = String
    cache_ok = True

    def bind_expression(self, bindvalue: Any) -> Any:
        return func.unhex(bindvalue)

    def process_bind_param(self, value: bytes | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return (value.encode() if isinstance(value, str) else bytes(value)).hex()


def _purge_batch(table: Table, victims: Select[Any]) -> Delete:
    # MySQL and MariaDB refuse LIMIT in an IN subquery (error 1235), and SKIP LOCKED on a
    # DELETE; a multi-table DELETE joined to a derived table takes both. Oldest expiry
    # first, as the expiry index reads.
    c = table.c
    batch = victims.order_by(c.expires_at).with_for_update(skip_locked=True).subquery("v")
    return delete(table).where(c.id_hash == batch.c.id_hash)


# -- GET_LOCK: the purge and migration locks ------------------------------------------------

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
    """Who holds a ``GET_LOCK`` name another connection asked for."""

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


def _purge_lock_name(conn: AsyncConnection, table: Table) -> str:
    return locks.lock_name(table.schema or conn.engine.url.database, table.name)


async def _take_purge_lock(conn: AsyncConnection, table: Table) -> tuple[bool, bool]:
    """``GET_LOCK`` on a dedicated autocommit connection, released with ``RELEASE_LOCK``
    (per server: on a Galera cluster each node has its own, see docs/production.md). Its
    name is server-wide and anyone can work it out: refused it, the purger asks who holds
    it (`LOCK_HOLDER_QUERY`), and purges where that is not a connection to its own
    database."""
    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
    name = _purge_lock_name(conn, table)
    lock = text("SELECT GET_LOCK(:k, 0)")
    if (await conn.execute(lock, {"k": name})).scalar() == 1:
        return True, True
    return await _purge_without_a_squatted_lock(conn, table), False  # nothing held


async def _purge_without_a_squatted_lock(conn: AsyncConnection, table: Table) -> bool:
    """Whether to purge although GET_LOCK refused the lock: yes if a connection to another
    database holds it (a pass running beside another is safe, ``SKIP LOCKED``, just not
    useful); no if another purger does, with a warning if it has held it too long."""
    name = _purge_lock_name(conn, table)
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
    if holder.seconds >= locks.PURGE_LOCK_HELD_TOO_LONG:
        _log.warning(
            "purge pass skipped: another purger has held the purge lock of %s for %d s",
            table.fullname,
            holder.seconds,
        )
    return False


async def _release_purge_lock(conn: AsyncConnection, table: Table) -> None:
    name = _purge_lock_name(conn, table)
    await conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": name})


def take_server_lock(connection: Connection, name: str, what: str) -> bool:
    """Take the ``GET_LOCK`` ``name`` (``what`` it is, for messages) on ``connection``,
    waiting up to `typed_session_sql.backends.sql.locks.MIGRATION_LOCK_WAIT`; whether it
    was taken. False where a connection to another database holds it: that is a squatter,
    no other migrator, and the caller goes on without it (with a warning). Raises
    `StoreUnavailableError` when the wait is over."""
    deadline = time.monotonic() + locks.MIGRATION_LOCK_WAIT
    while True:
        wait = max(0, min(locks.LOCK_STEP, math.ceil(deadline - time.monotonic())))
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
                f"could not take {what} within {locks.MIGRATION_LOCK_WAIT} s: another "
                "migration holds it, or a connection this user cannot see (another user's, "
                "or another database's)"
            )


def _take_migration_lock(connection: Connection, table: str, schema: str | None) -> None:
    # The connection's lock, as DDL commits there by itself; released by _end_migration.
    # Waited for a bounded time, and not for a squatter (see take_server_lock).
    database = schema or connection.exec_driver_sql("SELECT DATABASE()").scalar()
    name = locks.server_lock_name("migrate", f"{database}.{table}")
    if take_server_lock(connection, name, f"the migration lock of {table}"):
        connection.info[_HELD] = name


def _end_migration(connection: Connection, commit: bool) -> None:
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


async def _table_size(conn: AsyncConnection, table: Table) -> tuple[int | None, str]:
    # InnoDB's own estimate (pages, not rows), as SHOW TABLE STATUS shows it; MySQL 8
    # caches it for information_schema_stats_expiry (a day by default).
    query = text(
        "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"
    )
    size = (await conn.execute(query, {"s": table.schema, "t": table.name})).scalar()
    return size, "table + indexes, InnoDB's estimate"


def create_version_table(connection: Connection, name: str, schema: str | None) -> None:
    """Create Alembic's version table ``name`` as Alembic would, but with an unnamed
    primary key, whose name MySQL and MariaDB ignore with a warning the driver logs."""
    version = Table(
        name,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num"),
        schema=schema,
    )
    version.create(connection, checkfirst=True)


SUPPORT = DialectSupport(
    name="mysql",
    sqlalchemy_names=frozenset(MYSQL_DIALECTS),
    insert_ignoring_conflict=None,  # no ON CONFLICT: a taken id is a unique violation
    purge_batch=_purge_batch,
    bytes_parameter=HexBytes(),
    purge_lock=PurgeLock(take=_take_purge_lock, release=_release_purge_lock),
    migration_lock=MigrationLock(take=_take_migration_lock, end=_end_migration),
    migration_isolation="READ COMMITTED",
    create_version_table=create_version_table,
    table_size=_table_size,
    # SQLAlchemy still calls the driver's rollback() when a connection closes, even in
    # autocommit: a ROLLBACK round trip per checkout. The dialect skips it only after
    # checking that the connection is in autocommit.
    engine_options={"skip_autocommit_rollback": True},
    prepare_engine=no_engine_hooks,
    database_is_a_file=False,
)
"""MySQL's and MariaDB's support."""
