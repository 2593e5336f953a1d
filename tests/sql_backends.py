"""SQL backends for tests: a fresh SQLite file, or a fresh table on the real PostgreSQL server.

Each PostgreSQL backend gets its own randomly named table (dropped afterwards), so test
runs in parallel never collide. Without a server, PostgreSQL tests skip with the reason,
unless ``TYPED_SESSION_SQL_REQUIRE_POSTGRES=1`` (CI), where they fail instead.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from typed_session_sql.backend import Backend
from typed_session_sql.backends.sql import SqlBackend

POSTGRES_URL = os.environ.get(
    "TYPED_SESSION_SQL_TEST_POSTGRES_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("TYPED_SESSION_SQL_REQUIRE_POSTGRES") == "1"


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def require_postgres() -> str:
    """The test server's URL; skips (or fails, in CI) the calling test if nothing answers."""
    url = make_url(POSTGRES_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=2):
            pass
    except OSError as error:
        reason = f"PostgreSQL at {url.host}:{url.port} does not answer ({error})"
        if REQUIRE_POSTGRES:
            pytest.fail(reason + " and TYPED_SESSION_SQL_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    return POSTGRES_URL


@asynccontextmanager
async def sqlite_sql_backend() -> AsyncIterator[SqlBackend]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "sessions.db"
        backend = SqlBackend.from_url(f"sqlite+aiosqlite:///{path}")
        try:
            await backend.create_schema()
            yield backend
        finally:
            await backend.dispose()


@asynccontextmanager
async def postgres_sql_backend() -> AsyncIterator[SqlBackend]:
    backend = SqlBackend.from_url(require_postgres(), table_name=unique_name("sessions"))
    try:
        await backend.create_schema()
        yield backend
    finally:
        async with backend.engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
        await backend.dispose()


@asynccontextmanager
async def sqlite_backend() -> AsyncIterator[Backend]:
    async with sqlite_sql_backend() as backend:
        yield backend


@asynccontextmanager
async def postgres_backend() -> AsyncIterator[Backend]:
    async with postgres_sql_backend() as backend:
        yield backend


BackendFactory = Callable[[], AbstractAsyncContextManager[Backend]]

# The SQL entries of the contract suite's backends (tests/backends.py), by name.
SQL_BACKEND_FACTORIES: dict[str, BackendFactory] = {
    "sqlite": sqlite_backend,
    "postgres": postgres_backend,
}
