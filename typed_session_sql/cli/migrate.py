"""``typed-session-sql migrate``: run the session table's Alembic migrations."""

from __future__ import annotations

import argparse
from typing import Any

from typed_session_sql.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    Database,
    add_database_options,
    check_connection,
    database,
    make_engine,
    run,
)

DESCRIPTION = """\
Create, upgrade or downgrade the session table with its Alembic migrations (shipped in
the package, so this works from the wheel alone):

    typed-session-sql migrate upgrade head --url postgresql+asyncpg://user@host/db
    typed-session-sql migrate downgrade base --url ...
    typed-session-sql migrate current --url ...
    typed-session-sql migrate history

Every action but history needs --url (or $TYPED_SESSION_SQL_URL): there is no default
database. upgrade and downgrade print one line saying what they did and where
(typed_sessions: (none) -> 0001, database postgresql+asyncpg://user@host/db), current the
recorded revision (with --check, exit 1 unless it is the newest: a deploy gate). Several
processes may migrate one database at once: they take turns (an advisory lock on
PostgreSQL, GET_LOCK on MySQL and MariaDB, SQLite's write lock).
"""


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_database_options(common)
    changes = argparse.ArgumentParser(add_help=False, parents=[common])
    changes.add_argument("--sql", action="store_true", help="print the SQL instead of running it")

    parser = subparsers.add_parser(
        "migrate",
        help="create or upgrade the session table (Alembic)",
        description=f"{DESCRIPTION}\n{EXIT_CODES_HELP}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", parents=[changes], help="upgrade to a revision")
    upgrade.add_argument("revision", nargs="?", default="head", help="default: head")
    downgrade = actions.add_parser("downgrade", parents=[changes], help="downgrade to a revision")
    downgrade.add_argument("revision", help="target revision, e.g. base or -1")
    current = actions.add_parser("current", parents=[common], help="show the table's revision")
    current.add_argument(
        "--check", action="store_true", help=f"exit {EXIT_FAILED} unless the table is at head"
    )
    actions.add_parser("history", help="list the revisions")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.action == "history":
        return _history()
    db = database(args)
    if getattr(args, "sql", False):
        return run("migrate", db, lambda: _offline(db, args.action, args.revision))
    return run("migrate", db, lambda: _online(db, args))


def _history() -> int:
    from alembic import command

    from typed_session_sql.alembic_support import make_config

    command.history(make_config())
    return EXIT_OK


async def _online(db: Database, args: argparse.Namespace) -> int:
    from sqlalchemy.pool import NullPool

    from typed_session_sql import alembic_support

    engine = make_engine(db, poolclass=NullPool)
    try:
        await check_connection(engine, db)
        if args.action == "current":
            revisions = await alembic_support.current(engine, db.table, db.schema)
            at_head = revisions == (alembic_support.head(),)
            print(f"{db.table}: at {_describe(revisions)}, database {db.masked_url}")
            return EXIT_FAILED if args.check and not at_head else EXIT_OK
        # A MigrationError (unknown revision, a record that disagrees) leaves by run().
        if args.action == "upgrade":
            done = await alembic_support.upgrade(engine, db.table, db.schema, args.revision)
        else:
            done = await alembic_support.downgrade(engine, db.table, db.schema, args.revision)
        if done.carried_over:
            print(
                f"{db.table}: carried the revision over from the shared "
                f"{alembic_support.LEGACY_VERSION_TABLE} to its own "
                f"{alembic_support.version_table(db.table)}"
            )
        print(f"{done}, database {db.masked_url}")
        return EXIT_OK
    finally:
        await engine.dispose()


async def _offline(db: Database, action: str, revision: str) -> int:
    from alembic import command
    from alembic.util.exc import CommandError

    from typed_session_sql.alembic_support import make_config
    from typed_session_sql.errors import MigrationError

    config = make_config(db.url, db.table, db.schema)
    try:
        if action == "upgrade":
            command.upgrade(config, revision, sql=True)
        else:
            command.downgrade(config, revision, sql=True)
    except CommandError as error:
        raise MigrationError(str(error)) from error
    return EXIT_OK


def _describe(revisions: tuple[str, ...]) -> str:
    from typed_session_sql.alembic_support import head

    newest = head()
    if not revisions:
        return f"(none), head is {newest}"
    if revisions == (newest,):
        return f"{newest} (head)"
    return f"{', '.join(revisions)}, head is {newest}"
