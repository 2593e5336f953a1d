"""The migration runner of the SQL backend: our Alembic scripts run on one session table,
one migrator at a time (`.locks`), with one version record per session table.

**Version records.** Each session table has its own version table, named by
`version_table` (``typed_sessions_alembic_version`` for the default table), so any
number of session tables live in one schema, each migrated on its own. Before 0.2 every
table shared ``typed_session_sql_alembic_version``; a run finds that old record and carries
it over to the table's own (if the table exists), leaving the old one in place.

**One migrator at a time.** `upgrade`, `downgrade` and our ``env.py`` run the
migration in one transaction that first takes the migration lock (`.locks`). N processes
migrating one fresh database at once take turns: the first creates the table, the others
find it at head.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from blake3 import blake3
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from typed_session_sql.backends.sql.dialects import dialect_for
from typed_session_sql.backends.sql.failures import translated
from typed_session_sql.backends.sql.settings import ATTRIBUTE_PREFIX
from typed_session_sql.errors import MigrationError
from typed_session_sql.urls import mask_password

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "BRANCH_LABEL",
    "LEGACY_VERSION_TABLE",
    "Transition",
    "current",
    "downgrade",
    "head",
    "make_config",
    "refuse_a_table_recorded_elsewhere",
    "script_location",
    "serialised",
    "upgrade",
    "version_table",
    "where",
]

BRANCH_LABEL = "typed_session_sql"
LEGACY_VERSION_TABLE = "typed_session_sql_alembic_version"
"""The version table every session table shared before 0.2 (see the module docstring)."""

# PostgreSQL truncates identifiers at 63 bytes; Alembic adds "_pkc" for the version
# table's primary key, so the version table's name stays within 59.
_MAX_VERSION_TABLE = 59
_SUFFIX = "_alembic_version"
# What an application's own Alembic history records its revisions in, by default.
_APP_VERSION_TABLE = "alembic_version"
# Alembic's chatter on every run (the plugins it set up, the dialect, transactional DDL):
# below WARNING it is dropped while the library migrates; the change itself is logged once.
_CHATTY = ("alembic.runtime.migration", "alembic.runtime.plugins")
_log = logging.getLogger("typed_session_sql")


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
    return Path(__file__).resolve().parents[2] / "migrations"


def make_config(
    url: str | None = None, table: str | None = None, schema: str | None = None
) -> Config:
    """An Alembic config for our scripts; None leaves a setting to ``-x``/env/defaults."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    for key, value in (("url", url), ("table", table), ("schema", schema)):
        if value is not None:
            config.attributes[ATTRIBUTE_PREFIX + key] = value
    return config


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

    support = dialect_for(engine.dialect.name)
    lock = support.migration_lock

    def run(connection: Connection) -> Transition:
        lock.take(connection, table, schema)
        try:
            carried = _carry_over(connection, table, schema)
            before = _recorded(connection, table, schema)
            if not before:
                _check_unrecorded(connection, table, schema)
                if support.create_version_table is not None:  # else Alembic creates it
                    support.create_version_table(connection, version_table(table), schema)
            step(connection)
            after = _recorded(connection, table, schema)
            if after and not inspect(connection).has_table(table, schema=schema):
                raise MigrationError(
                    f"the version table {version_table(table)!r} records revision "
                    f"{_revisions(after)} but the session table {table!r} does not exist "
                    f"(dropped by hand?); to create it again, drop {version_table(table)!r} "
                    "and migrate again"
                )
            lock.end(connection, True)  # commit
        except BaseException:
            lock.end(connection, False)  # roll back
            raise
        return Transition(table, before, after, carried_over=carried)

    return await _on_connection(engine, table, run, "migrate the session table")


async def _on_connection(
    engine: AsyncEngine, table: str, work: Callable[[Connection], T], doing: str
) -> T:
    # Migrations need a transaction; the backend's engine runs in autocommit, so this one
    # connection switches (SQLite stays in autocommit and gets BEGIN IMMEDIATE instead).
    isolation = dialect_for(engine.dialect.name).migration_isolation
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
