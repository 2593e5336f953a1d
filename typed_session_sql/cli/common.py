"""What ``purge``, ``stats`` and ``migrate`` share: the database options and their
environment variables, the exit codes, opening the database, and running a command so
that every failure ends in one line and its exit code, never a traceback.

Exit codes (the same for every command; the README and docs/cleanup.md have the table):

- 0: done;
- 1: a migration failed (an unknown revision, a table its version record says exists
  but does not);
- 2: bad usage: an unknown or malformed option, a malformed URL, an option in the URL the
  driver does not take, a driver that is not installed;
- 69 (``EX_UNAVAILABLE``): the database could not be reached, or a statement failed (for
  instance the table does not exist yet);
- 70 (``EX_SOFTWARE``): an unexpected error, a bug; please report it;
- 130: interrupted (Ctrl+C).

No output ever shows a password: URLs are printed masked.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from typed_session_sql.alembic_support import SCHEMA_ENV, TABLE_ENV
from typed_session_sql.backends.sql.engine import DEFAULT_URL, URL_ENV
from typed_session_sql.backends.sql.table import DEFAULT_TABLE

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
EXIT_BUG = 70
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    f"Exit codes: {EXIT_OK} done, {EXIT_FAILED} migration failed, {EXIT_USAGE} bad usage "
    f"(option, URL, missing driver), {EXIT_UNAVAILABLE} database unreachable or failing, "
    f"{EXIT_BUG} unexpected error (a bug)."
)


class UsageError(Exception):
    """Bad input found after parsing: a URL or URL option nothing can connect with."""


class MigrationFailedError(Exception):
    """A migration could not be run as asked (exit 1)."""


class UnavailableError(Exception):
    """The database cannot be used; the message says why (exit 69)."""


@dataclass(frozen=True, slots=True)
class Database:
    """Where a command works: the URL, table and schema, and where the URL came from."""

    url: str
    table: str
    schema: str | None
    url_from: str
    """``--url``, ``$TYPED_SESSION_SQL_URL`` or ``default``."""

    @property
    def masked_url(self) -> str:
        return mask_password(self.url)

    @property
    def fell_back(self) -> bool:
        return self.url_from == "default"


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"database URL (default: ${URL_ENV}, else {DEFAULT_URL})")
    parser.add_argument("--table", help=f"table name (default: ${TABLE_ENV} or {DEFAULT_TABLE})")
    parser.add_argument("--schema", help=f"schema (default: ${SCHEMA_ENV} or none)")


def database(args: argparse.Namespace) -> Database:
    """The database the options (else the environment, else the defaults) name."""
    if args.url is not None:
        url, url_from = args.url, "--url"
    elif os.environ.get(URL_ENV):
        url, url_from = os.environ[URL_ENV], f"${URL_ENV}"
    else:
        url, url_from = DEFAULT_URL, "default"
    table = args.table or os.environ.get(TABLE_ENV) or DEFAULT_TABLE
    schema = args.schema or os.environ.get(SCHEMA_ENV) or None
    return Database(url, table, schema, url_from)


def mask_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` (the whole URL if it cannot be parsed:
    it might still hold one)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(a URL that cannot be parsed)"


def say_fallback(db: Database) -> None:
    """Tell on stderr that no URL was given, so the default database is used."""
    if db.fell_back:
        print(
            f"note: no --url and no ${URL_ENV}: using the default database {db.url}",
            file=sys.stderr,
        )


def make_engine(db: Database, *, create_sqlite_file: bool = True, **options: Any) -> AsyncEngine:
    """The engine for ``db``; a URL no installed driver takes is a :class:`UsageError`.

    Without ``create_sqlite_file``, a SQLite file that does not exist is an
    :class:`UnavailableError` rather than a new empty database (a purge or a look at the
    counts has nothing to do on one). ``options`` go to
    :func:`~typed_session_sql.backends.sql.engine.create_engine`.
    """
    from sqlalchemy.engine import make_url

    from typed_session_sql.backends.sql.engine import UrlOptionError, create_engine
    from typed_session_sql.urls import async_url

    try:
        parsed = make_url(async_url(db.url))
    except Exception as error:
        raise UsageError(
            f"malformed database URL {db.masked_url!r} ({type(error).__name__})"
        ) from error
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    on_disk = bool(path) and path != ":memory:" and not str(path).startswith("file:")
    if not create_sqlite_file and on_disk and not os.path.exists(str(path)):
        raise UnavailableError(f"no database file at {path} ({db.url_from})")
    try:
        return create_engine(db.url, **options)
    except ImportError as error:
        raise UsageError(_missing_driver(parsed.get_driver_name(), error)) from error
    except UrlOptionError as error:
        raise UsageError(str(error)) from error
    except Exception as error:
        # The message may quote the URL, password included: name the error class only.
        raise UsageError(
            f"no installed driver takes the URL {db.masked_url!r} ({type(error).__name__}); "
            "use postgresql://..., mysql://... or sqlite:///..."
        ) from error


def _missing_driver(driver: str, error: ImportError) -> str:
    from typed_session_sql.urls import DRIVER_EXTRAS

    extra = DRIVER_EXTRAS.get(driver)
    install = f"pip install 'typed-session-sql[{extra}]'" if extra else f"pip install {error.name}"
    return f"the driver {error.name or driver} is not installed: {install}"


async def check_connection(engine: AsyncEngine, db: Database) -> None:
    """Open and close one connection, so that the URL's options are judged before any
    work: a driver refusing them is a :class:`UsageError`, a database that does not answer
    an :class:`UnavailableError`."""
    from sqlalchemy.exc import ArgumentError, InterfaceError, SQLAlchemyError

    from typed_session_sql.errors import describe_error

    try:
        async with engine.connect():
            pass
    except (TypeError, ValueError, ArithmeticError, ArgumentError, InterfaceError) as error:
        # Raised by the driver before it talks to the server: an option it does not take
        # (?sslmode=bogus, ?timeout=notanumber, a port out of range).
        raise UsageError(
            f"the driver does not accept the URL {db.masked_url}: {describe_error(error)}"
        ) from error
    except (SQLAlchemyError, OSError) as error:
        raise UnavailableError(
            f"database {db.masked_url} could not be reached: {describe_error(error)}"
        ) from error


def setup_logging(level: int, *, timestamps: bool = False) -> None:
    """Log the library's warnings to stderr, unless the application configured logging."""
    if not logging.getLogger().handlers:
        stamp = "%(asctime)s " if timestamps else ""
        logging.basicConfig(
            level=level, stream=sys.stderr, format=f"{stamp}%(levelname)s %(name)s: %(message)s"
        )


