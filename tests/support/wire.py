"""Counting what crosses the wire: round trips and statements per operation, measured, not
assumed.

- PostgreSQL and Redis: :class:`CountingProxy`, a TCP proxy on loopback between a client and
  the server (PostgreSQL or PgBouncer). For PostgreSQL it counts the server's ReadyForQuery
  messages (exactly one ends every round trip of the protocol: a simple Query, or an
  extended-protocol batch up to its Sync) and the client's Query and Execute messages
  (statements), and keeps every message's count by type in each direction. For Redis it counts the
  commands the client sends (no contender here pipelines, so each is one round trip). For
  MySQL/MariaDB it counts the client's commands (packets that open an exchange, sequence
  number 0: a query, a ping, ...); the server answers each before the next, so each is one
  round trip.
- SQLite: :class:`TracedConnection`, a ``sqlite3.Connection`` whose trace callback counts
  every statement SQLite runs, given to aiosqlite (and so to SQLAlchemy) as the
  connection ``factory``.

The proxy runs its own event loop in a thread, so it serves async and threaded clients and
other processes alike. The benchmarks use it only in counting passes, never while timing:
it would add a hop. The tests use it to hold round trips to a number (tests/production).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Self

Protocol = Literal["postgres", "redis", "mysql"]
Listener = Callable[[bytes], None]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


@dataclass
class Counts:
    """What one counting pass saw."""

    round_trips: int = 0
    statements: int = 0


class _Scanner:
    """Finds message boundaries in one direction of a length-prefixed protocol stream: each
    message's header is read whole, its payload skipped without being copied. Subclasses
    say how long a header is and what it holds (:meth:`parse`)."""

    def __init__(self) -> None:
        self.header = bytearray()
        self.skip = 0

    def need(self) -> int:
        """How many bytes the next header has."""
        raise NotImplementedError

    def parse(self, header: bytes) -> tuple[int | None, int]:
        """The tag to report for a complete header (None: nothing), and its payload size."""
        raise NotImplementedError

    def feed(self, data: bytes) -> list[int]:
        tags: list[int] = []
        i, n = 0, len(data)
        while i < n:
            if self.skip:
                step = min(self.skip, n - i)
                self.skip -= step
                i += step
                continue
            need = self.need()
            take = min(need - len(self.header), n - i)
            self.header += data[i : i + take]
            i += take
            if len(self.header) < need:
                break
            tag, self.skip = self.parse(bytes(self.header))
            if tag is not None:
                tags.append(tag)
            self.header.clear()
        return tags


class _PgScanner(_Scanner):
    """PostgreSQL: every message is a type byte and a 4-byte length that counts itself; the
    client's first message (startup) has no type byte. Reports each message's type byte."""

    def __init__(self, *, typed: bool) -> None:
        super().__init__()
        self.typed = typed

    def need(self) -> int:
        return 5 if self.typed else 4

    def parse(self, header: bytes) -> tuple[int | None, int]:
        if not self.typed:
            self.typed = True  # the startup message is the only untyped one we forward
            return None, struct.unpack("!I", header)[0] - 4
        return header[0], struct.unpack("!I", header[1:5])[0] - 4


class _MysqlScanner(_Scanner):
    """MySQL: every packet is a 3-byte little-endian payload length and a sequence byte.
    Reports each packet's sequence number."""

    def need(self) -> int:
        return 4

    def parse(self, header: bytes) -> tuple[int | None, int]:
        return header[3], int.from_bytes(header[:3], "little")


