"""``typed-session-sql purge`` and ``typed-session-sql stats``: cleanup from cron, a sidecar
or by hand, and a look at how much there is to clean.

Exit codes (both commands):

- 0: done (``purge --every``: stopped by SIGTERM or SIGINT);
- 2: bad usage (unknown option, malformed ``--every`` or URL, missing driver);
- 69 (``EX_UNAVAILABLE``): the database could not be reached or the statement failed (for
  instance the table does not exist yet: run ``typed-session-sql migrate``).

No output ever shows a password: URLs are printed with it masked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typed_session_sql.backends.sql import SqlBackend
    from typed_session_sql.purge import PurgeProgress, PurgeResult

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69

_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|[smhd]?)")
_UNIT_SECONDS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(Exception):
    """Bad input found after parsing (a URL nothing can connect with)."""


def parse_interval(text: str) -> timedelta:
    """``30s``, ``5m``, ``1h``, ``1d``, ``20ms`` or plain seconds, as a positive timedelta."""
    interval = parse_pause(text)
    if interval <= timedelta(0):
        raise argparse.ArgumentTypeError(
            f"expected a positive interval like 30s, 5m or 1h, not {text!r}"
        )
    return interval


def parse_pause(text: str) -> timedelta:
    """Like :func:`parse_interval`, zero allowed."""
    match = _INTERVAL.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 20ms, 30s or 5m, not {text!r}")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="database URL (default: $TYPED_SESSION_SQL_URL, else sqlite+aiosqlite:///./sessions.db)",
    )
    parser.add_argument(
        "--table", help="table name (default: $TYPED_SESSION_SQL_TABLE or typed_sessions)"
    )
    parser.add_argument("--schema", help="schema (default: $TYPED_SESSION_SQL_SCHEMA or none)")


def register(subparsers: Any) -> None:
    purge = subparsers.add_parser(
        "purge",
        help="delete expired sessions, in short batches",
        description="Delete expired sessions in short batches (one statement each). One pass "
        "by default, for cron; with --every, keep running (a sidecar) until SIGTERM or "
        "SIGINT. On PostgreSQL only one purger runs at a time (advisory lock); a pass that "
        f"finds another one running is skipped. Exit codes: {EXIT_OK} done, {EXIT_USAGE} bad "
        f"usage, {EXIT_UNAVAILABLE} database unreachable or failing.",
    )
    _add_database_options(purge)
    purge.add_argument(
        "--batch-size", type=positive_int, default=1000, help="rows per statement (default 1000)"
    )
    purge.add_argument(
        "--every",
        type=parse_interval,
        metavar="INTERVAL",
        help="keep running: a pass every INTERVAL (30s, 5m, 1h), jittered 50-150%%",
    )
    purge.add_argument(
        "--pause",
        type=parse_pause,
        default=timedelta(0),
        metavar="DURATION",
        help="wait between two batches (e.g. 20ms), leaving the database to live traffic",
    )
    purge.set_defaults(handler=run_purge)

    stats = subparsers.add_parser(
        "stats",
        help="count live and expired sessions",
        description="Live and expired session counts, the oldest expiry and the table's size "
        f"(where the database can tell). Exit codes: {EXIT_OK} done, {EXIT_USAGE} bad usage, "
        f"{EXIT_UNAVAILABLE} database unreachable or failing.",
    )
    _add_database_options(stats)
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(handler=run_stats)


# -- shared plumbing --------------------------------------------------------------------


def _open_backend(args: argparse.Namespace) -> SqlBackend:
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from typed_session_sql.backends.sql import SqlBackend

    kwargs: dict[str, Any] = {}
    table = args.table or os.environ.get("TYPED_SESSION_SQL_TABLE")
    schema = args.schema or os.environ.get("TYPED_SESSION_SQL_SCHEMA")
    if table:
        kwargs["table_name"] = table
    if schema:
        kwargs["schema"] = schema
    try:
        return SqlBackend.from_url(args.url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as error:
        # The message may quote the URL, password included: name the error class only.
        raise UsageError(f"cannot use this database URL ({type(error).__name__})") from error


def _safe_url(backend: SqlBackend) -> str:
    return backend.engine.url.render_as_string(hide_password=True)


def _setup_logging(args: argparse.Namespace) -> None:
    # One pass reports its own failure; a long-running purger logs each failed pass.
    level = logging.WARNING if getattr(args, "every", None) else logging.ERROR
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )


def _fail_unavailable(backend: SqlBackend, error: BaseException) -> int:
    from typed_session_sql.errors import describe_error

    described = describe_error(error)
    print(
        f"error: database {_safe_url(backend)} could not be reached or failed: {described}",
        file=sys.stderr,
    )
    if "does not exist" in described or "no such table" in described:
        print("hint: create the table first: typed-session-sql migrate upgrade", file=sys.stderr)
    return EXIT_UNAVAILABLE


def _database_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import SQLAlchemyError

    from typed_session_sql.errors import StoreUnavailableError

    return (StoreUnavailableError, SQLAlchemyError, OSError)


def _run(handler: Any, args: argparse.Namespace) -> int:
    """Open the backend, run ``handler(backend, args)`` on an event loop, map failures."""
    import anyio

    _setup_logging(args)
    try:
        backend = _open_backend(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    async def main() -> int:
        try:
            code: int = await handler(backend, args)
            return code
        except _database_errors() as error:
            return _fail_unavailable(backend, error)
        finally:
            with anyio.CancelScope(shield=True):
                await backend.dispose()

    return anyio.run(main)


# -- purge ------------------------------------------------------------------------------


def run_purge(args: argparse.Namespace) -> int:
    return _run(_purge, args)


def format_progress(progress: PurgeProgress) -> str:
    return (
        f"batch {progress.batch}: removed {progress.removed:,} (total {progress.total:,}) "
        f"in {progress.seconds:.2f} s, {progress.rate:,.0f} rows/s"
    )


def format_result(result: PurgeResult) -> str:
    if result.skipped:
        return "skipped: another purger holds the purge lock"
    return (
        f"purged {result.removed:,} expired sessions in {result.batches} batch(es), "
        f"{result.seconds:.2f} s, {result.rate:,.0f} rows/s"
    )


def _printer(out: IO[str]) -> Any:
    def emit_line(line: str) -> None:
        print(line, file=out, flush=True)

    return emit_line


async def _purge(backend: SqlBackend, args: argparse.Namespace) -> int:
    from typed_session_sql.purge import purge_pass
    from typed_session_sql.scheduler import PurgeScheduler
    from typed_session_sql.store import SessionStore

    out = sys.stdout
    line = _printer(out)
    store: SessionStore[dict[str, Any]] = SessionStore(dict, backend)

    def on_batch(progress: PurgeProgress) -> None:
        line(format_progress(progress))

    batch_hook = on_batch if out.isatty() else None

    def on_pass(result: PurgeResult) -> None:
        line(format_result(result))

    if args.every is None:
        pause = args.pause.total_seconds()
        result = await purge_pass(
            backend,
            store.now(),
            args.batch_size,
            on_event=store.on_event,
            on_batch=batch_hook,
            pause=pause,
        )
        on_pass(result)
        return EXIT_OK

    import anyio

    line(
        f"purging {_safe_url(backend)} every {args.every} (jittered), "
        f"batches of {args.batch_size}; SIGTERM or SIGINT stops"
    )
    scheduler = PurgeScheduler(
        store,
        every=args.every,
        batch_size=args.batch_size,
        first_delay=timedelta(0),
        pause=args.pause,
        on_pass=on_pass,
        on_batch=batch_hook,
    )
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with scheduler:
            async for received in signals:
                line(f"received {signal.Signals(received).name}, stopping")
                break
    return EXIT_OK


# -- stats ------------------------------------------------------------------------------


def run_stats(args: argparse.Namespace) -> int:
    return _run(_stats, args)


async def _stats(backend: SqlBackend, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    stats = await backend.stats(now)
    oldest = stats.oldest_expiry
    if args.json:
        document = {
            "database": _safe_url(backend),
            "table": str(backend.table.fullname),
            "live": stats.live,
            "never_expire": stats.never_expire,
            "expired": stats.expired,
            "oldest_expiry": oldest.isoformat() if oldest is not None else None,
            "size_bytes": stats.size_bytes,
            "size_of": stats.size_of,
        }
        print(json.dumps(document))
        return EXIT_OK
    behind = f" ({_ago_or_in(now - oldest)})" if oldest is not None else ""
    size = (
        f"{stats.size_bytes:,} bytes ({stats.size_of})"
        if stats.size_bytes is not None
        else "unknown"
    )
    print(f"database:      {_safe_url(backend)}")
    print(f"table:         {backend.table.fullname}")
    print(f"live:          {stats.live:,} (of which never expire: {stats.never_expire:,})")
    print(f"expired:       {stats.expired:,}")
    print(f"oldest expiry: {oldest.isoformat() if oldest is not None else '-'}{behind}")
    print(f"size:          {size}")
    return EXIT_OK


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "in " + _ago(-delta)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _ago_or_in(delta: timedelta) -> str:
    return _ago(delta) if delta.total_seconds() < 0 else _ago(delta) + " ago"
