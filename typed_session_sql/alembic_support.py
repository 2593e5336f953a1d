"""Alembic for the session table: where our scripts are, which URL, table and schema they
run on, one version record per session table, one migrator at a time, and what an
application's own ``env.py`` needs.

Settings come, first match wins, from ``-x key=value`` on the Alembic command line, from
``Config.attributes`` (set by `make_config`), from the environment
(``TYPED_SESSION_SQL_URL``, ``TYPED_SESSION_SQL_TABLE``, ``TYPED_SESSION_SQL_SCHEMA``), else
the defaults; the URL has none (``sqlalchemy.url`` in the ini file also names one): a
migration never picks a database nobody named.

**Version records.** Each session table has its own version table, named by
`version_table` (``typed_sessions_alembic_version`` for the default table), so any
number of session tables live in one schema, each migrated on its own. Before 0.2 every
table shared ``typed_session_sql_alembic_version``; a run finds that old record and carries
it over to the table's own (if the table exists), leaving the old one in place.

**One migrator at a time.** `upgrade`, `downgrade` and our ``env.py`` run the
migration in one transaction that first takes a lock: ``pg_advisory_xact_lock`` on
PostgreSQL (per table, released at commit), ``BEGIN IMMEDIATE`` on SQLite (its write lock;
others wait up to the engine's ``busy_timeout``), ``GET_LOCK`` on MySQL and MariaDB (per
database and table, released after the commit; DDL commits there by itself, so the lock
is the connection's, not the transaction's). N processes migrating one fresh database at
once take turns: the first creates the table, the others find it at head.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from blake3 import blake3
from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from typed_session_sql.backends.sql.engine import URL_ENV
from typed_session_sql.backends.sql.failures import translated
from typed_session_sql.backends.sql.table import (
    DEFAULT_TABLE,
    MYSQL_DIALECTS,
    EpochMicros,
    Utf8Bytes,
)
from typed_session_sql.errors import MigrationError
from typed_session_sql.urls import mask_password

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "BRANCH_LABEL",
    "LEGACY_VERSION_TABLE",
    "SCHEMA_ENV",
    "TABLE_ENV",
    "URL_ENV",
    "MigrationOptions",
    "Transition",
    "current",
    "downgrade",
    "exclude_session_tables",
    "head",
    "include_name",
    "make_config",
    "options",
    "refuse_a_table_recorded_elsewhere",
    "render_item",
    "script_location",
    "serialised",
    "upgrade",
    "version_table",
]

TABLE_ENV = "TYPED_SESSION_SQL_TABLE"
SCHEMA_ENV = "TYPED_SESSION_SQL_SCHEMA"
BRANCH_LABEL = "typed_session_sql"
LEGACY_VERSION_TABLE = "typed_session_sql_alembic_version"
"""The version table every session table shared before 0.2 (see the module docstring)."""

_ENV = {"url": URL_ENV, "table": TABLE_ENV, "schema": SCHEMA_ENV}
_ATTRIBUTE_PREFIX = "typed_session_sql."
# PostgreSQL truncates identifiers at 63 bytes; Alembic adds "_pkc" for the version
# table's primary key, so the version table's name stays within 59.
_MAX_VERSION_TABLE = 59
_SUFFIX = "_alembic_version"
_MYSQL_LOCK = "typed_session_sql.migration_lock"  # connection.info: the GET_LOCK name held
# What an application's own Alembic history records its revisions in, by default.
_APP_VERSION_TABLE = "alembic_version"
# Alembic's chatter on every run (the plugins it set up, the dialect, transactional DDL):
# below WARNING it is dropped while the library migrates; the change itself is logged once.
_CHATTY = ("alembic.runtime.migration", "alembic.runtime.plugins")
_log = logging.getLogger("typed_session_sql")


@dataclass(frozen=True, slots=True)
class MigrationOptions:
    url: str | None
    """None if nothing names a database: there is no default one to migrate by mistake."""
    table: str
    schema: str | None


@dataclass(frozen=True, slots=True)
class Transition:
    """What one migration run did to one session table's version record."""

    table: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    carried_over: bool = False
    """The record was carried over from the shared pre-0.2 version table first."""

    def __str__(self) -> str:
        before, after = _revisions(self.before), _revisions(self.after)
        if before == after:
            return f"{self.table}: {after}, nothing to do"
        return f"{self.table}: {before} -> {after}"


def _revisions(heads: tuple[str, ...]) -> str:
    return ", ".join(heads) if heads else "(none)"


