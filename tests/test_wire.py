"""The wire-counting proxy of tests/support/wire.py, which tests/production and the
benchmarks put in front of PostgreSQL and PgBouncer."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from tests.support.wire import read_startup

pytestmark = pytest.mark.anyio

SSL_REQUEST = struct.pack("!II", 8, 80877103)
STARTUP = struct.pack("!II", 33, 196608) + b"user\x00root\x00database\x00test\x00\x00"


async def test_the_startup_message_is_forwarded_whole_however_it_arrives() -> None:
    """PgBouncer before 1.23 drops a client whose startup message arrives in two reads
    ("client sent partial pkt in startup phase"): the proxy must not be what splits it."""
    assert len(STARTUP) == 33
    ours, theirs = socket.socketpair()
    with ours, theirs:
        _, writer = await asyncio.open_connection(sock=ours)
        reader = asyncio.StreamReader()
        reader.feed_data(SSL_REQUEST + STARTUP[:8])
        startup = asyncio.ensure_future(read_startup(reader, writer))
        for _ in range(20):  # turns of the event loop, not time
            await asyncio.sleep(0)
        assert not startup.done(), "the head of the startup message went ahead of its body"
        reader.feed_data(STARTUP[8:])
        assert await startup == STARTUP
        assert theirs.recv(1) == b"N"  # the encryption request was refused
        writer.close()
