"""PostgreSQL (asyncpg or psycopg): what the SQL backend does differently there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Delete, Insert, Select, Table, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from typed_session_sql.backends.sql.dialects.support import (
    DialectSupport,
    MigrationLock,
    PurgeLock,
    delete_in,
    no_engine_hooks,
)
from typed_session_sql.backends.sql.locks import advisory_key, lock_key

__all__ = ["SUPPORT"]


def _insert_ignoring_conflict(table: Table, values: Mapping[str, Any]) -> Insert:
    return pg_insert(table).values(values).on_conflict_do_nothing()


def _purge_batch(table: Table, victims: Select[Any]) -> Delete:
    # Concurrent purgers take disjoint batches instead of queueing on each other's row
    # locks (and never block a request writing one of those rows for long).
    return delete_in(table, victims.with_for_update(skip_locked=True))


async def _take_purge_lock(conn: AsyncConnection, table: Table) -> tuple[bool, bool]:
    """``pg_try_advisory_xact_lock`` in a transaction of its own, held open for the pass
    and rolled back after it, which releases the lock (a crashed purger's lock dies with
    its connection). A transaction, not a session-level lock: behind a pooler in
    transaction mode (PgBouncer) the open transaction keeps the client on one server
    connection, where a session-level lock would be taken on one server connection and
    released on another. It holds no snapshot meanwhile, so it keeps no purged row from
    VACUUM. The transaction is open whether or not the lock was taken: always held."""
    conn = await conn.execution_options(isolation_level="READ COMMITTED")
    await conn.begin()
    lock = text("SELECT pg_try_advisory_xact_lock(:k)")
    got = bool((await conn.execute(lock, {"k": lock_key(str(table.fullname))})).scalar())
    # The server keeps a query's portal, and its snapshot, until the next statement: one
    # that takes no snapshot (SAVEPOINT) lets VACUUM clean up during the pass.
    await conn.begin_nested()
    return got, True


async def _release_purge_lock(conn: AsyncConnection, table: Table) -> None:
    await conn.rollback()  # ends the transaction: the lock goes with it


def _take_migration_lock(connection: Connection, table: str, schema: str | None) -> None:
    # Released when end_migration commits or rolls back.
    key = advisory_key("migrate", f"{schema}.{table}")
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _end_migration(connection: Connection, commit: bool) -> None:
    if commit:
        connection.commit()
    else:
        connection.rollback()


async def _table_size(conn: AsyncConnection, table: Table) -> tuple[int | None, str]:
    name = conn.dialect.identifier_preparer.format_table(table)
    query = text("SELECT pg_total_relation_size(CAST(:t AS regclass))")
    return (await conn.execute(query, {"t": name})).scalar(), "table + indexes"


SUPPORT = DialectSupport(
    name="postgresql",
    sqlalchemy_names=frozenset({"postgresql"}),
    insert_ignoring_conflict=_insert_ignoring_conflict,
    purge_batch=_purge_batch,
    bytes_parameter=None,
    purge_lock=PurgeLock(take=_take_purge_lock, release=_release_purge_lock),
    migration_lock=MigrationLock(take=_take_migration_lock, end=_end_migration),
    migration_isolation="READ COMMITTED",
    create_version_table=None,
    table_size=_table_size,
    engine_options={},
    prepare_engine=no_engine_hooks,
    database_is_a_file=False,
)
"""PostgreSQL's support."""
