"""The shared MariaDB server for tests: its URL, a skip-or-fail check, scratch tables.

Tests on it use randomly named tables, dropped afterwards, so runs in parallel (other
engineers, other worktrees) never collide; nothing here drops or kills what it did not
create. Without a server (or without the asyncmy driver) MariaDB tests skip with the
reason, unless ``TYPED_SESSION_SQL_REQUIRE_MARIADB=1`` (CI), where they fail instead, as
``require_postgres`` does in ``tests/sql_backends.py``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from tests.selection import unavailable
from tests.support.names import unique_name

if TYPE_CHECKING:
    from asyncmy.connection import Connection

MARIADB_URL = os.environ.get(
    "TYPED_SESSION_SQL_TEST_MARIADB_URL", "mysql+asyncmy://root@127.0.0.1:3306/test"
)


def require_mariadb(url: str = MARIADB_URL) -> str:
    """``url``; skips (or fails, in CI) the calling test if nothing answers there or the
    asyncmy driver is not installed."""
    try:
        import asyncmy  # noqa: F401
    except ImportError:
        unavailable("the asyncmy driver is not installed", "MARIADB")
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 3306), 2):
            pass
    except OSError as error:
        unavailable(f"MariaDB at {parsed.host}:{parsed.port} does not answer ({error})", "MARIADB")
    return url


@asynccontextmanager
async def connect(url: str = MARIADB_URL, **options: object) -> AsyncIterator[Connection]:
    """A raw asyncmy connection (autocommit) to the server a SQLAlchemy URL names."""
    import asyncmy

    parsed = make_url(url)
    conn = await asyncmy.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        database=parsed.database,
        autocommit=True,
        **options,
    )
    try:
        yield conn
    finally:
        await conn.ensure_closed()


@asynccontextmanager
async def scratch_table(url: str = MARIADB_URL, prefix: str = "sessions") -> AsyncIterator[str]:
    """A fresh table name on the server at ``url``; whatever table of that name the test
    creates is dropped afterwards (and only that one)."""
    name = unique_name(prefix)
    try:
        yield name
    finally:
        async with connect(url) as conn, conn.cursor() as cursor:
            await cursor.execute(f"DROP TABLE IF EXISTS `{name}`")
