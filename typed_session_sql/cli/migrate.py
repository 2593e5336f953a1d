"""``typed-session-sql migrate``: run the session table's Alembic migrations.

Works from the wheel alone (the scripts ship inside the package)::

    typed-session-sql migrate upgrade head --url postgresql+asyncpg://user@host/db
    typed-session-sql migrate downgrade base --url ...
    typed-session-sql migrate current --url ...
    typed-session-sql migrate history

Exit codes: 0 done, 1 a migration error (such as an unknown revision), 2 bad usage,
69 (``EX_UNAVAILABLE``) the database could not be reached or failed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE, as in `purge` and `stats`


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help="SQLAlchemy async URL (default: $TYPED_SESSION_SQL_URL, else "
        "sqlite+aiosqlite:///./sessions.db)",
    )
    common.add_argument(
        "--table", help="table name (default: $TYPED_SESSION_SQL_TABLE or typed_sessions)"
    )
    common.add_argument("--schema", help="schema (default: $TYPED_SESSION_SQL_SCHEMA or none)")
    common.add_argument("--sql", action="store_true", help="print the SQL instead of running it")

    parser = subparsers.add_parser(
        "migrate",
        help="create or upgrade the session table (Alembic)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", parents=[common], help="upgrade to a revision")
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = actions.add_parser("downgrade", parents=[common], help="downgrade to a revision")
    downgrade.add_argument("revision", help="target revision, e.g. base or -1")
    actions.add_parser("current", parents=[common], help="show the database's revision")
    actions.add_parser("history", parents=[common], help="list the revisions")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from alembic import command
    from alembic.util.exc import CommandError

    from typed_session_sql.alembic_support import make_config

    config = make_config(args.url, args.table, args.schema)
    try:
        if args.action == "upgrade":
            command.upgrade(config, args.revision, sql=args.sql)
        elif args.action == "downgrade":
            command.downgrade(config, args.revision, sql=args.sql)
        elif args.action == "current":
            command.current(config, verbose=False)
        else:
            command.history(config)
    except CommandError as error:  # e.g. an unknown revision
        print(f"typed-session-sql migrate: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        # A database error: say what, without the URL (it may hold a password). The same
        # exit code as `purge` and `stats` for a database that cannot be reached.
        print(f"typed-session-sql migrate: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0
