"""What ``purge``, ``stats`` and ``migrate`` share: the database options and their
environment variables, the exit codes, opening the database, and running a command so
that every failure ends in one line and its exit code, never a traceback.

**No default database.** Every database command works on the database ``--url`` names,
else ``$TYPED_SESSION_SQL_URL``; with neither it refuses (exit 2) instead of picking one:
a deploy step that lost its variable must fail, not migrate a new ``./sessions.db``. Only
``demo``, made to run with no set-up, has a default. Each command names the database it
worked on (password masked) in its output.

Exit codes (the same for every command; docs/reference/cli.md has the table):

- 0: done;
- 1: a migration failed (`MigrationError`: an unknown
  revision, a version record that disagrees with the database), or ``migrate current
  --check`` found the table behind;
- 2: bad usage: no database given, an unknown or malformed option, a malformed URL, an
  option in the URL the driver does not take, a driver that is not installed;
- 69 (``EX_UNAVAILABLE``): the database could not be reached, or failed (for instance the
  table does not exist yet: then a hint says how to create it);
- 70 (``EX_SOFTWARE``): an unexpected error, a bug; please report it;
- 130: interrupted (Ctrl+C).

The failures come classified by the library (one translation for every path); this
module only maps its error classes to exit codes. No output ever shows any part of a
password: URLs are printed masked (`mask_password`), and
every error line is masked again on its way out.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from typed_session_sql.backends.sql.settings import SCHEMA_ENV, TABLE_ENV, URL_ENV, resolve
from typed_session_sql.backends.sql.table import DEFAULT_TABLE
from typed_session_sql.urls import mask_password, mask_passwords_in

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
    f"(no database given, option, URL, missing driver), {EXIT_UNAVAILABLE} database "
    f"unreachable or failing, {EXIT_BUG} unexpected error (a bug)."
)


class UsageError(Exception):
    """Bad input found after parsing: no database, or a URL nothing can connect with."""


class UnavailableError(Exception):
    """The database cannot be used; the message says why (exit 69)."""


@dataclass(frozen=True, slots=True)
class Database:
    """Where a command works: the URL, table and schema, and where the URL came from."""

    url: str
    table: str
    schema: str | None
    url_from: str
    """``--url`` or ``$TYPED_SESSION_SQL_URL``."""

    @property
    def masked_url(self) -> str:
        return mask_password(self.url)

    def masked(self, text: str) -> str:
        """``text`` with this URL, and any other URL-shaped word, masked."""
        return mask_passwords_in(text, self.url)


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"database URL (default: ${URL_ENV}; no other default)")
    parser.add_argument("--table", help=f"table name (default: ${TABLE_ENV} or {DEFAULT_TABLE})")
    parser.add_argument("--schema", help=f"schema (default: ${SCHEMA_ENV} or none)")


def database(args: argparse.Namespace) -> Database:
    """The database the options (else the environment) name; a `UsageError` if
    neither names one."""
    if args.url is not None and not args.url.strip():
        raise UsageError("--url is empty")  # what --url "$DATABASE_URL" gives when unset
    settings = resolve(args.url, args.table, args.schema, given_as="--url")
    if settings.url is None or settings.url_from is None:
        said = "is empty" if URL_ENV in os.environ else "is not set"
        raise UsageError(
            f"no database given: --url is missing and ${URL_ENV} {said} "
            "(no command but demo picks a default database)"
        )
    return Database(settings.url, settings.table, settings.schema, settings.url_from)


def make_engine(db: Database, *, create_sqlite_file: bool = True, **options: Any) -> AsyncEngine:
    """The engine for ``db``; a URL no installed driver takes is a `UsageError`.

    Without ``create_sqlite_file``, a SQLite file that does not exist is an
    `UnavailableError` rather than a new empty database (a purge or a look at the
    counts has nothing to do on one). ``options`` go to
    `create_engine`.
    """
    from sqlalchemy.engine import make_url

    from typed_session_sql.backends.sql.dialects import UnsupportedDialectError, dialect_for
    from typed_session_sql.backends.sql.engine import UrlOptionError, create_engine
    from typed_session_sql.urls import async_url

    try:
        parsed = make_url(async_url(db.url))
    except Exception as error:
        raise UsageError(
            f"malformed database URL {db.masked_url!r} ({type(error).__name__})"
        ) from error
    try:
        support = dialect_for(parsed.get_backend_name())
    except UnsupportedDialectError as error:
        raise UsageError(str(error)) from error
    path = parsed.database if support.database_is_a_file else None
    on_disk = bool(path) and path != ":memory:" and not str(path).startswith("file:")
    if not create_sqlite_file and on_disk and not os.path.exists(str(path)):
        raise UnavailableError(f"no database file at {path} (from {db.url_from})")
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
    work: a driver refusing them is a `UsageError`, a database that does not answer
    an `UnavailableError`."""
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
    exit code (library errors by their class, see the module docstring)."""
    import anyio
    from sqlalchemy.exc import SQLAlchemyError

    from typed_session_sql.errors import (
        MigrationError,
        SessionTableMissingError,
        StoreUnavailableError,
        describe_error,
    )

    def naming(message: str) -> str:  # the library's cold paths name it already
        return message if db.masked_url in message else f"database {db.masked_url}: {message}"

    def fail(code: int, message: str) -> int:
        print(db.masked(f"typed-session-sql {command}: error: {message}"), file=sys.stderr)
        return code

    try:
        return anyio.run(main)
    except UsageError as error:
        return fail(EXIT_USAGE, str(error))
    except MigrationError as error:
        return fail(EXIT_FAILED, f"{db.masked_url}: {error}")
    except UnavailableError as error:
        return fail(EXIT_UNAVAILABLE, str(error))
    except SessionTableMissingError as error:
        code = fail(EXIT_UNAVAILABLE, naming(describe_error(error)))
        hint = "hint: create the table first: typed-session-sql migrate upgrade head"
        print(db.masked(hint + _options_hint(db)), file=sys.stderr)
        return code
    except StoreUnavailableError as error:
        return fail(EXIT_UNAVAILABLE, naming(describe_error(error)))
    except (SQLAlchemyError, OSError) as error:  # outside the library's operations
        return fail(
            EXIT_UNAVAILABLE,
            f"database {db.masked_url} could not be reached or failed: {describe_error(error)}",
        )
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
