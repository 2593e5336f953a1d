"""The driver executor's calls on aiosqlite (`.driver_executor`).

aiosqlite runs every call on the connection's own thread; each call is a round trip to it
(~60 us on a small box). SQLAlchemy's adapter makes four a statement (cursor(), execute,
fetchall, close); here a statement is one: ``execute_fetchall`` for a query, ``execute``
for a write, whose row count is read off the returned cursor without another trip.

Only for engines whose connections are in autocommit from the moment they connect (made by
`create_engine`): otherwise sqlite3 would open a transaction before each
write and leave it open.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Sequence
from typing import Any

from typed_session_sql.backends.sql.failures import Failure, classify

__all__ = ["AiosqliteDriver"]


class AiosqliteDriver:
    name = "aiosqlite"

    def rows(self, conn: Any, sql: str, args: list[object]) -> Awaitable[Sequence[Any]]:
        fetched: Awaitable[Sequence[Any]] = conn.execute_fetchall(sql, args)
        return fetched

    async def count(self, conn: Any, sql: str, args: list[object]) -> int:
        # The statement ran to completion on the thread; the cursor, dropped here, holds
        # nothing (sqlite3 resets a finished write), so closing it needs no trip.
        cursor = await conn.execute(sql, args)
        count: int = cursor.rowcount
        return count

    def classify(self, error: Exception, conn: Any) -> Failure:
        if isinstance(error, ValueError) and not isinstance(error, sqlite3.Error):
            return Failure.UNSENT  # aiosqlite's "Connection closed": nothing ran
        if isinstance(error, OverflowError):
            return Failure.DATA  # an int sqlite3 cannot bind, refused before running
        return classify(error)

    def is_closed(self, conn: Any) -> bool:
        return False  # aiosqlite cannot tell; a closed one fails as UNSENT, and is replaced

    async def ping(self, conn: Any) -> object:
        return await conn.execute("SELECT 1")

    async def close(self, conn: Any) -> object:
        return await conn.close()

    def terminate(self, conn: Any) -> None:
        conn.stop()  # the worker thread closes the connection and ends
