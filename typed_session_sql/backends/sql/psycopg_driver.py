"""The driver executor's calls on psycopg 3 (`.driver_executor`), for
``postgresql+psycopg://`` URLs (the ``psycopg`` extra).

psycopg sends a statement and its arguments in one round trip whether or not it prepares
it (Parse, Bind, Describe, Execute, Sync together): with ``prepared_statements=false`` in
the URL (``prepare_threshold=None``) it never names one, which a pooler in transaction mode
that does not track prepared statements needs (PgBouncer before 1.21), at one round trip
per operation as direct. asyncpg needs two there: without named statements it describes
each statement before it binds it.

Only for engines whose connections are in autocommit from the moment they connect (made by
`create_engine`): otherwise psycopg would begin a transaction before the
first statement and leave it open.
"""

from __future__ import annotations

import select
from collections.abc import Sequence
from typing import Any

from typed_session_sql.backends.sql.failures import Failure, classify

__all__ = ["PsycopgDriver"]


class PsycopgDriver:
    name = "psycopg"

    async def rows(self, conn: Any, sql: str, args: list[object]) -> Sequence[Any]:
        cursor = await conn.execute(sql, args)
        rows: Sequence[Any] = await cursor.fetchall()
        return rows

    async def count(self, conn: Any, sql: str, args: list[object]) -> int:
        cursor = await conn.execute(sql, args)
        count: int = cursor.rowcount
        return count

    def classify(self, error: Exception, conn: Any) -> Failure:
        if conn.closed or isinstance(error, OSError):
            return Failure.DISCONNECTED
        return classify(error)

    def is_closed(self, conn: Any) -> bool:
        # psycopg reads from the server only while it runs something: a connection the
        # server closed while it sat idle (a restart, pg_terminate_backend) still says it
        # is open, with the server's goodbye unread in its socket. An idle connection of
        # ours is sent nothing else (no LISTEN), so anything to read means it is gone.
        return bool(conn.closed) or _readable(conn.pgconn.socket)

    async def ping(self, conn: Any) -> object:
        return await conn.execute("SELECT 1")

    async def close(self, conn: Any) -> object:
        return await conn.close()

    def terminate(self, conn: Any) -> None:
        conn.pgconn.finish()  # closes the socket now; nothing to await


def _readable(socket: int) -> bool:
    """Whether ``socket`` has something to read (or hit end of file), without waiting."""
    if hasattr(select, "poll"):  # any descriptor number, unlike select()'s FD_SETSIZE
        poller = select.poll()
        poller.register(socket, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([socket], [], [], 0)
    return bool(readable)
