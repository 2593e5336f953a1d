"""A PostgreSQL wire-protocol counter: a loopback TCP relay that counts messages.

It sits between a client and a server (PostgreSQL or PgBouncer) and counts the messages
each side sends, by type. A *round trip* is one ``ReadyForQuery`` (``Z``) from the server:
the client sent a ``Sync`` or a simple ``Query`` and waits for it. This is how the tests
tell that an operation costs the same number of round trips through PgBouncer as direct,
whatever the driver does underneath.

The relay refuses TLS (answers ``N`` to an SSLRequest itself), so every byte it relays is
readable. It runs its own event loop in a thread, so clients in other loops, threads or
processes can use it.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


class WireCounter:
    """Message counts by direction and type, and the relay's port."""

    def __init__(self) -> None:
        self.port = 0
        self.client: Counter[str] = Counter()  # frontend messages: P B D E S Q C X ...
        self.server: Counter[str] = Counter()  # backend messages: 1 2 T D C Z E ...
        self.connections = 0

    @property
    def round_trips(self) -> int:
        """Times the client waited for the server: each Sync, Flush or simple Query.

        A ``Flush`` counts: a client that sends Parse/Describe/Flush waits for the
        description before it binds (asyncpg's unnamed statements), without any
        ``ReadyForQuery`` coming back.
        """
        return self.client["S"] + self.client["H"] + self.client["Q"]

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        return Counter(self.client), Counter(self.server)

    def reset(self) -> None:
        self.client.clear()
        self.server.clear()


async def _relay_typed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: Counter[str]
) -> None:
    while True:
        head = await reader.readexactly(5)
        kind = chr(head[0])
        (length,) = struct.unpack("!i", head[1:])
        body = await reader.readexactly(length - 4)
        counts[kind] += 1
        writer.write(head + body)
        await writer.drain()


async def _handle(
    counter: WireCounter,
    upstream_port: int,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
) -> None:
    server_writer: asyncio.StreamWriter | None = None
    try:
        while True:  # the untyped start: SSL/GSS requests, then the startup message
            head = await client_reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            rest = await client_reader.readexactly(length - 8)
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                client_writer.write(b"N")
                await client_writer.drain()
                continue
            break
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        server_writer.write(head + rest)
        await server_writer.drain()
        if code == _CANCEL_REQUEST:
            return
        counter.connections += 1
        up = asyncio.ensure_future(_relay_typed(client_reader, server_writer, counter.client))
        down = asyncio.ensure_future(_relay_typed(server_reader, client_writer, counter.server))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    finally:
        for writer in (client_writer, server_writer):
            if writer is not None:
                writer.close()
                with suppress(BaseException):
                    await writer.wait_closed()


@contextmanager
def wire_counter(upstream_port: int) -> Iterator[WireCounter]:
    """A relay on a free loopback port in front of 127.0.0.1:``upstream_port``."""
    counter = WireCounter()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stopping: asyncio.Future[None] = loop.create_future()

    handlers: set[asyncio.Task[None]] = set()

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(_handle(counter, upstream_port, reader, writer))
        handlers.add(task)
        task.add_done_callback(handlers.discard)

    async def serve() -> None:
        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        counter.port = server.sockets[0].getsockname()[1]
        ready.set()
        await stopping
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise TimeoutError("the wire counter did not start")
    try:
        yield counter
    finally:
        loop.call_soon_threadsafe(stopping.set_result, None)
        thread.join(10)
        if not thread.is_alive():
            loop.close()
