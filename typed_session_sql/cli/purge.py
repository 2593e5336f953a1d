"""``typed-session-sql purge``: delete expired sessions in short batches, once (cron) or
every interval until SIGTERM or SIGINT (a sidecar)."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from typed_session_sql.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Database,
    UnavailableError,
    UsageError,
    add_database_options,
    check_connection,
    database,
    make_engine,
    run,
    setup_logging,
)

if TYPE_CHECKING:
    import anyio

    from typed_session_sql.purge import PurgeProgress, PurgeResult

# The unpaced batch size (typed_session_sql.purge.UNPACED_BATCH_SIZE), here so that --help
# needs no import of the library.
UNPACED_BATCH_SIZE = 1000
_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|[smhd]?)")
_UNIT_SECONDS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Bounds that keep every value a timer and a SQL LIMIT can take.
MAX_EVERY = timedelta(days=365)
MAX_PAUSE = timedelta(hours=1)
MAX_BATCH_SIZE = 1_000_000


def parse_interval(text: str) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``1d``, ``20ms`` or plain seconds: positive, at most a year."""
    interval = _duration(text, MAX_EVERY)
    if interval <= timedelta(0):
        raise argparse.ArgumentTypeError(
            f"expected a positive interval like 30s, 5m or 1h, not {text!r}"
        )
    return interval


def parse_pause(text: str) -> timedelta:
    """Like `parse_interval`, zero allowed, at most an hour."""
    return _duration(text, MAX_PAUSE)


def _duration(text: str, limit: timedelta) -> timedelta:
    label = f"{limit.days}d" if limit.days else f"{limit.seconds // 3600}h"
    match = _INTERVAL.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 20ms, 30s or 5m, not {text!r}")
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds > limit.total_seconds():
        raise argparse.ArgumentTypeError(f"{text!r} is longer than the limit, {label}")
    return timedelta(seconds=seconds)


