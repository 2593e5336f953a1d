"""The SQL backend's connection to the database: the engine, and surviving its failures.

:func:`create_engine` makes an engine tuned for session traffic. The rest is the failure
policy both ways of running a statement share (SQLAlchemy's, in
:mod:`typed_session_sql.backends.sql`, and the direct one, in
:mod:`typed_session_sql.backends.direct`): replace connections the server closed,
retry what is safe to retry (:class:`Attempts`), and turn everything else into a
:class:`~typed_session_sql.errors.StoreUnavailableError`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from typed_session_sql.errors import StoreUnavailableError
from typed_session_sql.urls import async_url

URL_ENV = "TYPED_SESSION_SQL_URL"
DEFAULT_URL = "sqlite+aiosqlite:///./sessions.db"

# A serialization failure (SQLSTATE 40001) aborted the statement; running it again is safe.
# PostgreSQL raises it only under SERIALIZABLE; CockroachDB and YugabyteDB raise it routinely.
_SERIALIZATION_FAILURE = "40001"
_SERIALIZATION_RETRIES = 5


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine tuned for session traffic: autocommit, no pool reset, SQLite in WAL mode.

    Autocommit means no transaction is ever left open on a pooled connection, so resetting
    it on return (a ROLLBACK round trip on some drivers) buys nothing. Extra ``kwargs`` go to
    :func:`sqlalchemy.ext.asyncio.create_async_engine`.
    """
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    if url.startswith("sqlite"):
        # SQLAlchemy still calls the driver's rollback() when a connection closes, even in
        # autocommit; on aiosqlite that no-op costs a thread hop, measured at +11-16% per
        # load (benchmarks/sqlite_store.py). The dialect skips it only after checking that
        # the connection really is in autocommit.
        options["skip_autocommit_rollback"] = True
    options.update(kwargs)
    engine = create_async_engine(async_url(url), **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


# busy_timeout first: switching to WAL itself needs the lock another process may hold.
# Several processes writing at once then wait their turn instead of failing with "database
# is locked"; every operation is one short statement, so waits are short.
SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout = 30000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def reject_closed_connections(
    dbapi_connection: Any, connection_record: Any, connection_proxy: Any
) -> None:
    """Replace a pooled connection the server already closed, at no round trip.

    A pool ``checkout`` listener. The driver notices the server's close (restart,
    ``pg_terminate_backend``, idle timeout) as soon as the event loop reads it; asking the
    driver is free, unlike ``pool_pre_ping``.
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver, "is_closed", None)  # asyncpg; psycopg has a `closed` flag
    closed = is_closed() if callable(is_closed) else getattr(driver, "closed", False) is True
    if closed:
        raise DisconnectionError("the pooled connection was closed by the server")


class Attempts:
    """What one operation may still retry: serialization failures, and one reconnect.

    Writes that are not ``idempotent`` are never re-run after a disconnect: the first
    attempt may have committed before the connection died.
    """

    __slots__ = ("idempotent", "reconnected", "serialization_failures")

    def __init__(self, idempotent: bool) -> None:
        self.idempotent = idempotent
        self.reconnected = False
        self.serialization_failures = 0

    async def after_serialization_failure(self, sqlstate: object) -> bool:
        """Whether to run the statement again (after a short backoff)."""
        if sqlstate != _SERIALIZATION_FAILURE:
            return False
        if self.serialization_failures >= _SERIALIZATION_RETRIES:
            return False
        self.serialization_failures += 1
        await asyncio.sleep(0.001 * 2**self.serialization_failures)
        return True

    def reconnect(self) -> bool:
        """Whether to run the statement again on a fresh connection after a disconnect."""
        if not self.idempotent or self.reconnected:
            return False
        self.reconnected = True
        return True


class Duplicate(Exception):
    """A statement broke a constraint: the new id of a rotation, or of a create, is taken.

    The backend decides what that means for the operation; ``__cause__`` holds the
    driver's error. Through SQLAlchemy this is any ``IntegrityError``; on the direct path,
    a unique violation.
    """


def store_failed(error: object) -> StoreUnavailableError:
    """The driver reported an error for the statement, and no retry was left."""
    return StoreUnavailableError(f"session store failed: {type(error).__name__}")


def store_unavailable(error: BaseException) -> StoreUnavailableError:
    """No connection to run the statement on: refused, pool timeout, DNS, ..."""
    return StoreUnavailableError(f"session store unavailable: {type(error).__name__}")
