"""The shape every dialect module fills in: `DialectSupport` and its parts, and the pieces
several dialects share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Delete, Insert, Select, Table, delete
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import TypeEngine

__all__ = [
    "DialectSupport",
    "MigrationLock",
    "PurgeLock",
    "UnsupportedDialectError",
    "delete_in",
    "no_engine_hooks",
]


class UnsupportedDialectError(ValueError):
    """The engine or URL names a database the SQL backend has no dialect module for."""


@dataclass(frozen=True, slots=True)
class PurgeLock:
    """The cross-instance purge lock's SQL, on a dedicated connection `..locks.purge_lock`
    opens, releases (or invalidates) and closes."""

    take: Callable[[AsyncConnection, Table], Awaitable[tuple[bool, bool]]]
    """Take it: (whether this purger may purge, whether the connection holds anything to
    release). Raises what the driver raises (`..locks` translates it)."""
    release: Callable[[AsyncConnection, Table], Awaitable[None]]
    """Release what ``take`` holds; a failure here makes the caller invalidate the
    connection, whose end releases the lock."""


@dataclass(frozen=True, slots=True)
class MigrationLock:
    """The migration lock, on the one connection a migration runs on (in a greenlet)."""

    take: Callable[[Connection, str, str | None], None]
    """Take the lock for (table, schema), waited for, in the transaction ``end`` ends."""
    end: Callable[[Connection, bool], None]
    """Commit (True) or roll back the migration's transaction and release the lock; a
    connection that may still hold it is invalidated, never handed back to the pool."""


@dataclass(frozen=True, slots=True)
class DialectSupport:
    """What the SQL backend does differently on one database (one value per module)."""

    name: str
    """The family's name, as SQLAlchemy spells its main dialect: ``postgresql``, ``mysql``,
    ``sqlite``."""
    sqlalchemy_names: frozenset[str]
    """Every ``engine.dialect.name`` this module serves (``mysql`` and ``mariadb``)."""

    # -- statements (`..statements`) ------------------------------------------------------
    insert_ignoring_conflict: Callable[[Table, Mapping[str, Any]], Insert] | None
    """The INSERT of ``values`` that skips a taken id (ON CONFLICT DO NOTHING); None where
    the dialect has none, and a taken id fails as a unique violation instead."""
    purge_batch: Callable[[Table, Select[Any]], Delete]
    """The DELETE of the rows the ``victims`` query (expired ids, at most ``max_rows``)
    selects, such that concurrent purgers do not queue on each other."""
    bytes_parameter: TypeEngine[Any] | None
    """The type binary values (the key, the data, the principal) are sent as, where not
    as the column's own (MySQL: hex digits, `.mysql.HexBytes`)."""

    # -- locks (`..locks`) ----------------------------------------------------------------
    purge_lock: PurgeLock | None
    """None where the database serialises writers itself (SQLite's file lock): the purge
    lock is then always free."""
    migration_lock: MigrationLock
    migration_isolation: str
    """The isolation level a migration's connection switches to (the backend's engine runs
    in autocommit)."""
    create_version_table: Callable[[Connection, str, str | None], None] | None
    """Create Alembic's version table (name, schema) before Alembic does, as this dialect
    needs it (MySQL: with an unnamed primary key); None where Alembic's own will do."""

    # -- maintenance (`..maintenance`) ------------------------------------------------------
    table_size: Callable[[AsyncConnection, Table], Awaitable[tuple[int | None, str]]]
    """The table's size in bytes (None if unknown) and what that size covers."""

    # -- the engine (`..engine`) ------------------------------------------------------------
    engine_options: Mapping[str, Any]
    """`create_engine` options this dialect adds (the caller's own win)."""
    prepare_engine: Callable[[AsyncEngine], None]
    """Install what the engine's connections need when they connect (event listeners)."""
    database_is_a_file: bool
    """Whether the URL's database is a file path (SQLite) rather than a database's name:
    no ``db.namespace`` in telemetry; the CLI checks the file exists before a purge."""


def delete_in(table: Table, victims: Select[Any]) -> Delete:
    """The plain purge batch: DELETE ... WHERE id_hash IN (the victims)."""
    return delete(table).where(table.c.id_hash.in_(victims.scalar_subquery()))


def no_engine_hooks(engine: AsyncEngine) -> None:
    """`DialectSupport.prepare_engine` for a dialect that needs nothing on connect."""
