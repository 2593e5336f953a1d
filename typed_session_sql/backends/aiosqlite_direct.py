"""The SQL backend's statements run straight on aiosqlite (:mod:`.direct`).

aiosqlite runs every call on the connection's own thread; each call is a round trip to it
(~60 us on a small box). SQLAlchemy's adapter makes four a statement (cursor(), execute,
fetchall, close); here a statement is one: ``execute_fetchall`` for a query, ``execute``
for a write, whose row count is read off the returned cursor without another trip.

Only for engines whose connections are in autocommit from the start (``isolation_level=
"AUTOCOMMIT"`` on the engine, as :func:`~typed_session_sql.backends.sql_engine.create_engine`
sets): otherwise sqlite3 would open a transaction before each write and leave it open.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from typed_session_sql.backends.direct import DirectPath

_UNIQUE_VIOLATIONS = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})


class AiosqliteDirect(DirectPath):
    """Runs named, precompiled statements on the engine's pooled aiosqlite connections.

    Rows are tuples.
    """

    @staticmethod
    def suits(engine: AsyncEngine) -> bool:
        """Whether ``engine``'s connections are aiosqlite ones in autocommit from the start."""
        dialect = engine.dialect
        return (
            dialect.driver == "aiosqlite"
            and getattr(dialect, "_on_connect_isolation_level", None) == "AUTOCOMMIT"
        )

    async def _call(self, driver: Any, sql: str, args: list[Any], fetch: bool, many: bool) -> Any:
        if fetch:
            rows = await driver.execute_fetchall(sql, args)
            if many:
                return list(rows)
            for row in rows:
                return row
            return None
        # The statement ran to completion on the thread; the cursor, dropped here, holds
        # nothing (sqlite3 resets a finished write), so closing it needs no trip.
        cursor = await driver.execute(sql, args)
        count: int = cursor.rowcount
        return count

    def _is_closed(self, driver: Any) -> bool:
        # aiosqlite has no public flag; SQLAlchemy's adapter reads the same attribute.
        return not driver._running or driver._connection is None

    def _is_unique_violation(self, error: Exception) -> bool:
        return (
            isinstance(error, sqlite3.IntegrityError)
            and getattr(error, "sqlite_errorname", None) in _UNIQUE_VIOLATIONS
        )