def version_table(table: str) -> str:
    """The name of ``table``'s own Alembic version table: ``<table>_alembic_version``,
    shortened with a hash of the full name where that would exceed 59 characters."""
    name = table + _SUFFIX
    if len(name) <= _MAX_VERSION_TABLE:
        return name
    digest = blake3(table.encode()).hexdigest(4)
    keep = _MAX_VERSION_TABLE - len(_SUFFIX) - len(digest) - 1
    return f"{table[:keep]}_{digest}{_SUFFIX}"


def script_location() -> Path:
    """Our migration scripts, inside the package (so in the wheel too)."""
    return Path(__file__).resolve().parent / "migrations"


def make_config(
    url: str | None = None, table: str | None = None, schema: str | None = None
) -> Config:
    """An Alembic config for our scripts; None leaves a setting to ``-x``/env/defaults."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    for key, value in (("url", url), ("table", table), ("schema", schema)):
        if value is not None:
            config.attributes[_ATTRIBUTE_PREFIX + key] = value
    return config


def options(config: Config, x_arguments: Mapping[str, str]) -> MigrationOptions:
    """Resolve the settings for one Alembic run (called from ``env.py`` and revisions)."""

    def setting(key: str) -> str | None:
        value = x_arguments.get(key) or config.attributes.get(_ATTRIBUTE_PREFIX + key)
        return value or os.environ.get(_ENV[key]) or None

    ini_url = config.get_main_option("sqlalchemy.url")
    return MigrationOptions(
        url=setting("url") or ini_url or None,
        table=setting("table") or DEFAULT_TABLE,
        schema=setting("schema"),
    )


# -- running our migrations ---------------------------------------------------------------

Step = Callable[[Connection], None]
T = TypeVar("T")


async def upgrade(
    engine: AsyncEngine, table: str, schema: str | None, revision: str = "head"
) -> Transition:
    """Upgrade ``table`` to ``revision`` with the packaged migrations, over ``engine``.

    Serialised across processes (see the module docstring). Raises
    `MigrationError` for an unknown revision or a version
    record that disagrees with the database (the table exists without one: the
    application's own Alembic history manages it; or the record names a table that is
    gone), and `StoreUnavailableError` if the database fails (on a missing schema or
    database, say). Alembic's INFO chatter is dropped meanwhile; a change is logged once
    (INFO, logger ``typed_session_sql``).
    """
    from alembic import command

    return await _run_command(engine, table, schema, lambda c: command.upgrade(c, revision))


async def downgrade(
    engine: AsyncEngine, table: str, schema: str | None, revision: str
) -> Transition:
    """Downgrade ``table`` to ``revision`` (``base`` drops it), serialised like `upgrade`."""
    from alembic import command

    return await _run_command(engine, table, schema, lambda c: command.downgrade(c, revision))


async def current(engine: AsyncEngine, table: str, schema: str | None) -> tuple[str, ...]:
    """The revisions ``table``'s version record holds (or the shared pre-0.2 record's, if
    that one applies and has not been carried over yet); () if never migrated."""

    def read(connection: Connection) -> tuple[str, ...]:
        return _recorded(connection, table, schema) or _legacy_record(connection, table, schema)

    with _quiet_alembic():
        return await _on_connection(engine, table, read, "read the revision of")


def head() -> str | None:
    """The newest revision our scripts have."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(script_location())).get_current_head()


