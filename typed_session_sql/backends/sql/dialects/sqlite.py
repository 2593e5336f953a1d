"""SQLite (aiosqlite): what the SQL backend does differently there."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Insert, Table, event, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from typed_session_sql.backends.sql import locks
from typed_session_sql.backends.sql.dialects.support import (
    DialectSupport,
    MigrationLock,
    delete_in,
)

__all__ = ["BUSY_TIMEOUT_MS", "SQLITE_PRAGMAS", "SUPPORT"]

# busy_timeout first: switching to WAL itself needs the lock another process may hold.
# Several processes writing at once then wait their turn instead of failing with "database
# is locked"; every operation is one short statement, so waits are short.
BUSY_TIMEOUT_MS = 30_000
SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
)


def _insert_ignoring_conflict(table: Table, values: Mapping[str, Any]) -> Insert:
    return sqlite_insert(table).values(values).on_conflict_do_nothing()


def _take_migration_lock(connection: Connection, table: str, schema: str | None) -> None:
    # The write lock, taken before the first read, so a second migrator cannot read
    # "no table yet" while the first is creating it. The driver is in autocommit mode
    # (migration_isolation), so this is the transaction; _end_migration ends it.
    # A migrator waits for every one ahead of it, each holding the lock for a migration:
    # as long as migrators wait on other databases, not a statement's 30 s (four
    # processes on a loaded CI machine ran past 30 s).
    connection.exec_driver_sql(f"PRAGMA busy_timeout = {locks.MIGRATION_LOCK_WAIT * 1000}")
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        _statement_wait(connection)
        raise


def _statement_wait(connection: Connection) -> None:
    """Give the connection back the busy timeout of the store's statements."""
    try:
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except SQLAlchemyError:
        connection.invalidate()  # never pool a connection that waits minutes


def _end_migration(connection: Connection, commit: bool) -> None:
    if not connection.invalidated:
        try:
            connection.exec_driver_sql("COMMIT" if commit else "ROLLBACK")
        except SQLAlchemyError:
            if commit:
                raise
            connection.invalidate()  # never hand back a connection holding the lock
            return
        _statement_wait(connection)
    if commit:
        connection.commit()
    else:
        connection.rollback()


async def _table_size(conn: AsyncConnection, table: Table) -> tuple[int | None, str]:
    try:
        query = text(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = :t OR name IN "
            "(SELECT name FROM sqlite_master WHERE tbl_name = :t)"
        )
        return (await conn.execute(query, {"t": table.name})).scalar(), "table + indexes"
    except Exception:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        pages = (await conn.execute(text("PRAGMA page_count"))).scalar()
        page_size = (await conn.execute(text("PRAGMA page_size"))).scalar()
        return int(pages or 0) * int(page_size or 0), "whole database file"


def _prepare_engine(engine: AsyncEngine) -> None:
    event.listen(engine.sync_engine, "do_connect", _create_file_private)
    event.listen(engine.sync_engine, "connect", _pragmas)


def _create_file_private(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
    """Create the database file 0600 before SQLite creates it with the umask's mode."""
    path = cargs[0] if cargs else cparams.get("database")
    if not isinstance(path, str) or path in ("", ":memory:") or path.startswith("file:"):
        return
    # If it exists, SQLite opens it as it is; if it cannot be made, SQLite says why.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    try:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
        finally:
            cursor.close()
    except BaseException:
        # SQLAlchemy before 2.1 strands a connection whose connect event failed (the
        # switch to WAL timed out, say), and an aiosqlite connection's worker thread then
        # keeps the process from exiting.
        with contextlib.suppress(Exception):
            dbapi_connection.close()
        raise


SUPPORT = DialectSupport(
    name="sqlite",
    sqlalchemy_names=frozenset({"sqlite"}),
    insert_ignoring_conflict=_insert_ignoring_conflict,
    purge_batch=delete_in,
    bytes_parameter=None,
    purge_lock=None,  # writers are serialised by the file lock
    migration_lock=MigrationLock(take=_take_migration_lock, end=_end_migration),
    migration_isolation="AUTOCOMMIT",  # BEGIN IMMEDIATE is the transaction
    create_version_table=None,
    table_size=_table_size,
    # SQLAlchemy still calls the driver's rollback() when a connection closes, even in
    # autocommit; on aiosqlite that no-op costs a thread hop, measured at +11-16% per load
    # (benchmarks/sqlite_store.py). The dialect skips it only after checking that the
    # connection is in autocommit.
    engine_options={"skip_autocommit_rollback": True},
    prepare_engine=_prepare_engine,
    database_is_a_file=True,
)
"""SQLite's support."""
