"""SQL backends for tests: every database x executor, each on a fresh table.

A :class:`SqlTarget` is one database (a fresh SQLite file, or a randomly named table on the
real PostgreSQL or MariaDB server, so parallel runs never collide) run by one executor (the
driver's, or SQLAlchemy's). ``SQL_TARGETS`` lists all of them; the contract suite gets one backend
factory per target (``SQL_BACKEND_FACTORIES``) and the SQL test modules the ``sql_target``
and ``sql_backend`` fixtures (tests/conftest.py), parametrised with the same ids.

Without a server, PostgreSQL tests skip with the reason, unless
``TYPED_SESSION_SQL_REQUIRE_POSTGRES=1`` (CI), where they fail instead; MariaDB tests the
same with ``TYPED_SESSION_SQL_REQUIRE_MARIADB=1`` (tests/mariadb/server.py).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.mariadb.server import require_mariadb
from tests.selection import unavailable
from tests.support.names import unique_name as unique_name  # the tests import it from here
from typed_session_sql.backend import Backend
from typed_session_sql.backends.sql import SqlBackend, create_engine
from typed_session_sql.backends.sql.driver_executor import statement_logger
from typed_session_sql.backends.sql.engine import _UNNAMED_STATEMENTS, ASYNCMY_STATEMENT_CACHE
from typed_session_sql.urls import async_url

POSTGRES_URL = os.environ.get(
    "TYPED_SESSION_SQL_TEST_POSTGRES_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"
)

Database = Literal["sqlite", "postgres", "mariadb"]
Execution = Literal["driver", "sqlalchemy", "auto"]
Made = Literal["library", "app", "app-autocommit", "app-nullpool"]
"""How the engine was made: by the library (``from_url``), or by the application with
``create_async_engine`` (its defaults, ``isolation_level="AUTOCOMMIT"``, a ``NullPool``)."""


def require_postgres() -> str:
    """The test server's URL; skips (or fails, in CI) the calling test if nothing answers."""
    url = make_url(POSTGRES_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=2):
            pass
    except OSError as error:
        unavailable(f"PostgreSQL at {url.host}:{url.port} does not answer ({error})", "POSTGRES")
    return POSTGRES_URL


async def on_the_server(sql: str, **params: Any) -> list[Any]:
    """Run ``sql`` on the test server as its administrator (a connection of its own, in
    autocommit); the rows it returns, if any."""
    engine = create_engine(require_postgres())
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(sql), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class SqlTarget:
    """One database run by one executor."""

    database: Database
    execution: Execution
    made: Made = "library"
    prepared: bool | None = None
    """Whether the driver prepares (names) statements: None as the engine's maker leaves it
    (the library: yes; an app's engine: asyncmy no, asyncpg and psycopg yes)."""
    query: str = ""
    """The driver's URL options (``charset=gbk``), for both ways of making."""
    connect_args: tuple[tuple[str, Any], ...] = ()
    """The driver's connect arguments (``init_command``), for both ways of making."""

    @property
    def server(self) -> bool:
        """Whether the database is a shared server (tables of a random name, dropped)."""
        return self.database != "sqlite"

    @property
    def id(self) -> str:
        made = "" if self.made == "library" else f"-{self.made}"
        if self.prepared is not None:
            made += "-prepared" if self.prepared else "-unprepared"
        query = f"-{self.query}" if self.query else ""
        args = "".join(f"-{value}" for _, value in self.connect_args)
        return f"{self.database}-{self.execution}{made}{query}{args}"

    @asynccontextmanager
    async def url(self) -> AsyncIterator[str]:
        """A URL for this database: a file in a fresh directory, or the test server."""
        if self.database == "postgres":
            yield require_postgres()
            return
        if self.database == "mariadb":
            yield require_mariadb()
            return
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite+aiosqlite:///{Path(directory) / 'sessions.db'}"

    @asynccontextmanager
    async def open(
        self, url: str | None = None, *, schema: bool = True, **options: Any
    ) -> AsyncIterator[SqlBackend]:
        """A backend with an engine of its own (``from_url``) on a fresh table (created
        unless ``schema`` is False; dropped afterwards on PostgreSQL); ``options`` go to
        ``from_url``. With ``url``, that database instead of a fresh one.

        SQLite's table has the default name (the file is fresh); the servers' a random one.
        """
        async with self.url() as fresh, aiosqlite_threads_joined():
            if self.server:
                options.setdefault("table_name", unique_name("sessions"))
            backend = self._make(url or fresh, options)
            try:
                if schema:
                    await backend.create_schema()
                yield backend
            finally:
                if schema and self.server:
                    async with backend.engine.begin() as conn:
                        await conn.run_sync(backend.metadata.drop_all)
                await backend.dispose()
                await backend.engine.dispose()  # the app's engine; again is harmless

    def _make(self, url: str, options: dict[str, Any]) -> SqlBackend:
        query = self.query
        connect_args = {**dict(self.connect_args), **options.pop("connect_args", {})}
        if self.made == "library":
            if self.prepared is False:
                query = "&".join(filter(None, [query, "prepared_statements=false"]))
            if connect_args:
                options["connect_args"] = connect_args
            return SqlBackend.from_url(_with_query(url, query), execution=self.execution, **options)
        url = async_url(url)  # as an application would write it
        driver = make_url(url).get_driver_name()
        if self.prepared is False:
            connect_args = {**_UNNAMED_STATEMENTS.get(driver, {}), **connect_args}
        elif self.prepared and driver == "asyncmy":
            connect_args.setdefault("stmt_cache_size", ASYNCMY_STATEMENT_CACHE)
        engine_options: dict[str, Any] = {"connect_args": connect_args}
        if self.made == "app-autocommit":
            engine_options["isolation_level"] = "AUTOCOMMIT"
        elif self.made == "app-nullpool":
            engine_options["poolclass"] = NullPool
        engine = create_async_engine(_with_query(url, query), **engine_options)
        return SqlBackend(engine, execution=self.execution, **options)


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


