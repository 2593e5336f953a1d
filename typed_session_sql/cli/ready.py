"""``typed-session-sql ready``: can the store serve now? For Kubernetes probes and deploy
scripts. One line on stdout (on stderr, as from every command, for an error), and the exit code
says which:

- 0: ready (the database answers, the table is at the expected revision or later);
- 1: not ready: the table is missing, or not at the expected revision (migrate);
- 2: bad usage (an option, a URL, a missing driver);
- 69 (``EX_UNAVAILABLE``): the database cannot be reached, or did not answer in time.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from typed_session_sql.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Database,
    UnavailableError,
    add_database_options,
    check_connection,
    database,
    make_engine,
    run,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ready",
        help="check that the store can serve (for readiness probes)",
        description="Check that the database answers and the session table exists at the "
        f"expected revision. Exit codes: {EXIT_OK} ready, {EXIT_FAILED} table missing or not "
        f"at the revision (migrate), {EXIT_USAGE} bad usage, {EXIT_UNAVAILABLE} database "
        "unreachable or too slow.",
    )
    add_database_options(parser)
    parser.add_argument(
        "--revision",
        default="head",
        help="the revision the table must be at or past (default: head; 'any': only that "
        "the table exists)",
    )
    parser.add_argument(
        "--within",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long the database may take to answer (default: 5)",
    )
    parser.set_defaults(handler=run_ready)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return seconds


def run_ready(args: argparse.Namespace) -> int:
    db = database(args)
    revision = None if args.revision == "any" else args.revision
    return run("ready", db, lambda: _ready(db, revision, args.within))


async def _ready(db: Database, revision: str | None, within: float) -> int:
    from typed_session_sql.backends.sql import SqlBackend
    from typed_session_sql.backends.sql.readiness import ReadinessStatus

    engine = make_engine(db, create_sqlite_file=False)
    try:
        # A URL the driver refuses is bad usage (2), as for every command, not "unreachable".
        try:
            with anyio.fail_after(within):
                await check_connection(engine, db)
        except TimeoutError:
            raise UnavailableError(
                f"database {db.masked_url} did not answer within {within:g} s"
            ) from None
        backend = SqlBackend(engine, table_name=db.table, schema=db.schema)
        readiness = await backend.check_ready(revision=revision, within=within)
        await backend.dispose()
    finally:
        await engine.dispose()
    if readiness.status is ReadinessStatus.UNREACHABLE:  # gone since the first connection
        raise UnavailableError(f"database {db.masked_url}: {readiness.detail}")
    print(f"{readiness.status.value}: {readiness.detail}")
    return EXIT_OK if readiness.ready else EXIT_FAILED
