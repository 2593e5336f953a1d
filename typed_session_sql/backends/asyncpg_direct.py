"""The SQL backend's statements run straight on asyncpg (:mod:`.direct`).

With asyncpg, running precompiled SQL on the pooled driver connection skips SQLAlchemy's
per-statement execution machinery (about half the cost of a primary-key read at 16
concurrent requests).
"""

from __future__ import annotations

from typing import Any

from typed_session_sql.backends.direct import DirectPath

_UNIQUE_VIOLATION = "23505"


class AsyncpgDirect(DirectPath):
    """Runs named, precompiled statements on the engine's pooled asyncpg connections.

    Rows are ``asyncpg.Record`` objects.
    """

    async def _call(self, driver: Any, sql: str, args: list[Any], fetch: bool, many: bool) -> Any:
        if fetch and many:
            return await driver.fetch(sql, *args)
        if fetch:
            return await driver.fetchrow(sql, *args)
        status: str = await driver.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1])

    def _is_closed(self, driver: Any) -> bool:
        closed: bool = driver.is_closed()
        return closed

    def _is_unique_violation(self, error: Exception) -> bool:
        return getattr(error, "sqlstate", None) == _UNIQUE_VIOLATION