class _RespScanner:
    """Counts complete commands (RESP arrays of bulk strings) sent by a Redis client."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> int:
        self.buffer += data
        commands = 0
        pos = 0
        buf = self.buffer
        while True:
            end = _parse_command(buf, pos)
            if end is None:
                break
            pos = end
            commands += 1
        del buf[:pos]
        return commands


def _parse_command(buf: bytearray, pos: int) -> int | None:
    """The end of the command starting at ``pos``, or None if it is not complete yet."""
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        return None
    if buf[pos : pos + 1] != b"*":  # an inline command: one line
        return line_end + 2
    count = int(buf[pos + 1 : line_end])
    pos = line_end + 2
    for _ in range(count):
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(buf[pos + 1 : line_end])
        pos = line_end + 2 + size + 2
        if pos > len(buf):
            return None
    return pos


class CountingProxy:
    """A loopback TCP proxy to ``upstream`` that counts what passes through it.

    ``start()`` returns the port it listens on (or ``with`` the proxy: :attr:`port`);
    :attr:`counts`, :attr:`client` and :attr:`server` are what it has seen since the last
    :meth:`reset`.
    """

    def __init__(self, protocol: Protocol, upstream_host: str, upstream_port: int) -> None:
        self.protocol = protocol
        self.upstream = (upstream_host, upstream_port)
        self.counts = Counts()
        self.port = 0
        # PostgreSQL: every message by its type, the client's (P B D E S Q H X ...) and the
        # server's (1 2 T D C Z E ...).
        self.client: Counter[str] = Counter()
        self.server: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> int:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)
        return self.port

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def waits(self) -> int:
        """PostgreSQL: times the client waited for the server, each Sync, Flush or simple
        Query. A ``Flush`` counts: a client that sends Parse/Describe/Flush waits for the
        description before it binds (asyncpg's unnamed statements), without any
        ReadyForQuery coming back, so this can exceed :attr:`counts`' round trips."""
        return self.client["S"] + self.client["H"] + self.client["Q"]

    def reset(self) -> None:
        self.counts = Counts()
        self.client.clear()
        self.server.clear()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            startup = b""
            if self.protocol == "postgres":
                startup = await read_startup(client_r, client_w)
            server_r, server_w = await asyncio.open_connection(*self.upstream)
            try:
                if self.protocol == "postgres":
                    up, down = self._postgres_counters()
                elif self.protocol == "mysql":
                    up, down = self._mysql_counters()
                else:
                    up, down = self._redis_counters()
                await asyncio.gather(
                    self._pipe(client_r, server_w, up, startup),
                    self._pipe(server_r, client_w, down, b""),
                )
            finally:
                server_w.close()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a client or the server hung up, or stop() is closing everything
        finally:
            client_w.close()
            self._tasks.discard(task)

    def _postgres_counters(self) -> tuple[Listener, Listener]:
        client = _PgScanner(typed=False)
        server = _PgScanner(typed=True)

        def up(data: bytes) -> None:
            for kind in client.feed(data):
                self.client[chr(kind)] += 1
                if kind in (0x51, 0x45):  # 'Q' simple query, 'E' execute
                    self.counts.statements += 1

        def down(data: bytes) -> None:
            for kind in server.feed(data):
                self.server[chr(kind)] += 1
                if kind == 0x5A:  # 'Z' ReadyForQuery: one round trip done
                    self.counts.round_trips += 1

        return up, down

    def _mysql_counters(self) -> tuple[Listener, Listener]:
        client = _MysqlScanner()

        def up(data: bytes) -> None:
            commands = client.feed(data).count(0)  # the handshake's replies are 1 and up
            self.counts.statements += commands
            self.counts.round_trips += commands

        def down(data: bytes) -> None:
            return None

        return up, down

    def _redis_counters(self) -> tuple[Listener, Listener]:
        scanner = _RespScanner()

        def up(data: bytes) -> None:
            commands = scanner.feed(data)
            self.counts.statements += commands
            self.counts.round_trips += commands

        def down(data: bytes) -> None:
            return None

        return up, down

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Listener, prefix: bytes
    ) -> None:
        if prefix:
            count(prefix)
            writer.write(prefix)
        try:
            while data := await reader.read(65536):
                count(data)
                writer.write(data)
                await writer.drain()
        finally:
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()


async def read_startup(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> bytes:
    """Answer SSL and GSS encryption requests with "no" ourselves, so the stream stays
    readable (loopback, trust auth); return the startup message that follows, whole,
    to forward in one write.

    Whole, because PgBouncer before 1.23 closes a client whose startup message does not
    arrive in one read ("client sent partial pkt in startup phase"): forwarding its first
    8 bytes on their own failed a CI run once the machine was loaded enough for
    PgBouncer to read between the two writes."""
    while True:
        head = await client_r.readexactly(8)
        length, code = struct.unpack("!II", head)
        if code not in (_SSL_REQUEST, _GSSENC_REQUEST) or length != 8:
            return head + await client_r.readexactly(max(length - 8, 0))
        client_w.write(b"N")
        await client_w.drain()


class StatementCounter:
    """Statements SQLite ran on connections made by :class:`TracedConnection`."""

    count = 0
    lock = threading.Lock()

    @classmethod
    def seen(cls, statement: str) -> None:
        with cls.lock:
            cls.count += 1


class TracedConnection(sqlite3.Connection):
    """A sqlite3 connection that reports every statement it runs to StatementCounter.

    Pass it as ``factory`` to ``aiosqlite.connect`` (or in SQLAlchemy's ``connect_args``):
    the trace callback is set on aiosqlite's own thread, where the connection lives.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.set_trace_callback(StatementCounter.seen)
