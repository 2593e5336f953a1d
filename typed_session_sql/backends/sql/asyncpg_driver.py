"""The driver executor's calls on asyncpg (`.driver_executor`).

Statements go through asyncpg's own statement cache (named prepared statements), as raw
asyncpg use does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

from typed_session_sql.backends.sql.failures import Failure, classify

__all__ = ["AsyncpgDriver"]


class AsyncpgDriver:
    name = "asyncpg"

    def rows(self, conn: Any, sql: str, args: list[object]) -> Awaitable[Sequence[Any]]:
        fetched: Awaitable[Sequence[Any]] = conn.fetch(sql, *args)
        return fetched

    async def count(self, conn: Any, sql: str, args: list[object]) -> int:
        status: str = await conn.execute(sql, *args)  # "UPDATE 1"
        return int(status.rsplit(" ", 1)[-1])

    def classify(self, error: Exception, conn: Any) -> Failure:
        if conn.is_closed() or isinstance(error, OSError):
            return Failure.DISCONNECTED
        failure = classify(error)
        if failure is Failure.OTHER and isinstance(error, ValueError):
            # asyncpg's own DataError (a ValueError): an argument it cannot encode, refused
            # before anything was sent.
            return Failure.DATA
        return failure

    def is_closed(self, conn: Any) -> bool:
        closed: bool = conn.is_closed()
        return closed

    async def ping(self, conn: Any) -> object:
        return await conn.execute("SELECT 1")

    async def close(self, conn: Any) -> object:
        return await conn.close(timeout=5)

    def terminate(self, conn: Any) -> None:
        conn.terminate()
