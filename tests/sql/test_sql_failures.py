"""A database that is down, drops connections, fails a serialization check, or is locked."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.clock import FakeClock
from tests.models import Cart
from tests.sql_backends import SqlTarget, aiosqlite_threads_joined, require_postgres, unique_name
from typed_session_sql import (
    CookieCommand,
    Session,
    SessionStore,
    SetCookie,
    SqlBackend,
    StoreUnavailableError,
    ids,
)
from typed_session_sql.backends.sql import create_engine

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "fault",
    ["refused", "unknown-role", "unknown-database"],
)
async def test_postgres_unreachable_raises_store_unavailable_with_cause(
    clock: FakeClock, fault: str
) -> None:
    server = make_url(require_postgres())
    url = {
        # Port 1 on localhost: nothing listens, the connection is refused at once.
        "refused": server.set(port=1),
        # The server answers, but refuses the login: the driver's own error, not an OSError.
        "unknown-role": server.set(username=unique_name("nobody")),
        "unknown-database": server.set(database=unique_name("nodb")),
    }[fault]
    async with SqlBackend.from_url(url.render_as_string(hide_password=False)) as backend:
        store = SessionStore(Cart, backend, clock=clock)
        with pytest.raises(StoreUnavailableError) as caught:
            await store.load(ids.new_cookie_value())
        assert caught.value.__cause__ is not None
        with pytest.raises(StoreUnavailableError) as caught:
            await store.save(store.new(Cart(items=[1])))
        assert caught.value.__cause__ is not None


async def test_sqlite_unopenable_raises_store_unavailable(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'sessions.db'}"
    async with aiosqlite_threads_joined(), SqlBackend.from_url(url) as backend:
        store = SessionStore(Cart, backend, clock=clock)
        with pytest.raises(StoreUnavailableError) as caught:
            await store.load(ids.new_cookie_value())
        assert caught.value.__cause__ is not None


@pytest.fixture
async def pg_named(sql_target: SqlTarget) -> AsyncIterator[tuple[SqlBackend, str]]:
    """A PostgreSQL backend whose connections carry a unique application_name."""
    name = unique_name("app")
    async with sql_target.open(connect_args={"server_settings": {"application_name": name}}) as b:
        yield b, name


async def admin(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


async def blocked_on_a_lock(url: str, application_name: str) -> None:
    """Return once a statement of ``application_name`` waits for a lock (the server's word,
    not a timer: each poll is a round trip)."""
    while not await admin(
        url,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = :n AND wait_event_type = 'Lock'",
        n=application_name,
    ):
        pass


async def changed_session(store: SessionStore[Cart]) -> tuple[str, Session[Cart]]:
    """A stored session's cookie, and that session loaded and changed (not yet saved)."""
    saved = await store.save(store.new(Cart(items=[1])))
    assert isinstance(saved, SetCookie)
    session = await store.load(saved.value)
    assert session is not None
    session.data.items.append(2)
    return saved.value, session


async def saves_go_on(store: SessionStore[Cart], cookie: str) -> None:
    """Load, change and save the session a few times over: each save lands."""
    for n in range(3, 6):
        current = await store.load(cookie)
        assert current is not None
        current.data.items.append(n)
        await store.save(current)
    final = await store.load(cookie)
    assert final is not None
    assert final.data.items[-3:] == [3, 4, 5]


@asynccontextmanager
async def save_behind_a_row_lock(
    url: str, application_name: str, store: SessionStore[Cart], session: Session[Cart]
) -> AsyncIterator[tuple[AsyncConnection, asyncio.Task[CookieCommand]]]:
    """Lock the session's row in another transaction (changing no version), start saving
    ``session``, and yield once that save waits for the lock."""
    assert isinstance(store.backend, SqlBackend)
    blocker = create_engine(url, isolation_level="READ COMMITTED")
    try:
        async with blocker.connect() as conn:
            await conn.execute(text(f'UPDATE "{store.backend.table.name}" SET data = data'))
            save = asyncio.create_task(store.save(session))
            await blocked_on_a_lock(url, application_name)
            yield conn, save
    finally:
        await blocker.dispose()