async def _run_command(
    engine: AsyncEngine, table: str, schema: str | None, command: Callable[[Config], None]
) -> Transition:
    from alembic.util.exc import CommandError

    config = make_config(table=table, schema=schema)

    def step(connection: Connection) -> None:
        config.attributes["connection"] = connection  # env.py runs on it, lock held
        try:
            command(config)
        except CommandError as error:  # "Can't locate revision ...": the caller's to fix
            raise MigrationError(f"{table}: {error}") from None

    with _quiet_alembic():
        done = await serialised(engine, table, schema, step)
    if done.before != done.after:
        _log.info("migrated %s on %s", done, where(engine))
    return done


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    def loud_enough(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    loggers = [logging.getLogger(name) for name in _CHATTY]
    for logger in loggers:
        logger.addFilter(loud_enough)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(loud_enough)


def where(engine: AsyncEngine) -> str:
    """The database ``engine`` works on, for messages: its URL, password masked."""
    return mask_password(engine.url.render_as_string(hide_password=True))


async def serialised(engine: AsyncEngine, table: str, schema: str | None, step: Step) -> Transition:
    """Run ``step`` on one connection in one transaction, holding the migration lock for
    ``table``; carry a pre-0.2 record over first; check the table exists afterwards if the
    record says it should; commit. Returns the record before and after."""

    def run(connection: Connection) -> Transition:
        _take_lock(connection, table, schema)
        try:
            carried = _carry_over(connection, table, schema)
            before = _recorded(connection, table, schema)
            if not before:
                _check_unrecorded(connection, table, schema)
                _create_version_table(connection, table, schema)
            step(connection)
            after = _recorded(connection, table, schema)
            if after and not inspect(connection).has_table(table, schema=schema):
                raise MigrationError(
                    f"the version table {version_table(table)!r} records revision "
                    f"{_revisions(after)} but the session table {table!r} does not exist "
                    f"(dropped by hand?); to create it again, drop {version_table(table)!r} "
                    "and migrate again"
                )
            _end(connection, commit=True)
        except BaseException:
            _end(connection, commit=False)
            raise
        return Transition(table, before, after, carried_over=carried)

    return await _on_connection(engine, table, run, "migrate the session table")


async def _on_connection(
    engine: AsyncEngine, table: str, work: Callable[[Connection], T], doing: str
) -> T:
    # Migrations need a transaction; the backend's engine runs in autocommit, so this one
    # connection switches (SQLite stays in autocommit and gets BEGIN IMMEDIATE instead).
    isolation = "AUTOCOMMIT" if engine.dialect.name == "sqlite" else "READ COMMITTED"
    with translated(table, f"{doing} {table} on {where(engine)}"):
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level=isolation)
            return await conn.run_sync(work)


def _check_unrecorded(connection: Connection, table: str, schema: str | None) -> None:
    """Refuse to create a table that exists without a record of ours: it was made by
    ``create_schema()`` or by the application's own Alembic history, and Alembic would
    fail on ``CREATE TABLE`` with a message that names neither."""
    inspector = inspect(connection)
    if not inspector.has_table(table, schema=schema):
        return
    ours = _script_revisions()
    app_record: tuple[str, ...] = ()
    if inspector.has_table(_APP_VERSION_TABLE, schema=schema):
        app_record = _heads(connection, _APP_VERSION_TABLE, schema)
    if ours.intersection(app_record):
        raise MigrationError(
            f"the session table {table!r} is managed by your own Alembic history: "
            f"{_APP_VERSION_TABLE!r} records its revision {_revisions(app_record)} "
            "(typed_session_sql:migrations/versions in version_locations). Migrate with "
            "`alembic upgrade heads` only: remove `backend.migrate()` and "
            "`typed-session-sql migrate` from your start-up and deploy steps"
        )
    raise MigrationError(
        f"the session table {table!r} exists but has no record in "
        f"{version_table(table)!r}: it was made by create_schema() or by another Alembic "
        "history (version_locations). If your own Alembic history manages it, migrate "
        "with `alembic upgrade heads` only; if create_schema() made it (development), drop "
        "it and migrate again"
    )


def refuse_a_table_recorded_elsewhere(table: str, schema: str | None) -> None:
    """Called by our first revision: when an application's own Alembic history runs it
    (way 2) on a database where ``typed-session-sql migrate`` or ``backend.migrate()``
    already created the table (way 1), stop with a message naming both ways instead of
    failing on ``CREATE TABLE``. Nothing to check offline (``--sql``) or on our own runs."""
    from alembic import op
    from alembic.util.exc import CommandError

    migration = op.get_context()
    if migration.as_sql or migration.version_table == version_table(table):
        return
    if inspect(op.get_bind()).has_table(version_table(table), schema=schema):
        raise CommandError(
            f"the session table {table!r} is migrated by typed-session-sql itself (its "
            f"record is in {version_table(table)!r}): keep to `typed-session-sql migrate` "
            "or `backend.migrate()`, and remove typed_session_sql:migrations/versions from "
            "version_locations (docs/migrations.md, way 1)"
        )


def _script_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(script_location()))
    return {script.revision for script in scripts.walk_revisions()}


def _create_version_table(connection: Connection, table: str, schema: str | None) -> None:
    """Create the version table as Alembic would, but with an unnamed primary key on
    MySQL and MariaDB, which ignore the name with a warning the driver logs at first start."""
    if connection.dialect.name not in MYSQL_DIALECTS:
        return  # Alembic creates it
    version = Table(
        version_table(table),
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num"),
        schema=schema,
    )
    version.create(connection, checkfirst=True)


