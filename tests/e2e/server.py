"""A real server process for end-to-end tests: started on a free port, its log kept; and a
fresh PostgreSQL database for it.

The test waits for uvicorn's "Application startup complete" line, not for time to pass;
on leaving the block the server is stopped (SIGTERM, uvicorn's graceful shutdown) and its
whole log is in :attr:`Server.log`, so a line logged after the last response is read too.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.sql_backends import require_postgres, unique_name
from tests.support.servers import free_port

STARTUP_TIMEOUT = 60.0  # seconds: a bound on a hung start, not a wait for time to pass
REPOSITORY = Path(__file__).resolve().parent.parent.parent


def sqlite_rows(database: Path, query: str = "SELECT count(*) FROM typed_sessions") -> int:
    """The first column of the query's first row, on a connection closed afterwards (sqlite3's
    own ``with`` ends a transaction but leaves the connection open, a ResourceWarning on 3.13)."""
    with closing(sqlite3.connect(database)) as db:
        value: int = db.execute(query).fetchone()[0]
        return value


@dataclass
class Server:
    url: str
    log: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.log)


@contextmanager
def serve(
    command: Callable[[int], list[str]], *, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Run ``command(port)`` (a server that logs to stderr) until the block ends."""
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), **(env or {})}
    process = subprocess.Popen(
        command(port), cwd=cwd, env=environment, stderr=subprocess.PIPE, text=True
    )
    server = Server(f"http://127.0.0.1:{port}")
    watchdog = threading.Timer(STARTUP_TIMEOUT, process.kill)
    watchdog.start()
    assert process.stderr is not None
    for line in process.stderr:  # uvicorn says when it listens; no polling, no sleeping
        server.log.append(line)
        if "Application startup complete" in line:
            break
    watchdog.cancel()
    if process.poll() is not None:
        pytest.fail("the server did not start:\n" + server.text)
    drain = threading.Thread(target=lambda: server.log.extend(process.stderr or ()), daemon=True)
    drain.start()
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        drain.join(timeout=30)
        process.stderr.close()


def uvicorn(*arguments: str) -> Callable[[int], list[str]]:
    """``python -m uvicorn ARGUMENTS --port PORT`` with this interpreter."""
    return lambda port: [sys.executable, "-m", "uvicorn", *arguments, "--port", str(port)]


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server, dropped afterwards (after the
    block has stopped whatever connected to it)."""
    server = make_url(require_postgres())
    admin = server.set(database="postgres")
    name = unique_name("fresh")
    anyio.run(_autocommit, admin, f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        anyio.run(_autocommit, admin, f'DROP DATABASE IF EXISTS "{name}"')


async def _autocommit(url: URL, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE need that)."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()