def positive_int(text: str) -> int:
    """A batch size: a whole number from 1 to 1,000,000."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 1 to {MAX_BATCH_SIZE:,}, not {text!r}"
        )
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "purge",
        help="delete expired sessions, in short batches",
        description="Delete expired sessions in short batches (one statement each). One pass "
        "by default, for cron; with --every, keep running (a sidecar) until SIGTERM or "
        "SIGINT. Only one purger runs at a time (an advisory lock on PostgreSQL, GET_LOCK on "
        "MySQL and MariaDB, SQLite's write lock); a pass that "
        f"finds another one running is skipped. {EXIT_CODES_HELP}",
    )
    add_database_options(parser)
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="rows per statement, back to back (unpaced; default: paced, sized from what the "
        "batches cost; with --pg-cron, 1000)",
    )
    parser.add_argument(
        "--every",
        type=parse_interval,
        metavar="INTERVAL",
        help="keep running: a pass every INTERVAL (30s, 5m, 1h; at most 365d), jittered "
        "50-150%%; every line gets a timestamp",
    )
    parser.add_argument(
        "--pause",
        type=parse_pause,
        metavar="DURATION",
        help="wait between two batches (e.g. 20ms; at most 1h), leaving the database to live "
        "traffic (unpaced; default: paced, pauses from what the batches cost)",
    )
    parser.add_argument(
        "--no-pacing",
        dest="pacing",
        action="store_false",
        help="run the batches back to back, 1000 rows each, as fast as the database goes "
        "(by default the purge paces itself so that live traffic hardly notices it)",
    )
    # The purge inside PostgreSQL (typed_session_sql.pg_cron), for DBAs: no pass runs.
    parser.add_argument(
        "--pg-cron",
        choices=("install", "remove", "sql"),
        help="instead of a pass: install the purge inside PostgreSQL for pg_cron to run "
        "(--schedule, --batch-size), remove it, or print its SQL for psql",
    )
    parser.add_argument(
        "--schedule",
        default="*/5 * * * *",
        metavar="CRON",
        help="with --pg-cron: when pg_cron runs it, in cron syntax (default '*/5 * * * *')",
    )
    parser.set_defaults(handler=run_purge)


def run_purge(args: argparse.Namespace) -> int:
    db = database(args)
    # One pass reports its own failure; a long-running purger logs each failed pass.
    if args.every is None:
        setup_logging(logging.ERROR)
    else:
        setup_logging(logging.WARNING, timestamps=True)
    if args.pg_cron is not None:
        if args.batch_size is None:
            args.batch_size = UNPACED_BATCH_SIZE
        return run("purge", db, lambda: _pg_cron(db, args))
    return run("purge", db, lambda: _purge(db, args))


async def _pg_cron(db: Database, args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from typed_session_sql import pg_cron
    from typed_session_sql.backends.sql import SqlBackend

    if args.every is not None:
        raise UsageError("--pg-cron installs a schedule of its own: leave out --every")
    if make_url(db.url).get_backend_name() not in ("postgresql", "postgres"):
        raise UsageError("--pg-cron needs a PostgreSQL URL (pg_cron is a PostgreSQL extension)")
    engine = make_engine(db, create_sqlite_file=False)
    backend = SqlBackend(engine, table_name=db.table, schema=db.schema, owns_engine=True)
    try:
        pg_cron.pg_cron_purge(backend.table)  # a table name it cannot use: exit 2, not 69
    except ValueError as error:
        await backend.dispose()
        raise UsageError(str(error)) from error
    try:
        if args.pg_cron == "sql":
            print(
                pg_cron.pg_cron_purge_script(
                    backend, schedule=args.schedule, batch_size=args.batch_size
                ),
                end="",
            )
            return EXIT_OK
        await check_connection(engine, db)
        if args.pg_cron == "install":
            try:
                sql = await pg_cron.install_pg_cron_purge(
                    backend, schedule=args.schedule, batch_size=args.batch_size
                )
            except SQLAlchemyError as error:
                if "invalid schedule" in str(error):  # pg_cron's word for it
                    raise UsageError(f"pg_cron refused the schedule {args.schedule!r}") from error
                raise
            print(
                f"scheduled pg_cron job {sql.job_name!r}: "
                f"CALL {sql.procedure}({args.batch_size}) at {args.schedule!r}"
            )
        elif await pg_cron.remove_pg_cron_purge(backend):
            print(f"removed the pg_cron purge of {backend.table.fullname}")
        else:
            print(
                f"no pg_cron purge of {backend.table.fullname} was scheduled "
                "(its procedure dropped, if any)"
            )
        return EXIT_OK
    finally:
        await backend.dispose()


def format_progress(progress: PurgeProgress) -> str:
    # The time is the pass's so far, not the batch's: say so.
    return (
        f"batch {progress.batch}: removed {progress.removed:,}, total {progress.total:,} "
        f"after {progress.seconds:.2f} s, {progress.rate:,.0f} rows/s"
    )


def format_result(result: PurgeResult) -> str:
    if result.skipped:
        return "skipped: another purger holds the purge lock"
    return (
        f"purged {result.removed:,} expired sessions in {result.batches} batch(es), "
        f"{result.seconds:.2f} s, {result.rate:,.0f} rows/s"
    )


def _printer(*, timestamps: bool, closed: anyio.Event) -> Callable[[str], None]:
    """Print a line; once the reader is gone (``| head``, a dead log pipe), set ``closed``
    and print nothing more, as Unix tools do on EPIPE, instead of failing every pass."""

    def emit_line(line: str) -> None:
        if closed.is_set():
            return
        if timestamps:  # a sidecar's lines end up in a log with no other clock
            line = f"{datetime.now(UTC).isoformat(timespec='seconds')} {line}"
        try:
            print(line, flush=True)
        except BrokenPipeError:
            closed.set()
            # Python flushes stdout again at exit, which would fail once more ("Exception
            # ignored ..."): point it at /dev/null.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    return emit_line


async def _purge(db: Database, args: argparse.Namespace) -> int:
    from typed_session_sql.backends.sql import SqlBackend

    engine = make_engine(db, create_sqlite_file=False)
    try:
        try:
            await check_connection(engine, db)
        except UnavailableError:
            if args.every is None:
                raise
            # A sidecar outlives outages: the scheduler logs each failed pass and retries.
        backend = SqlBackend(engine, table_name=db.table, schema=db.schema)
        try:
            return await _purge_with(backend, db, args)
        finally:
            await backend.dispose()
    finally:
        import anyio

        with anyio.CancelScope(shield=True):
            await engine.dispose()


async def _purge_with(backend: Any, db: Database, args: argparse.Namespace) -> int:
    import anyio

    from typed_session_sql.pacing import DEFAULT_PACING
    from typed_session_sql.scheduler import PurgeScheduler
    from typed_session_sql.store import SessionStore

    closed = anyio.Event()
    line = _printer(timestamps=args.every is not None, closed=closed)
    store: SessionStore[dict[str, Any]] = SessionStore(dict, backend)

    def on_batch(progress: PurgeProgress) -> None:
        line(format_progress(progress))

    batch_hook = on_batch if sys.stdout.isatty() else None

    def on_pass(result: PurgeResult) -> None:
        line(format_result(result))

    pacing = DEFAULT_PACING if args.pacing else None
    if args.every is None:
        result = await store.purge_expired_pass(
            args.batch_size,
            on_batch=batch_hook,
            pause=None if args.pause is None else args.pause.total_seconds(),
            pacing=pacing,
        )
        # A cron line's one line says where it deleted (a sidecar's first line does).
        line(f"{format_result(result)}, database {db.masked_url}")
        return EXIT_OK

    line(
        f"purging {db.masked_url} every {args.every} (jittered), "
        f"{_batches(args, pacing is not None)}; SIGTERM or SIGINT stops"
    )
    scheduler = PurgeScheduler(
        store,
        every=args.every,
        batch_size=args.batch_size,
        first_delay=timedelta(0),
        pause=args.pause,
        pacing=pacing,
        on_pass=on_pass,
        on_batch=batch_hook,
    )
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with scheduler, anyio.create_task_group() as group:
            group.start_soon(_stop_when, closed, group.cancel_scope)
            async for received in signals:
                line(f"received {signal.Signals(received).name}, stopping")
                break
            group.cancel_scope.cancel()
    return EXIT_OK


def _batches(args: argparse.Namespace, paced: bool) -> str:
    if paced and args.batch_size is None and args.pause is None:
        return "paced batches"
    pause = f", {args.pause.total_seconds() * 1000:g} ms apart" if args.pause else ""
    return f"batches of {args.batch_size or UNPACED_BATCH_SIZE}{pause}"


async def _stop_when(closed: anyio.Event, scope: anyio.CancelScope) -> None:
    await closed.wait()
    scope.cancel()  # nobody reads the output any more: stop, exit 0
