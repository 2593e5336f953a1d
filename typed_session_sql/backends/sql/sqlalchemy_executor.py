"""Statements run by SQLAlchemy's own execution, on any dialect.

Each statement checks a connection out of the engine's pool, runs in autocommit (no
BEGIN/COMMIT around it) and goes back. A connection the server closed while it sat in the
pool is replaced at checkout, at no round trip: a pool ``checkout`` listener asks the
driver's module (`Driver.is_closed`), as the driver executor does; a driver without a
module here is not asked, and ``pool_pre_ping`` is the engine's way. Everything SQLAlchemy
offers around a statement applies: engine events, ``echo`` and logging, execution options
such as ``schema_translate_map``, the compiled cache (the statements are built once).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from typed_session_sql.backends.sql.executor import DRIVERS
from typed_session_sql.backends.sql.failures import (
    Failure,
    StatementFailed,
    classify,
    ends_connection,
)
from typed_session_sql.backends.sql.statements import CompiledStatement

__all__ = ["SqlAlchemyExecutor"]

# SQLAlchemy reads an INSERT's rowcount from the cursor when asked, and the cursor of a
# statement that returns no rows is closed as soon as it ran: psycopg's closed cursor then
# says -1, so every create would look like a taken id. Kept at execution, it is the count.
_COUNTED = {"preserve_rowcount": True}


class SqlAlchemyExecutor:
    """Runs statements through ``engine`` (switched to autocommit if it is not)."""

    name = "sqlalchemy"
    held = 0

    def __init__(self, engine: AsyncEngine) -> None:
        pool = engine.sync_engine.pool
        rejecting = _closed_connections_rejecter(engine.dialect.driver)
        if rejecting is not None:
            # Listening twice on one pool adds the listener once. Not `event.contains`: it
            # goes by id(pool), and a new pool at a dead one's address whose listeners the
            # garbage collector has not freed yet looked listened to (a flaky CI failure).
            event.listen(pool, "checkout", rejecting)
        if engine.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._engine = engine

    async def aclose(self) -> None:
        pass

    async def run(self, statement: CompiledStatement, params: Mapping[str, object]) -> Any:
        try:
            conn = await self._engine.connect()
        except DBAPIError as error:
            raise StatementFailed(Failure.UNAVAILABLE) from error.orig
        except (SQLAlchemyError, OSError) as error:  # refused, pool timeout, DNS, ...
            raise StatementFailed(Failure.UNAVAILABLE) from error
        try:
            if statement.returns_rows:
                return (await conn.execute(statement.clause, dict(params))).all()
            result = await conn.execute(statement.clause, dict(params), execution_options=_COUNTED)
            return result.rowcount
        except DBAPIError as error:
            # The driver's own error as the cause, not SQLAlchemy's wrapper: on an engine that
            # does not hide parameters, the wrapper's text lists them.
            cause = error.orig or error
            failure = classify(cause)
            if error.connection_invalidated and failure is not Failure.UNSENT:
                failure = Failure.DISCONNECTED  # unless the driver knows nothing was sent
            elif ends_connection(cause):
                await conn.invalidate()  # the server closes it: never back to the pool
            raise StatementFailed(failure) from cause
        except (SQLAlchemyError, OSError) as error:
            raise StatementFailed(Failure.OTHER) from error
        finally:
            await conn.close()


_Listener = Callable[[Any, Any, Any], None]


@functools.cache  # one listener per driver: the pool is listened to once, however many use it
def _closed_connections_rejecter(driver_name: str) -> _Listener | None:
    """A pool ``checkout`` listener that replaces a pooled connection the server already
    closed, at no round trip, by asking ``driver_name``'s module (`Driver.is_closed`, the
    one answer both executors use); None for a driver without one.

    The driver notices the server's close (restart, ``pg_terminate_backend``, idle timeout)
    as soon as the event loop reads it; asking the driver is free, unlike ``pool_pre_ping``.
    """
    make = DRIVERS.get(driver_name)
    if make is None:
        return None
    driver = make()

    def reject_closed_connections(
        dbapi_connection: Any, connection_record: Any, connection_proxy: Any
    ) -> None:
        if driver.is_closed(dbapi_connection.driver_connection):
            raise DisconnectionError("the pooled connection was closed by the server")

    return reject_closed_connections
