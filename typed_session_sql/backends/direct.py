"""The SQL backend's statements run straight on the driver, past SQLAlchemy's execution.

Running precompiled SQL on the pooled driver connection skips SQLAlchemy's per-statement
execution machinery: on asyncpg about half the cost of a primary-key read at 16 concurrent
requests; on aiosqlite also three of the adapter's four thread hops a statement. The
statements are the backend's own, compiled once here to the driver's SQL; connections still
come from the engine's pool, and failures follow the same policy as SQLAlchemy's path
(:mod:`typed_session_sql.backends.sql_engine`).

:class:`DirectPath` is what both drivers share: the compiled statements, when the path may
be taken, checking connections out and in, the retries and the failure mapping. Each
driver's subclass (:mod:`~typed_session_sql.backends.asyncpg_direct`,
:mod:`~typed_session_sql.backends.aiosqlite_direct`) only runs a statement and reads its
errors.

Rows come back as the driver gives them: timestamps are integer microseconds, for the
caller to convert (:mod:`typed_session_sql.backends.sql_table`).

On an engine the backend owns, the path also keeps idle connections checked out for
itself, which spares each statement a trip through the pool.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from typed_session_sql.backends.sql_engine import (
    Attempts,
    Duplicate,
    store_failed,
    store_unavailable,
)
from typed_session_sql.backends.sql_table import to_micros

# Parameters holding timestamps: bound without SQLAlchemy, so converted here.
_TIME_PARAMS = frozenset({"p_expires", "p_created", "p_now", "p_auth"})


class DirectPath(ABC):
    """Runs named, precompiled statements on the engine's pooled driver connections.

    Args:
        engine: the backend's engine, on the subclass's driver.
        statements: the statements by name, parameters all named ``p_*``.
    """

    def __init__(self, engine: AsyncEngine, statements: Mapping[str, Any]) -> None:
        self._engine = engine
        # What failing to get a connection raises: the pool's errors, and the driver's own,
        # which raw_connection() lets through unwrapped (a refused login or database, or a
        # SQLite file that cannot be opened).
        self._checkout_errors: tuple[type[Exception], ...] = (
            SQLAlchemyError,
            OSError,
            engine.dialect.loaded_dbapi.Error,
        )
        self._statements = {
            name: _Compiled.compile(statement, engine.dialect)
            for name, statement in statements.items()
        }
        # Idle connections kept checked out (up to _keep), and the pool they came from.
        self._keep = 0
        self._kept: list[Any] = []
        self._kept_pool: object = None

    def available(self) -> bool:
        """Whether statements may bypass SQLAlchemy now.

        Cursor-execute listeners (statement counting, tracing) and ``echo`` only see
        statements SQLAlchemy runs, so while any is present every statement must take the
        ordinary path instead.
        """
        sync_engine = self._engine.sync_engine
        dispatch = sync_engine.dispatch
        return not (
            dispatch.before_cursor_execute or dispatch.after_cursor_execute or sync_engine.echo
        )

    # -- what each driver does ----------------------------------------------------------

    @abstractmethod
    async def _call(self, driver: Any, sql: str, args: list[Any], fetch: bool, many: bool) -> Any:
        """Run ``sql`` once on ``driver``: the row or None (``fetch``), all rows (``fetch``
        and ``many``) or how many rows it changed."""

    @abstractmethod
    def _is_closed(self, driver: Any) -> bool:
        """Whether the driver connection is closed (a free check, no I/O)."""

    @abstractmethod
    def _is_unique_violation(self, error: Exception) -> bool:
        """Whether ``error`` is the driver's unique-constraint violation."""

    # -- running one statement ----------------------------------------------------------

    async def count(self, name: str, params: dict[str, Any], *, idempotent: bool) -> int:
        """Run the statement ``name``; return how many rows it changed."""
        count: int = await self._run(name, params, idempotent=idempotent, fetch=False)
        return count

    async def fetch_row(self, name: str, params: dict[str, Any]) -> Any:
        """Run the query ``name``; return its one row (indexable by column), or None."""
        return await self._run(name, params, idempotent=True, fetch=True)

    async def fetch_rows(self, name: str, params: dict[str, Any]) -> list[Any]:
        """Run the query ``name``; return all its rows."""
        rows: list[Any] = await self._run(name, params, idempotent=True, fetch=True, many=True)
        return rows

    async def _run(
        self,
        name: str,
        params: dict[str, Any],
        *,
        idempotent: bool,
        fetch: bool,
        many: bool = False,
    ) -> Any:
        """Run the statement ``name`` on a pooled connection.

        Retries what :class:`Attempts` allows; a unique violation raises :class:`Duplicate`,
        any other failure :class:`~typed_session_sql.errors.StoreUnavailableError`.
        """
        statement = self._statements[name]
        args = statement.arguments(params)
        attempts = Attempts(idempotent)
        while True:
            try:
                pooled = await self._checkout()
            except self._checkout_errors as error:
                raise store_unavailable(error) from error
            driver = pooled.driver_connection
            assert driver is not None
            try:
                result = await self._call(driver, statement.sql, args, fetch, many)
            except Exception as error:
                if self._is_closed(driver):
                    pooled.invalidate(error)  # outside a greenlet: closes at once, no I/O
                    if attempts.reconnect():
                        continue
                else:
                    await self._checkin(pooled)
                if self._is_unique_violation(error):
                    raise Duplicate from error
                if await attempts.after_serialization_failure(getattr(error, "sqlstate", None)):
                    continue
                raise store_failed(error) from error
            except BaseException:
                # Cancelled mid-statement: the connection's state is unknown; drop it.
                pooled.invalidate()
                raise
            await self._checkin(pooled)
            return result

    # -- the kept connections -----------------------------------------------------------

    def keep_idle_connections(self) -> None:
        """Keep up to the pool's size of idle connections checked out, for this path alone.

        Only for an engine the backend owns: others using it get the remaining (overflow)
        connections.
        """
        pool = self._engine.sync_engine.pool
        size = getattr(pool, "size", None)
        if callable(size):
            # Without overflow, leave one connection cycling through the pool for others.
            overflow = getattr(pool, "_max_overflow", 0)
            self._keep = max(0, size() - (1 if overflow == 0 else 0))

    def keeps_any(self) -> bool:
        """Whether any idle connection is kept out of the pool right now."""
        return bool(self._kept)

    async def release_kept(self) -> None:
        """Give the kept idle connections back to the engine's pool."""
        kept, self._kept = self._kept, []
        for pooled in kept:
            await greenlet_spawn(pooled.close)

    async def _checkout(self) -> Any:
        """A pooled connection: a kept one if there is one, else from the pool."""
        pool = self._engine.sync_engine.pool
        if self._kept_pool is not pool:  # first use, or the engine was disposed meanwhile
            stale, self._kept, self._kept_pool = self._kept, [], pool
            for pooled in stale:
                pooled.invalidate()  # outside a greenlet: closes at once, no I/O
        kept = self._kept
        while kept:
            pooled = kept.pop()
            if not self._is_closed(pooled.driver_connection):
                return pooled
            pooled.invalidate()  # the server closed it while idle: replace it
        return await self._engine.raw_connection()

    async def _checkin(self, pooled: Any) -> None:
        if len(self._kept) < self._keep and self._kept_pool is self._engine.sync_engine.pool:
            self._kept.append(pooled)
        else:
            await greenlet_spawn(pooled.close)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement compiled once to the driver's SQL, with its parameters in order.

    Parameters named ``p_*`` are the caller's; any other is a constant the dialect
    rendered as a parameter (SQLite's ``LIMIT ? OFFSET ?``), bound to its fixed value.
    """

    sql: str
    names: tuple[str, ...]
    times: tuple[bool, ...]
    constants: Mapping[str, Any]

    @classmethod
    def compile(cls, statement: Any, dialect: Dialect) -> _Compiled:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        constants = {
            name: value for name, value in compiled.params.items() if not name.startswith("p_")
        }
        times = tuple(name in _TIME_PARAMS for name in names)
        return cls(str(compiled), names, times, constants)

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        values = {**self.constants, **params} if self.constants else params
        return [
            to_micros(values[name]) if is_time else values[name]
            for name, is_time in zip(self.names, self.times, strict=True)
        ]
