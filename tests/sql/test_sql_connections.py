"""The connections a backend holds: a fixed number, treated as the pool treats its own.

Time is the test's: the module's clock (``monotonic``) is replaced by one the test moves.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import QueuePool

from tests.sql_backends import SqlTarget, require_postgres, unique_name
from typed_session_sql import SqlBackend
from typed_session_sql.backends.sql import HeldConnections
from typed_session_sql.backends.sql import connections as connections_module

pytestmark = [pytest.mark.anyio, pytest.mark.sql(execution="driver")]

ROW = b"\0" * 32


class Monotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    clock = Monotonic()
    monkeypatch.setattr(connections_module, "monotonic", clock)
    return clock


def connected(backend: SqlBackend) -> list[Any]:
    """The driver connections the engine opens from now on."""
    drivers: list[Any] = []

    def opened(dbapi_connection: Any, record: Any) -> None:
        drivers.append(dbapi_connection.driver_connection)

    event.listen(backend.engine.sync_engine, "connect", opened)
    return drivers


def checked_out(backend: SqlBackend) -> int:
    pool = backend.engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


async def test_a_fixed_number_is_held_and_shown(sql_target: SqlTarget) -> None:
    async with sql_target.open(pool_size=3) as backend:
        assert "held_connections=3" in repr(backend)
        await asyncio.gather(*(backend.read(ROW) for _ in range(16)))
        assert checked_out(backend) == 3  # held: 16 concurrent reads used no more
        await backend.executor.aclose()
        assert checked_out(backend) == 0
    async with sql_target.open(pool_size=3, max_overflow=0) as backend:
        assert "held_connections=2" in repr(backend)  # one left for the purge lock, DDL, ...
    async with sql_target.open(held_connections=0) as backend:
        assert "held_connections=0" in repr(backend)
        await backend.read(ROW)
        assert checked_out(backend) == 0


async def test_pool_recycle_replaces_an_old_held_connection(
    sql_target: SqlTarget, monotonic: Monotonic
) -> None:
    async with sql_target.open(pool_size=1, pool_recycle=60) as backend:
        await backend.engine.dispose()  # every connection from here on is seen
        drivers = connected(backend)
        await backend.read(ROW)
        monotonic.now += 59
        await backend.read(ROW)
        assert len(drivers) == 1
        monotonic.now += 2  # 61 s after it connected
        await backend.read(ROW)
        assert len(drivers) == 2


async def test_a_held_connection_replaced_as_it_is_taken_leaves_its_place_free(
    sql_target: SqlTarget, monotonic: Monotonic
) -> None:
    # A statement takes an idle held connection without awaiting; one found too old on the
    # way is replaced, and the place it was taken for is given back: with one connection
    # held, a place lost would leave the next statement waiting out pool_timeout.
    async with sql_target.open(pool_size=1, pool_recycle=60, pool_timeout=2) as backend:
        assert "held_connections=1" in repr(backend)
        await backend.read(ROW)
        for _ in range(3):
            monotonic.now += 61
            await backend.read(ROW)
        await asyncio.gather(*(backend.read(ROW) for _ in range(4)))


@pytest.mark.sql(database="postgres")
async def test_pool_pre_ping_pings_a_held_connection_before_each_use(
    sql_target: SqlTarget,
) -> None:
    queries: list[str] = []

    def log_queries(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda q: queries.append(q.query))

    async with sql_target.open(pool_size=1, pool_pre_ping=True) as backend:
        await backend.engine.dispose()
        event.listen(backend.engine.sync_engine, "connect", log_queries)
        for _ in range(3):
            await backend.read(ROW)
        await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon
        kinds = ["ping" if q == "SELECT 1" else q.split(None, 1)[0] for q in queries]
        assert kinds == ["SELECT", "ping", "SELECT", "ping", "SELECT"]


@contextmanager
def no_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning raised meanwhile, collected garbage included (to assert none)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
        gc.collect()


async def test_an_app_disposing_backend_engine_leaks_nothing(sql_target: SqlTarget) -> None:
    # The app disposes backend.engine instead of calling backend.dispose(): the held
    # connections go with the engine's pool (no garbage-collector warning), and the backend
    # goes on with fresh ones.
    async with sql_target.open(pool_size=2) as backend:
        drivers = connected(backend)
        await backend.engine.dispose()
        with no_warnings() as caught:
            await asyncio.gather(*(backend.read(ROW) for _ in range(4)))
            held = list(drivers)
            await backend.engine.dispose()
        assert [str(w.message) for w in caught] == []
        assert len(held) == 2
        if sql_target.database == "postgres":
            assert all(driver.is_closed() for driver in held)
        if sql_target.database == "mariadb":
            assert not any(driver.connected for driver in held)
        assert await backend.read(ROW) is None
        assert checked_out(backend) == 1


@pytest.mark.sql(database="postgres")
async def test_an_apps_engine_holds_connections_only_when_asked(sql_target: SqlTarget) -> None:
    engine = create_async_engine(require_postgres(), pool_size=4)
    try:
        shared = SqlBackend(engine, table_name=unique_name("sessions"))
        assert "held_connections=0" in repr(shared)
        await shared.create_schema()
        await asyncio.gather(*(shared.read(ROW) for _ in range(8)))
        assert checked_out(shared) == 0
        held = SqlBackend(engine, table_name=shared.table.name, held_connections=HeldConnections(2))
        await asyncio.gather(*(held.read(ROW) for _ in range(8)))
        assert checked_out(held) == 2
        await held.dispose()  # gives them back; the app's engine stays open
        assert checked_out(held) == 0
        assert await shared.read(ROW) is None
        async with engine.begin() as conn:
            await conn.run_sync(shared.metadata.drop_all)
    finally:
        await engine.dispose()


def test_held_connections_are_validated() -> None:
    for bad in (
        {"count": 0},
        {"count": 1, "recycle": 0},
        {"count": 1, "timeout": 0},
    ):
        with pytest.raises(ValueError, match="must be"):
            HeldConnections(**bad)  # type: ignore[arg-type]