@pytest.mark.sql(database="postgres")
async def test_dropped_connections_are_replaced_unseen(
    pg_named: tuple[SqlBackend, str], clock: FakeClock
) -> None:
    backend, name = pg_named
    store = SessionStore(Cart, backend, clock=clock)
    saved = await store.save(store.new(Cart(items=[1])))
    assert isinstance(saved, SetCookie)
    # Fill the pool with several connections, then have the server kill every one of them.
    await asyncio.gather(*(store.load(saved.value) for _ in range(5)))
    killed = await admin(
        require_postgres(),
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
        " WHERE application_name = :name",
        name=name,
    )
    assert len(killed) >= 2
    assert all(row[0] for row in killed)

    for n in range(2, 6):
        session = await store.load(saved.value)
        assert session is not None
        session.data.items.append(n)
        await store.save(session)
    final = await store.load(saved.value)
    assert final is not None
    assert final.data.items == [1, 2, 3, 4, 5]


@pytest.mark.sql(database="postgres")
async def test_serialization_failure_is_retried(
    pg_named: tuple[SqlBackend, str], sql_target: SqlTarget, clock: FakeClock
) -> None:
    """Under REPEATABLE READ a single UPDATE of a row another transaction changed meanwhile
    fails with SQLSTATE 40001, as on CockroachDB; the backend runs it again."""
    backend, name = pg_named
    url = require_postgres()
    settings = {
        "application_name": name + "_rr",
        "default_transaction_isolation": "repeatable read",
    }
    async with sql_target.open(
        url,
        schema=False,
        table_name=backend.table.name,
        connect_args={"server_settings": settings},
    ) as rr_backend:
        store = SessionStore(Cart, rr_backend, clock=clock)
        cookie, session = await changed_session(store)
        async with save_behind_a_row_lock(url, name + "_rr", store, session) as (conn, save):
            await conn.commit()  # the waiting UPDATE now fails with 40001: it is retried
        await save
        final = await store.load(cookie)
        assert final is not None
        assert final.data.items == [1, 2]


@pytest.mark.sql(database="postgres")
async def test_a_cancelled_save_leaves_a_working_backend(
    pg_named: tuple[SqlBackend, str], clock: FakeClock
) -> None:
    backend, name = pg_named
    url = require_postgres()
    store = SessionStore(Cart, backend, clock=clock)
    cookie, session = await changed_session(store)
    async with save_behind_a_row_lock(url, name, store, session) as (conn, save):
        save.cancel()
        with pytest.raises(asyncio.CancelledError):
            await save
        await conn.rollback()
    # The server notices the closed connection only once its UPDATE has the lock: that
    # UPDATE may still land. Wait until it has ended, one way or the other.
    while await admin(
        url,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = :n AND state = 'active'"
        " AND query LIKE 'UPDATE%'",
        n=name,
    ):
        pass
    # The connection the cancelled statement used is gone, not handed out again mid-query.
    await saves_go_on(store, cookie)


@pytest.fixture
async def sqlite_backend(sql_target: SqlTarget, tmp_path: Path) -> AsyncIterator[SqlBackend]:
    """A SQLite backend on a file of the test's own (``tmp_path``)."""
    async with sql_target.open(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}") as backend:
        yield backend


