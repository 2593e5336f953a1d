"""Statements run straight on the driver's connection, past SQLAlchemy's execution.

The SQL was compiled once by SQLAlchemy (`.statements`); here it goes to the driver
with its positional arguments, on a connection from a `connections` source. What
differs between drivers (how to run, what an error means, whether a connection is closed)
is a `Driver`, one module each: `.asyncpg_driver`, `.psycopg_driver`,
`.aiosqlite_driver`, `.asyncmy_driver`.

Statements are logged at DEBUG on the ``typed_session_sql.sql`` logger (the SQL, never its
parameters): the driver executor's counterpart of the ``sqlalchemy.engine`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

from typed_session_sql.backends.sql.connections import ConnectionSource, DriverConnections
from typed_session_sql.backends.sql.failures import Failure, StatementFailed
from typed_session_sql.backends.sql.statements import CompiledStatement

__all__ = ["Driver", "DriverExecutor", "statement_logger"]

statement_logger = logging.getLogger("typed_session_sql.sql")


class Driver(DriverConnections, Protocol):
    """The calls a driver executor makes on one driver's connections."""

    name: str

    def rows(self, conn: Any, sql: str, args: list[object]) -> Awaitable[Sequence[Any]]:
        """Run a query; all its rows."""
        ...

    async def count(self, conn: Any, sql: str, args: list[object]) -> int:
        """Run a write; how many rows it changed."""
        ...

    def classify(self, error: Exception, conn: Any) -> Failure:
        """What ``error``, raised by a statement on ``conn``, means."""
        ...


class DriverExecutor:
    """Runs statements with ``driver``'s calls on connections from ``connections``."""

    def __init__(self, driver: Driver, connections: ConnectionSource) -> None:
        self.name = driver.name
        self.held = connections.held
        self._driver = driver
        self._connections = connections

    async def aclose(self) -> None:
        await self._connections.aclose()

    async def run(self, statement: CompiledStatement, params: Mapping[str, object]) -> Any:
        args = statement.arguments(params)
        if statement_logger.isEnabledFor(logging.DEBUG):
            statement_logger.debug("%s", statement.sql)
        connections = self._connections
        pooled = connections.acquire_now()
        if pooled is None:
            try:
                pooled = await connections.acquire()
            except Exception as error:  # refused, pool timeout, unknown login, no such file...
                raise StatementFailed(Failure.UNAVAILABLE) from error
        conn = pooled.driver_connection
        reusable = False
        try:
            if statement.returns_rows:
                result: Any = await self._driver.rows(conn, statement.sql, args)
            else:
                result = await self._driver.count(conn, statement.sql, args)
            reusable = True
            return result
        except Exception as error:
            failure = self._driver.classify(error, conn)
            reusable = failure not in (Failure.DISCONNECTED, Failure.UNSENT, Failure.OTHER)
            raise StatementFailed(failure) from error
        finally:
            # Cancelled midway (reusable still False): the connection's state is unknown.
            if not (reusable and connections.release_now(pooled)):
                await connections.release(pooled, reusable=reusable)