def _lock_key(table: str, schema: str | None) -> int:
    digest = blake3(f"typed_session_sql migrate {schema}.{table}".encode()).digest(8)
    return int.from_bytes(digest, "big", signed=True)


def _take_lock(connection: Connection, table: str, schema: str | None) -> None:
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # The write lock, taken before the first read, so a second migrator cannot read
        # "no table yet" while the first is creating it. The driver is in autocommit mode,
        # so this is the transaction; _end() commits or rolls it back.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif dialect == "postgresql":
        key = _lock_key(table, schema)
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif dialect in MYSQL_DIALECTS:
        # Lock names are server-wide (and at most 64 characters): the database's name is in
        # the hash. Waited for a bounded time, and not for a squatter (see take_server_lock).
        from typed_session_sql.backends.sql.maintenance import take_server_lock

        database = schema or connection.exec_driver_sql("SELECT DATABASE()").scalar()
        digest = blake3(f"typed_session_sql migrate {database}.{table}".encode()).hexdigest(8)
        name = f"typed_session_sql_migrate_{digest}"
        if take_server_lock(connection, name, f"the migration lock of {table}"):
            connection.info[_MYSQL_LOCK] = name


def _end(connection: Connection, *, commit: bool) -> None:
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
    name = connection.info.pop(_MYSQL_LOCK, None)
    if name is not None and not connection.invalidated:
        try:
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
        except SQLAlchemyError:
            connection.invalidate()  # closing it releases the lock


def _recorded(connection: Connection, table: str, schema: str | None) -> tuple[str, ...]:
    return _heads(connection, version_table(table), schema)


def _heads(connection: Connection, version: str, schema: str | None) -> tuple[str, ...]:
    from alembic.migration import MigrationContext

    opts = {"version_table": version, "version_table_schema": schema}
    return MigrationContext.configure(connection, opts=opts).get_current_heads()


def _legacy_record(connection: Connection, table: str, schema: str | None) -> tuple[str, ...]:
    """The shared pre-0.2 record, if ``table`` has none of its own and exists (a record for
    a table that does not exist belonged to another table)."""
    inspector = inspect(connection)
    if inspector.has_table(version_table(table), schema=schema):
        return ()
    if not inspector.has_table(LEGACY_VERSION_TABLE, schema=schema):
        return ()
    if not inspector.has_table(table, schema=schema):
        return ()
    return _heads(connection, LEGACY_VERSION_TABLE, schema)


def _carry_over(connection: Connection, table: str, schema: str | None) -> bool:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    legacy = _legacy_record(connection, table, schema)
    if not legacy:
        return False
    opts = {"version_table": version_table(table), "version_table_schema": schema}
    context = MigrationContext.configure(connection, opts=opts)
    scripts = ScriptDirectory(str(script_location()))
    for revision in legacy:
        context.stamp(scripts, revision)
    return True


# -- for an application's own env.py ------------------------------------------------------

IncludeName = Callable[[str | None, str, Mapping[str, str | None]], bool]


def exclude_session_tables(*tables: str) -> IncludeName:
    """An ``include_name`` hook for ``context.configure(...)`` that hides ``tables`` (the
    session tables; default: ``$TYPED_SESSION_SQL_TABLE`` or ``typed_sessions``), their
    version tables and the pre-0.2 shared one from autogenerate, so it never writes a
    ``drop_table`` for them. Everything else is included."""

    def include(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
        if type_ != "table" or name is None:
            return True
        names = tables or (os.environ.get(TABLE_ENV) or DEFAULT_TABLE,)
        hidden = {LEGACY_VERSION_TABLE, *names, *(version_table(t) for t in names)}
        return name not in hidden

    return include


include_name: IncludeName = exclude_session_tables()
"""``include_name`` for the default table (or ``$TYPED_SESSION_SQL_TABLE``)."""


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """A ``render_item`` hook: writes our timestamp type as ``sa.BigInteger()`` and our
    MySQL principal type as ``sa.VARBINARY(...)`` (the columns they are), so a generated
    revision needs no import of this package."""
    if type_ == "type" and isinstance(obj, EpochMicros):
        return "sa.BigInteger()"
    if type_ == "type" and isinstance(obj, Utf8Bytes):
        return f"sa.VARBINARY(length={obj.impl.length})"
    return False