# Python names a thread after its target: aiosqlite's are "Thread-N (_connection_worker_thread)".
_AIOSQLITE_WORKER = "(_connection_worker_thread)"
_JOIN_BOUND = 10.0  # seconds: a bound on a thread that never ends, not a wait for time


@asynccontextmanager
async def aiosqlite_threads_joined() -> AsyncIterator[None]:
    """On leaving, wait for the aiosqlite worker threads started inside to end, while the
    event loop still runs.

    aiosqlite (0.22) stops the thread of a connection that failed to open by queueing a stop
    it never awaits, and so does SQLAlchemy's terminate. Each test has an event loop of its
    own: if it closes before the thread runs that stop, the thread dies on "Event loop is
    closed" in whatever test runs next, which then fails for it. The thread only hands a
    result to the loop and ends, so joining it here does not block on the loop.
    """
    before = set(threading.enumerate())
    try:
        yield
    finally:
        for thread in set(threading.enumerate()) - before:
            if thread.name.endswith(_AIOSQLITE_WORKER):
                thread.join(timeout=_JOIN_BOUND)


SQL_TARGETS = [
    SqlTarget("sqlite", "driver"),
    SqlTarget("sqlite", "sqlalchemy"),
    SqlTarget("postgres", "driver"),
    SqlTarget("postgres", "sqlalchemy"),
    SqlTarget("mariadb", "driver"),
    SqlTarget("mariadb", "sqlalchemy"),
]


def sqlite_sql_backend() -> AbstractAsyncContextManager[SqlBackend]:
    """A SQLite backend as an application gets it by default (``execution="auto"``)."""
    return SqlTarget("sqlite", "driver").open()


def postgres_sql_backend() -> AbstractAsyncContextManager[SqlBackend]:
    """A PostgreSQL backend as an application gets it by default."""
    return SqlTarget("postgres", "driver").open()


BackendFactory = Callable[[], AbstractAsyncContextManager[Backend]]


def _factory(target: SqlTarget) -> BackendFactory:
    @asynccontextmanager
    async def opened() -> AsyncIterator[Backend]:
        async with target.open() as backend:
            yield backend

    return opened


# Engines the application made, the way the issue-16 holes came in: the whole contract
# suite runs on them where it costs least (SQLite); tests/contract/test_contract_engines.py runs a
# slice of it on the servers, for every way of making an engine and driver setting.
APP_ENGINE_TARGETS = [
    SqlTarget("sqlite", "auto", "app"),
    SqlTarget("sqlite", "auto", "app-autocommit"),
]

# The SQL entries of the contract suite's backends (tests/backends.py), by name.
SQL_BACKEND_FACTORIES: dict[str, BackendFactory] = {
    target.id: _factory(target) for target in SQL_TARGETS + APP_ENGINE_TARGETS
}


def _psycopg_factory(execution: Execution) -> BackendFactory:
    @asynccontextmanager
    async def opened() -> AsyncIterator[Backend]:
        url = require_postgres().replace("+asyncpg://", "+psycopg://", 1)
        async with SqlTarget("postgres", execution).open(url) as backend:
            yield backend

    return opened


# psycopg 3 (the `psycopg` extra) on both executors: the contract suite runs on it too.
for _execution in ("driver", "sqlalchemy"):
    SQL_BACKEND_FACTORIES[f"postgres-psycopg-{_execution}"] = _psycopg_factory(_execution)


@contextmanager
def statements_seen(backend: SqlBackend) -> Iterator[list[str]]:
    """The first word of every statement the backend runs meanwhile, whichever executor
    runs it: SQLAlchemy's cursor events, or the driver executor's statement logger."""
    seen: list[str] = []

    def cursor(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage().split(None, 1)[0].upper())

    handler = Handler(logging.DEBUG)
    previous = statement_logger.level
    statement_logger.setLevel(logging.DEBUG)
    statement_logger.addHandler(handler)
    event.listen(backend.engine.sync_engine, "before_cursor_execute", cursor)
    try:
        yield seen
    finally:
        event.remove(backend.engine.sync_engine, "before_cursor_execute", cursor)
        statement_logger.removeHandler(handler)
        statement_logger.setLevel(previous)
