"""The driver executor's calls on asyncmy, for MySQL and MariaDB (`.driver_executor`).

A statement is one ``cursor.execute`` in the text protocol, as SQLAlchemy's asyncmy dialect
sends it: the same SQL (``%s`` placeholders, escaped by asyncmy, bytes as ``_binary'...'``
literals), on the same connections (the engine's, made by that dialect: autocommit, and
the FOUND_ROWS client flag, which none of the backend's statements is sensitive to). The
result is read whole with the statement, so fetching it is no further round trip.

asyncmy has no public way to tell, without a round trip, that the server closed an idle
connection (asyncpg's ``is_closed()``); its ``_stream_broken`` property tells exactly that
(the transport is closing, or the stream hit its end), so `AsyncmyDriver.is_closed`
asks it where it exists. Without it, a connection the server closed fails its next
statement with error 2006 before the statement is sent, and the backend runs the
statement once more, on a fresh connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from typed_session_sql.backends.sql.failures import Failure, classify, ends_connection

__all__ = ["AsyncmyDriver"]


class AsyncmyDriver:
    name = "asyncmy"

    async def rows(self, conn: Any, sql: str, args: list[object]) -> Sequence[Any]:
        cursor = conn.cursor()
        await cursor.execute(sql, args)
        rows: Sequence[Any] = await cursor.fetchall()  # buffered already: no I/O
        return rows

    async def count(self, conn: Any, sql: str, args: list[object]) -> int:
        count: int = await conn.cursor().execute(sql, args)
        return count

    def classify(self, error: Exception, conn: Any) -> Failure:
        if ends_connection(error):
            # The server closes the connection after refusing the packet: close it here
            # too, so that it is replaced rather than failing the next statement.
            conn.close()
        if isinstance(error, UnicodeEncodeError):
            return Failure.DATA  # a str asyncmy cannot encode, refused before sending
        return classify(error)

    def is_closed(self, conn: Any) -> bool:
        # Closed by us or after a failed send, or (no I/O) the server's close already read.
        return not conn.connected or getattr(conn, "_stream_broken", False) is True

    async def ping(self, conn: Any) -> object:
        return await conn.ping(reconnect=False)

    async def close(self, conn: Any) -> object:
        return await conn.ensure_closed()  # QUIT, then close

    def terminate(self, conn: Any) -> None:
        conn.close()