def run(command: str, db: Database, main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` on an event loop; turn every failure into one line on stderr and its
    exit code."""
    import anyio
    from sqlalchemy.exc import SQLAlchemyError

    from typed_session_sql.errors import StoreUnavailableError, describe_error

    def fail(code: int, message: str) -> int:
        print(f"typed-session-sql {command}: error: {message}", file=sys.stderr)
        return code

    try:
        return anyio.run(main)
    except UsageError as error:
        return fail(EXIT_USAGE, str(error))
    except MigrationFailedError as error:
        return fail(EXIT_FAILED, str(error))
    except UnavailableError as error:
        return fail(EXIT_UNAVAILABLE, str(error))
    except (StoreUnavailableError, SQLAlchemyError, OSError) as error:
        code = fail(
            EXIT_UNAVAILABLE,
            f"database {db.masked_url} could not be reached or failed: {describe_error(error)}",
        )
        if is_missing_table(error):
            print(
                f"hint: create the table first: typed-session-sql migrate upgrade head"
                f"{_options_hint(db)}",
                file=sys.stderr,
            )
        return code
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "interrupted")
    except Exception as error:
        return fail(EXIT_BUG, f"unexpected {describe_error(error)} (a bug: please report it)")


def _options_hint(db: Database) -> str:
    hint = "" if db.url_from == f"${URL_ENV}" else f" --url '{db.masked_url}'"
    if db.table != DEFAULT_TABLE:
        hint += f" --table {db.table}"
    if db.schema:
        hint += f" --schema {db.schema}"
    return hint


def is_missing_table(error: BaseException) -> bool:
    """Whether ``error`` says the session table does not exist (not the database, role or
    schema): :class:`SessionTableMissingError`, or the driver's own words for it."""
    from typed_session_sql.errors import SessionTableMissingError

    seen: BaseException | None = error
    for _ in range(5):  # the error, its cause, the driver's error under SQLAlchemy's
        if seen is None:
            break
        if isinstance(seen, SessionTableMissingError):
            return True
        if type(seen).__name__ == "UndefinedTableError":  # asyncpg, SQLSTATE 42P01
            return True
        first = str(seen).splitlines()[0] if str(seen) else ""
        if "no such table" in first or ("relation " in first and "does not exist" in first):
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False
