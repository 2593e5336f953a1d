"""psycopg 3's driver executor (``postgresql+psycopg://``): chosen like asyncpg's, and its
connections treated the same way. The contract suite runs on it too (tests/sql_backends.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.models import Cart
from tests.sql_backends import on_the_server, require_postgres, unique_name
from typed_session_sql import SessionStore, SetCookie, SqlBackend
from typed_session_sql.backends.sql import create_engine

pytestmark = pytest.mark.anyio


def psycopg_url() -> str:
    return require_postgres().replace("+asyncpg://", "+psycopg://", 1)


@pytest.fixture
async def named_backend() -> AsyncIterator[tuple[SqlBackend, str]]:
    """A psycopg backend (two held connections) whose connections carry a unique
    application_name."""
    name = unique_name("psycopg")
    backend = SqlBackend.from_url(
        psycopg_url(),
        table_name=unique_name("sessions"),
        pool_size=3,
        max_overflow=0,
        connect_args={"application_name": name},
    )
    try:
        await backend.create_schema()
        yield backend, name
    finally:
        async with backend.engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
        await backend.dispose()


async def test_a_psycopg_url_runs_on_psycopgs_driver_executor() -> None:
    backend = SqlBackend.from_url(psycopg_url())
    try:
        assert "executor=psycopg" in repr(backend)
    finally:
        await backend.dispose()


async def test_an_engine_not_in_autocommit_from_the_start_runs_through_sqlalchemy() -> None:
    """psycopg would begin a transaction before a statement and leave it open."""
    engine = create_async_engine(psycopg_url())
    try:
        assert "executor=sqlalchemy" in repr(SqlBackend(engine))
        with pytest.raises(ValueError, match="not in autocommit"):
            SqlBackend(engine, execution="driver")
        assert "executor=psycopg" in repr(SqlBackend(create_engine(psycopg_url())))
    finally:
        await engine.dispose()


async def test_connections_the_server_closed_while_idle_are_replaced_before_a_write(
    named_backend: tuple[SqlBackend, str],
) -> None:
    """psycopg reads nothing while a connection is idle, so it still says open after the
    server closed it; the backend looks at the socket and replaces it before a write,
    which is never run twice and so would fail."""
    backend, name = named_backend
    store = SessionStore(Cart, backend)
    saved = await store.save(store.new(Cart(items=[1])))
    assert isinstance(saved, SetCookie)
    session = await store.load(saved.value)
    assert session is not None
    killed = await on_the_server(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
        " WHERE application_name = :name",
        name=name,
    )
    assert killed
    assert all(ok for (ok,) in killed)
    session.data.items.append(2)
    await store.save(session)  # the first statement since: a write
    final = await store.load(saved.value)
    assert final is not None
    assert final.data.items == [1, 2]
