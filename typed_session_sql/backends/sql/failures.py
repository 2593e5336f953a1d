"""What a failed statement means, what may be retried, and what the caller is told.

Executors name a failure (`Failure`) and raise `StatementFailed`; the backend's
one retry loop asks a `RetryBudget` whether to run the statement again, and turns
what is left into the library's errors (`store_error`). Error texts carry the type
and first line of the driver's error (`describe_error`),
never a statement's parameters: those are id hashes, session data and principals.
"""

from __future__ import annotations

import asyncio
import enum
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from typed_session_sql.errors import (
    DataRejectedError,
    SessionError,
    SessionTableMissingError,
    StoreUnavailableError,
    describe_error,
)

__all__ = [
    "Failure",
    "RetryBudget",
    "StatementFailed",
    "classify",
    "ends_connection",
    "mysql_error_code",
    "store_error",
    "translated",
]

# A serialization failure is retried after 2, 4, 8 ... ms, capped at 100 ms: about 0.6 s in
# all. Five tries (62 ms) were not enough for two purgers deleting the same rows through two
# Galera nodes, whose certification failures then came back as outages.
_SERIALIZATION_RETRIES = 10
_SERIALIZATION_BACKOFF_CAP = 0.1  # seconds
_SQLITE_ID_TAKEN = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
_SQLITE_DATA = frozenset({"SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_CONSTRAINT_CHECK"})
_MYSQL_DRIVERS = frozenset({"asyncmy", "aiomysql", "pymysql", "MySQLdb"})
_MYSQL_PACKET_TOO_BIG = 1153
# A syntax error's message quotes the statement from where parsing failed: with values
# inlined (the text protocol), id hashes, session data and principals.
_MYSQL_SYNTAX_ERROR = 1064


class Failure(enum.Enum):
    """Why a statement failed, as far as retrying and reporting go."""

    ID_TAKEN = "id_taken"
    """A unique violation: the id a create or a rotation wanted exists. Nothing written."""
    DATA = "data"
    """The database refused the values (SQLSTATE class 22, or the driver's equivalent)."""
    TABLE_MISSING = "table_missing"
    """The session table does not exist."""
    SERIALIZATION = "serialization"
    """SQLSTATE 40001 (MySQL: error 1213, a deadlock or a Galera certification failure): the
    statement was rolled back; running it again is safe."""
    DISCONNECTED = "disconnected"
    """The connection died during the statement, which may or may not have committed."""
    UNSENT = "unsent"
    """The connection was already closed: the statement never reached the database."""
    UNAVAILABLE = "unavailable"
    """No connection could be had: refused, timed out, unknown host or login."""
    STATEMENT_NAME = "statement_name"
    """A named prepared statement is missing on the server connection (SQLSTATE 26000), its
    name is taken there (42P05), or the statement of that name takes other arguments
    (08P01: another client's). A pooler in transaction mode that does not track prepared
    statements moved the client to another server connection."""
    OTHER = "other"


# MySQL/MariaDB error numbers (their drivers carry no SQLSTATE attribute), as seen on
# MariaDB 10.11 and a Galera cluster (docs/mysql-notes.md).
_MYSQL = {
    1062: Failure.ID_TAKEN,  # duplicate key (1048, NULL into NOT NULL, is a bug: OTHER)
    # A deadlock, or a Galera certification failure: the statement was rolled back whole.
    1213: Failure.SERIALIZATION,
    1146: Failure.TABLE_MISSING,
    1264: Failure.DATA,  # out of range
    1366: Failure.DATA,  # incorrect string value
    1406: Failure.DATA,  # too long for the column
    _MYSQL_PACKET_TOO_BIG: Failure.DATA,  # bigger than max_allowed_packet
    1040: Failure.UNAVAILABLE,  # too many connections
    1205: Failure.UNAVAILABLE,  # lock wait timeout: only the statement was rolled back
    # A Galera node outside the primary component (or still joining) refuses every
    # statement before running it: once more, on another connection.
    1047: Failure.UNSENT,
    2006: Failure.UNSENT,  # "server has gone away": the client could not send the command
    2013: Failure.DISCONNECTED,  # lost during the statement: it may have run
    2055: Failure.DISCONNECTED,
    1927: Failure.DISCONNECTED,  # the connection was killed
    4031: Failure.DISCONNECTED,  # closed by the server for inactivity (MySQL 8)
}


