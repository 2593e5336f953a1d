"""What an asyncmy connection sends, seen at its transport: every command, the driver's own
included (``SET AUTOCOMMIT``, ``ROLLBACK``, ...), not only what passes a cursor.

:func:`tap` wraps a connected asyncmy connection's transport; each complete client packet
that starts a command (sequence number 0) and runs a statement is reported as that
statement: a ``COM_QUERY``'s text, or the text of the prepared statement a
``COM_STMT_EXECUTE`` runs (found by its number in the connection's statement cache, where
asyncmy keeps what it prepared). Preparing (once per statement and connection, as asyncpg
does) runs nothing and is not reported; other commands are reported by name
(``COM_PING``, ``COM_QUIT``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_COMMANDS = {
    0x01: "COM_QUIT",
    0x02: "COM_INIT_DB",
    0x03: "COM_QUERY",
    0x0E: "COM_PING",
    0x16: "COM_STMT_PREPARE",
    0x17: "COM_STMT_EXECUTE",
    0x19: "COM_STMT_CLOSE",
    0x1A: "COM_STMT_RESET",
}


class _Tap:
    """The transport, with every byte written also parsed into packets."""

    def __init__(self, connection: Any, seen: Callable[[str], None]) -> None:
        self._connection = connection
        self._transport = connection._transport
        self._seen = seen
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            length = int.from_bytes(self._buffer[:3], "little")
            if len(self._buffer) < 4 + length:
                break
            sequence, payload = self._buffer[3], bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            if sequence == 0 and payload:
                self._command(payload)
        self._transport.write(data)

    def _command(self, payload: bytes) -> None:
        command = _COMMANDS.get(payload[0], f"COM_{payload[0]:#x}")
        if command == "COM_QUERY":
            self._seen(payload[1:].decode(errors="replace"))
        elif command == "COM_STMT_EXECUTE":
            number = int.from_bytes(payload[1:5], "little")
            cache = self._connection._stmt_cache
            texts = {statement._statement_id: sql for sql, statement in cache.items()}
            self._seen(texts.get(number, command))
        elif command not in ("COM_STMT_PREPARE", "COM_STMT_CLOSE", "COM_STMT_RESET"):
            self._seen(command)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def tap(connection: Any, seen: Callable[[str], None]) -> None:
    """Report every statement ``connection`` (an asyncmy connection) runs from now on."""
    connection._transport = _Tap(connection, seen)
