"""How the backend runs a statement: one executor per backend, chosen once.

An `Executor` runs one `CompiledStatement` statement and names what went
wrong (`StatementFailed`); retrying and reporting are the backend's, once
for all executors. There are two:

- `SqlAlchemyExecutor`: SQLAlchemy's own execution, on any
  dialect. Engine events (``before_cursor_execute`` and the rest), ``echo`` and the
  ``sqlalchemy.engine`` loggers, and execution options all apply.
- `DriverExecutor`: the precompiled SQL straight on the driver's
  connection (asyncpg, psycopg, aiosqlite, asyncmy), past SQLAlchemy's per-statement
  machinery, which costs about as much as the database round trip itself. Statements are
  logged at DEBUG on the ``typed_session_sql.sql`` logger and seen by driver-level tracing
  (OpenTelemetry's asyncpg instrumentation).

`choose` picks one for an engine: ``execution="auto"`` takes the driver executor where
there is one for the engine's driver and nothing on the engine expects SQLAlchemy's
execution; see its docstring.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from typed_session_sql.backends.sql.aiosqlite_driver import AiosqliteDriver
from typed_session_sql.backends.sql.asyncmy_driver import AsyncmyDriver
from typed_session_sql.backends.sql.asyncpg_driver import AsyncpgDriver
from typed_session_sql.backends.sql.driver_executor import Driver
from typed_session_sql.backends.sql.engine import autocommit_on_connect
from typed_session_sql.backends.sql.psycopg_driver import PsycopgDriver
from typed_session_sql.backends.sql.statements import CompiledStatement

__all__ = ["DRIVERS", "Execution", "Executor", "choose"]

Execution = Literal["auto", "driver", "sqlalchemy"]

# The drivers a driver executor exists for, by the engine's ``dialect.driver``; each module
# holds the few calls that differ (running, error codes, closed connections: SQLAlchemy's
# execution asks the same module whether a pooled connection is closed). Another driver is
# one more module and an entry here, plus what it is told not to name statements
# (engine._UNNAMED_STATEMENTS) and its extra (urls.DRIVER_EXTRAS); what differs between
# databases, whatever the driver, is in .dialects.
DRIVERS: Mapping[str, Callable[[], Driver]] = {
    "asyncpg": AsyncpgDriver,
    "aiosqlite": AiosqliteDriver,
    "psycopg": PsycopgDriver,
    "asyncmy": AsyncmyDriver,
}

# The engine events that fire around a statement SQLAlchemy runs: a listener on any of them
# expects to see the backend's statements.
_STATEMENT_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
)


class Executor(Protocol):
    """Runs the backend's statements."""

    name: str
    """What runs them: ``sqlalchemy``, or the driver's name."""
    held: int
    """How many of the engine's connections it holds for the backend, at most (0: none)."""

    async def run(self, statement: CompiledStatement, params: Mapping[str, object]) -> Any:
        """Run ``statement``: a query's rows, unconverted (see `CompiledStatement.decode`), or
        how many rows a write changed. Raises `StatementFailed`."""
        ...

    async def aclose(self) -> None:
        """Close what the executor holds (the engine is not closed)."""
        ...


def choose(engine: AsyncEngine, execution: Execution) -> tuple[str, str]:
    """Which executor runs ``engine``'s statements, and why: ``("sqlalchemy" | driver, why)``.

    ``"driver"`` insists on the driver executor (ValueError where there is none);
    ``"sqlalchemy"`` on SQLAlchemy's. ``"auto"`` takes the driver executor unless the engine
    has, when the backend is made, something only SQLAlchemy's execution serves: ``echo``,
    a ``sqlalchemy.engine`` logger enabled for statements (INFO), or a listener on a
    statement event (``before_cursor_execute`` and the like: tracing, statement counting).
    A ``schema_translate_map`` is compiled into the driver executor's SQL.
    """
    if execution not in ("auto", "driver", "sqlalchemy"):
        raise ValueError(f"execution must be auto, driver or sqlalchemy, not {execution!r}")
    if execution == "sqlalchemy":
        return "sqlalchemy", "asked for"
    driver = engine.dialect.driver
    unsupported = _unsupported(engine)
    if execution == "driver":
        if unsupported:
            raise ValueError(f"no driver executor for this engine: {unsupported}")
        return driver, "asked for"
    if unsupported:
        return "sqlalchemy", unsupported
    observers = _observers(engine)
    if observers:
        return "sqlalchemy", observers
    return driver, "fastest for the driver"


def _unsupported(engine: AsyncEngine) -> str:
    driver = engine.dialect.driver
    if driver not in DRIVERS:
        return f"no driver executor for {driver}"
    if driver in _OPENS_TRANSACTIONS and not autocommit_on_connect(engine):
        opener = _OPENS_TRANSACTIONS[driver]
        return f"the {opener} engine's connections are not in autocommit (use create_engine)"
    return ""


# The drivers whose connections, unless create_engine made them autocommit, begin a
# transaction before a write and leave it open (sqlite3, psycopg, asyncmy): the pool's reset
# at check-in rolls the write back, which the backend has reported done. SQLAlchemy's
# execution runs them in autocommit instead. asyncpg runs a statement outside a
# transaction on its own.
_OPENS_TRANSACTIONS = {"aiosqlite": "SQLite", "psycopg": "psycopg", "asyncmy": "MySQL"}


def _observers(engine: AsyncEngine) -> str:
    sync_engine = engine.sync_engine
    if sync_engine.echo:
        return "echo is on"
    if logging.getLogger("sqlalchemy.engine.Engine").isEnabledFor(logging.INFO):
        return "sqlalchemy.engine logs statements"
    # SQLAlchemy has no documented way to ask whether an engine has listeners; its event
    # collections on the engine's `dispatch` (a typed public attribute) are the only one.
    # Asked once, here; tests/sql/test_sql_executors.py checks it on both SQLAlchemy bounds.
    dispatch = sync_engine.dispatch
    listened = [name for name in _STATEMENT_EVENTS if getattr(dispatch, name)]
    if listened:
        return "listeners on " + ", ".join(listened)
    return ""
