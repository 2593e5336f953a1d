"""A database that is down, drops connections or fails a serialization check."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.clock import FakeClock
from tests.sql_backends import require_postgres, unique_name
from typed_session_sql import (
    SaveResult,
    Session,
    SessionStore,
    SetCookie,
    SqlBackend,
    StoreUnavailableError,
    ids,
)
from typed_session_sql.backends.sql import create_engine

pytestmark = pytest.mark.anyio


@dataclass
class Cart:
    items: list[int] = field(default_factory=list)


async def test_postgres_down_raises_store_unavailable_with_cause(clock: FakeClock) -> None:
    # Port 1 on localhost: nothing listens, the connection is refused at once.
    async with SqlBackend.from_url("postgresql+asyncpg://root@127.0.0.1:1/test") as backend:
        store = SessionStore(Cart, backend, clock=clock)
        with pytest.raises(StoreUnavailableError) as caught:
            await store.load(ids.new_cookie_value())
        assert caught.value.__cause__ is not None
        with pytest.raises(StoreUnavailableError) as caught:
            await store.save(store.new(Cart(items=[1])))
        assert caught.value.__cause__ is not None


async def test_sqlite_unopenable_raises_store_unavailable(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'sessions.db'}"
    async with SqlBackend.from_url(url) as backend:
        store = SessionStore(Cart, backend, clock=clock)
        with pytest.raises(StoreUnavailableError) as caught:
            await store.load(ids.new_cookie_value())
        assert caught.value.__cause__ is not None
        del caught
    # aiosqlite stops the worker thread of a connection that failed to open only when it is
    # collected; collect it while the event loop still runs.
    gc.collect()
    await asyncio.sleep(0)


def observe(engine: AsyncEngine) -> None:
    """A cursor listener: the backend then runs statements through SQLAlchemy."""
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: None)


@pytest.fixture(params=["direct", "sqlalchemy"])
def path(request: pytest.FixtureRequest) -> str:
    """Which way the backend runs its statements on asyncpg (both must recover alike)."""
    return str(request.param)


@pytest.fixture
async def pg_named(path: str) -> AsyncIterator[tuple[SqlBackend, str]]:
    """A PostgreSQL backend whose connections carry a unique application_name."""
    url = require_postgres()
    name = unique_name("app")
    backend = SqlBackend.from_url(
        url,
        table_name=unique_name("sessions"),
        connect_args={"server_settings": {"application_name": name}},
    )
    engine = backend.engine
    if path == "sqlalchemy":
        observe(engine)
    await backend.create_schema()
    try:
        yield backend, name
    finally:
        async with backend.engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
        await backend.dispose()


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


@asynccontextmanager
async def save_behind_a_row_lock(
    url: str, application_name: str, store: SessionStore[Cart], session: Session[Cart]
) -> AsyncIterator[tuple[AsyncConnection, asyncio.Task[SaveResult]]]:
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


async def test_serialization_failure_is_retried(
    pg_named: tuple[SqlBackend, str], path: str, clock: FakeClock
) -> None:
    """Under REPEATABLE READ a single UPDATE of a row another transaction changed meanwhile
    fails with SQLSTATE 40001, as on CockroachDB; the backend runs it again."""
    backend, name = pg_named
    url = require_postgres()
    rr_backend = SqlBackend.from_url(
        url,
        table_name=backend.table.name,
        connect_args={
            "server_settings": {
                "application_name": name + "_rr",
                "default_transaction_isolation": "repeatable read",
            }
        },
    )
    if path == "sqlalchemy":
        observe(rr_backend.engine)
    try:
        store = SessionStore(Cart, rr_backend, clock=clock)
        cookie, session = await changed_session(store)
        async with save_behind_a_row_lock(url, name + "_rr", store, session) as (conn, save):
            await conn.commit()  # the waiting UPDATE now fails with 40001: it is retried
        await save
        final = await store.load(cookie)
        assert final is not None
        assert final.data.items == [1, 2]
    finally:
        await rr_backend.dispose()


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
    # The connection the cancelled statement used is gone, not handed out again mid-query.
    for n in range(3, 6):
        current = await store.load(cookie)
        assert current is not None
        current.data.items.append(n)
        await store.save(current)
    final = await store.load(cookie)
    assert final is not None
    assert final.data.items[-3:] == [3, 4, 5]