def short_busy_timeout(backend: SqlBackend) -> None:
    """New connections wait 50 ms, not 30 s, for another writer's lock."""

    def pragma(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 50")
        cursor.close()

    event.listen(backend.engine.sync_engine, "connect", pragma)


@contextmanager
def write_locked(backend: SqlBackend) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock."""
    database = backend.engine.url.database
    assert database is not None
    blocker = sqlite3.connect(database, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        yield blocker
    finally:
        blocker.close()


@pytest.mark.sql(database="sqlite")
async def test_sqlite_missing_table_raises_store_unavailable_with_cause(
    sqlite_backend: SqlBackend, clock: FakeClock
) -> None:
    store = SessionStore(Cart, sqlite_backend, clock=clock)
    saved = await store.save(store.new(Cart(items=[1])))
    assert isinstance(saved, SetCookie)
    async with sqlite_backend.engine.connect() as conn:
        await conn.execute(text(f"ALTER TABLE {sqlite_backend.table.name} RENAME TO gone"))
    for attempt in (store.load(saved.value), store.save(store.new(Cart()))):
        with pytest.raises(StoreUnavailableError) as caught:
            await attempt
        assert isinstance(caught.value.__cause__, Exception)
        assert "no such table" in str(caught.value.__cause__)


@pytest.mark.sql(database="sqlite")
async def test_sqlite_locked_database_raises_store_unavailable(
    sqlite_backend: SqlBackend, clock: FakeClock
) -> None:
    short_busy_timeout(sqlite_backend)
    await sqlite_backend.engine.dispose()
    store = SessionStore(Cart, sqlite_backend, clock=clock)
    with write_locked(sqlite_backend):
        with pytest.raises(StoreUnavailableError) as caught:
            await store.save(store.new(Cart(items=[1])))
        assert "database is locked" in str(caught.value.__cause__)
    assert isinstance(await store.save(store.new(Cart(items=[1]))), SetCookie)


@pytest.mark.sql(database="sqlite")
async def test_sqlite_cancelled_save_leaves_a_working_backend(
    sqlite_backend: SqlBackend, clock: FakeClock
) -> None:
    store = SessionStore(Cart, sqlite_backend, clock=clock)
    cookie, session = await changed_session(store)
    # sqlite3 reports each statement as it starts running on aiosqlite's thread: the UPDATE
    # has started (and then waits on the lock) when the trace shows it, not after a delay.
    loop = asyncio.get_running_loop()
    update_started = asyncio.Event()

    def traced(query: str) -> None:
        if query.lstrip().upper().startswith("UPDATE"):
            loop.call_soon_threadsafe(update_started.set)

    def hook(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.driver_connection._conn.set_trace_callback(traced)

    await sqlite_backend.dispose()  # new connections, traced as they connect
    event.listen(sqlite_backend.engine.sync_engine, "connect", hook)
    with write_locked(sqlite_backend) as blocker:
        save = asyncio.create_task(store.save(session))
        async with asyncio.timeout(10):
            await update_started.wait()
        save.cancel()
        # SQLAlchemy's path closes the connection gracefully, after the statement: free the
        # lock so the statement can end.
        blocker.execute("COMMIT")
        with pytest.raises(asyncio.CancelledError):
            await save
        # sqlite3 cannot stop a statement: once the lock is free, the cancelled UPDATE lands
        # (the database is what changes, so poll it).
        async with asyncio.timeout(10):
            while True:
                current = await store.load(cookie)
                if current is not None and current.data.items == [1, 2]:
                    break
                await asyncio.sleep(0.01)
    await saves_go_on(store, cookie)


@pytest.mark.sql(database="sqlite", execution="driver")  # only it holds connections
async def test_sqlite_closed_held_connection_is_replaced_unseen(
    sqlite_backend: SqlBackend, clock: FakeClock
) -> None:
    drivers: list[Any] = []
    await sqlite_backend.engine.dispose()  # so every connection is made after this
    event.listen(
        sqlite_backend.engine.sync_engine,
        "connect",
        lambda dbapi_connection, record: drivers.append(dbapi_connection.driver_connection),
    )
    store = SessionStore(Cart, sqlite_backend, clock=clock)
    saved = await store.save(store.new(Cart(items=[1])))
    assert isinstance(saved, SetCookie)
    assert drivers  # the backend's held connection
    for driver in drivers:
        await driver.close()
    assert await store.load(saved.value) is not None
    assert isinstance(await store.save(store.new(Cart())), SetCookie)  # a write too: unsent


@pytest.mark.sql(database="postgres", execution="driver")
async def test_a_statement_waits_for_a_held_connection_up_to_the_pool_timeout(
    sql_target: SqlTarget, clock: FakeClock
) -> None:
    name = unique_name("app")
    async with sql_target.open(
        pool_size=1,
        pool_timeout=0.2,
        connect_args={"server_settings": {"application_name": name}},
    ) as backend:
        assert "held_connections=1" in repr(backend)
        store = SessionStore(Cart, backend, clock=clock)
        cookie, session = await changed_session(store)
        async with save_behind_a_row_lock(require_postgres(), name, store, session) as (
            conn,
            save,
        ):
            # The one held connection is busy with the blocked save: a load waits for it,
            # then gives up.
            with pytest.raises(StoreUnavailableError, match="no held connection was free"):
                await store.load(cookie)
            await conn.rollback()
            await save
        loaded = await store.load(cookie)  # and the backend goes on
        assert loaded is not None
        assert loaded.data.items == [1, 2]