class StatementFailed(Exception):
    """An executor's report of a failed statement; ``__cause__`` is the driver's error."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.value)
        self.failure = failure


def classify(error: BaseException) -> Failure:
    """The failure a driver-level error (asyncpg's, sqlite3's, or a DBAPI adapter's) means,
    by its SQLSTATE, MySQL error number or SQLite error name; OTHER when it names none we
    know."""
    code = mysql_error_code(error)
    if code is not None:  # before the SQLSTATE: MySQL's are coarse (23000 for 1062 and 1048)
        if code == 0 and type(error).__name__ == "InterfaceError":
            return Failure.UNSENT  # "Not connected": the driver closed it before
        return _MYSQL.get(code, Failure.OTHER)
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if isinstance(sqlstate, str):
        if sqlstate == "23505":
            return Failure.ID_TAKEN
        if sqlstate.startswith("22"):
            return Failure.DATA
        if sqlstate == "42P01":
            return Failure.TABLE_MISSING
        if sqlstate == "40001":
            return Failure.SERIALIZATION
        if sqlstate in ("26000", "42P05", "08P01"):
            return Failure.STATEMENT_NAME
        return Failure.OTHER
    cause = error
    while not isinstance(cause, sqlite3.Error) and cause.__cause__ is not None:
        cause = cause.__cause__  # an adapter's wrapper around sqlite3's own error
    if isinstance(cause, sqlite3.Error):
        name = getattr(cause, "sqlite_errorname", "")
        if name in _SQLITE_ID_TAKEN:
            return Failure.ID_TAKEN
        if name in _SQLITE_DATA or isinstance(cause, sqlite3.DataError):
            return Failure.DATA
        if str(cause).startswith("no such table"):
            return Failure.TABLE_MISSING
    return Failure.OTHER


def mysql_error_code(error: BaseException) -> int | None:
    """The MySQL/MariaDB error number of a MySQL driver's error (``args[0]``), else None."""
    if type(error).__module__.partition(".")[0] not in _MYSQL_DRIVERS or not error.args:
        return None
    code = error.args[0]
    return code if isinstance(code, int) else None


def ends_connection(error: BaseException) -> bool:
    """Whether the server closes the connection after ``error`` although the statement's
    failure is the data's (MySQL's "packet bigger than max_allowed_packet"): the connection
    must not be used again."""
    return mysql_error_code(error) == _MYSQL_PACKET_TOO_BIG


class RetryBudget:
    """What one operation may still retry: serialization failures (a few times, with a short
    backoff), and one fresh connection.

    A statement that never reached the database (``UNSENT``) may always run once more on a
    fresh connection. After a disconnect during the statement only ``idempotent`` ones may:
    a write may have committed before the connection died.
    """

    __slots__ = ("idempotent", "reconnected", "serialization_failures")

    def __init__(self, *, idempotent: bool) -> None:
        self.idempotent = idempotent
        self.reconnected = False
        self.serialization_failures = 0

    async def allows(self, failure: Failure) -> bool:
        """Whether to run the statement again after ``failure`` (waiting first if need be)."""
        if failure is Failure.SERIALIZATION:
            if self.serialization_failures >= _SERIALIZATION_RETRIES:
                return False
            self.serialization_failures += 1
            await asyncio.sleep(
                min(0.001 * 2**self.serialization_failures, _SERIALIZATION_BACKOFF_CAP)
            )
            return True
        if failure is Failure.UNSENT or (failure is Failure.DISCONNECTED and self.idempotent):
            if self.reconnected:
                return False
            self.reconnected = True
            return True
        return False


def store_error(failed: StatementFailed, table: str) -> SessionError:
    """The library's error for a statement that failed for good, on the session ``table``.

    Raise it ``from`` what this returns as ``__cause__`` (see `store_error_cause`).
    """
    cause = failed.__cause__ or failed
    failure = failed.failure
    if failure is Failure.DATA:
        return DataRejectedError(
            f"the database refused a value of the session ({type(cause).__name__}"
            f"{_sqlstate(cause)}); nothing was written"
        )
    if failure is Failure.TABLE_MISSING:
        return SessionTableMissingError(
            f"the session table {table} does not exist: run `typed-session-sql migrate "
            f"upgrade head` (or `await backend.migrate()`) [{describe_error(cause)}]"
        )
    if failure is Failure.UNAVAILABLE:
        return StoreUnavailableError(f"session store unavailable: {describe_error(cause)}")
    if failure is Failure.STATEMENT_NAME:
        return StoreUnavailableError(
            f"session store failed: {describe_error(cause)}; behind a pooler in transaction "
            "mode (PgBouncer before 1.21) add prepared_statements=false to the database URL "
            "(on an engine of your own: asyncpg statement_cache_size=0 and SQLAlchemy's "
            "prepared_statement_cache_size=0, or psycopg prepare_threshold=None)"
        )
    if failure is Failure.ID_TAKEN:  # MySQL's message quotes the key: the id hash
        return StoreUnavailableError(
            f"session store failed: a unique key was taken ({type(cause).__name__}"
            f"{_sqlstate(cause)})"
        )
    if _quotes_the_statement(cause):
        return StoreUnavailableError(
            f"session store failed: the server could not parse a statement "
            f"({type(cause).__name__}{_sqlstate(cause)})"
        )
    return StoreUnavailableError(f"session store failed: {describe_error(cause)}")


def store_error_cause(failed: StatementFailed) -> BaseException | None:
    """What the library's error chains to: the driver's error, except for refused data, a
    taken key and a syntax error, whose messages may quote the values (MySQL's: the id
    hash, the data)."""
    quotes = failed.failure in (Failure.DATA, Failure.ID_TAKEN)
    return None if quotes or _quotes_the_statement(failed.__cause__) else failed.__cause__


def _quotes_the_statement(error: BaseException | None) -> bool:
    return error is not None and mysql_error_code(error) == _MYSQL_SYNTAX_ERROR


def _sqlstate(error: BaseException) -> str:
    code = mysql_error_code(error)
    number = f", error {code}" if code is not None else ""
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return number + (f", SQLSTATE {sqlstate}" if isinstance(sqlstate, str) else "")


@contextmanager
def translated(table: str, doing: str) -> Iterator[None]:
    """Turn a failure inside the block into the library's error, as `store_error`
    does for session statements: the door every rarer operation (statistics, creating or
    migrating the table, the purge and migration locks) leaves by, so that one failure
    reads the same whichever path met it.

    A missing table is `SessionTableMissingError` on every dialect, anything else
    that went wrong with the database a `StoreUnavailableError` saying what could
    not be done (``doing``, e.g. "read the table's statistics on <masked URL>") with the
    driver's first line. Anything else passes unchanged: the library's own errors, a
    cancellation, and a bug (a TypeError must not read as an outage).
    """
    try:
        yield
    except (SQLAlchemyError, OSError) as error:
        # The driver's error, not SQLAlchemy's wrapper: the wrapper's text may list the
        # statement's parameters.
        cause = (error.orig or error) if isinstance(error, DBAPIError) else error
        failed = StatementFailed(classify(cause))
        failed.__cause__ = cause
        if failed.failure in (Failure.TABLE_MISSING, Failure.DATA, Failure.ID_TAKEN):
            raise store_error(failed, table) from store_error_cause(failed)
        raise StoreUnavailableError(f"could not {doing}: {describe_error(cause)}") from cause
