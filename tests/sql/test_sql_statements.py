"""What the SQL backend sends: one statement per operation, no transaction around it.

Statements are counted with a ``before_cursor_execute`` listener; BEGIN/COMMIT are looked
for in the driver's own trace (asyncpg's query logger, sqlite3's trace callback, asyncmy's
transport), which sees everything that goes to the database, including what the driver
sends by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import create_async_engine

from tests.clock import FakeClock
from tests.mariadb.wire import tap
from tests.models import Cart
from tests.sql_backends import SqlTarget, require_postgres, unique_name
from typed_session_sql import (
    EventKind,
    ExpiryPolicy,
    SessionEvent,
    SessionStore,
    SetCookie,
    SqlBackend,
)
from typed_session_sql.backends.sql import create_engine

pytestmark = pytest.mark.anyio


class Trace:
    """Every statement SQLAlchemy runs, and every query the driver itself sends."""

    def __init__(self, backend: SqlBackend, *, cursor_events: bool = True) -> None:
        self.statements: list[str] = []
        self.wire: list[str] = []
        self.cursor_events = cursor_events
        if cursor_events:
            event.listen(backend.engine.sync_engine, "before_cursor_execute", self._statement)
        event.listen(backend.engine.sync_engine, "connect", self._hook_driver)

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement.split(None, 1)[0].upper())

    def _hook_driver(self, dbapi_connection: Any, record: Any) -> None:
        driver = dbapi_connection.driver_connection
        if hasattr(driver, "add_query_logger"):  # asyncpg
            driver.add_query_logger(self._sent)
        elif hasattr(driver, "_transport"):  # asyncmy: what its transport writes
            tap(driver, self._on_wire)
        else:  # aiosqlite: the sqlite3 connection's own trace, on aiosqlite's thread
            driver._conn.set_trace_callback(self._on_wire)

    def _sent(self, query: Any) -> None:
        self._on_wire(query.query)

    def _on_wire(self, query: str) -> None:
        self.wire.append(query)
        if not self.cursor_events:  # the driver executor: count what went on the wire
            self.statements.append(query.split(None, 1)[0].upper())

    def clear(self) -> None:
        self.statements.clear()
        self.wire.clear()

    async def counted(self) -> list[str]:
        """The statements since the last call; none of them may be transaction control."""
        await asyncio.sleep(0)  # asyncpg calls query loggers with call_soon: let them run
        assert self.transaction_control() == []
        seen = list(self.statements)
        self.clear()
        return seen

    def transaction_control(self) -> list[str]:
        words = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
        return [q for q in self.wire if q.strip().upper().startswith(words)]


@pytest.fixture
async def traced(sql_target: SqlTarget) -> AsyncIterator[tuple[SqlBackend, Trace]]:
    """Each executor on each database: SQLAlchemy's statements are counted by a cursor
    listener, the driver executor's on the wire."""
    async with sql_target.open() as backend:
        trace = Trace(backend, cursor_events=sql_target.execution == "sqlalchemy")
        await backend.engine.dispose()  # new connections, so the driver trace sees them all
        await backend.read(b"\0" * 32)  # warm up: first connect, compiled cache
        await asyncio.sleep(0)  # let asyncpg's query loggers run
        trace.clear()
        yield backend, trace


def store_on(backend: SqlBackend, clock: FakeClock, **options: Any) -> SessionStore[Cart]:
    return SessionStore(Cart, backend, clock=clock, **options)


async def test_one_statement_per_operation_and_no_transaction_control(
    traced: tuple[SqlBackend, Trace], clock: FakeClock
) -> None:
    backend, trace = traced
    store = store_on(backend, clock, expiry=ExpiryPolicy(idle=timedelta(hours=1)))

    counted = trace.counted

    session = store.new()
    session.data.items.append(1)
    created = await store.save(session)
    assert isinstance(created, SetCookie)
    assert await counted() == ["INSERT"]

    loaded = await store.load(created.value)
    assert loaded is not None
    assert await counted() == ["SELECT"]

    assert await store.save(loaded) is not None
    assert await counted() == []  # unchanged: nothing at all

    loaded.data.items.append(2)
    await store.save(loaded)
    assert await counted() == ["UPDATE"]

    loaded.regenerate()
    rotated = await store.save(loaded)
    assert isinstance(rotated, SetCookie)
    assert await counted() == ["UPDATE"]  # rotation moves the id in the same statement

    clock.advance(timedelta(minutes=30))
    renewed = await store.load(rotated.value)
    assert renewed is not None
    assert await counted() == ["SELECT"]
    await store.save(renewed)
    assert await counted() == ["UPDATE"]  # the touch of the expiry

    renewed.delete()
    await store.save(renewed)
    assert await counted() == ["DELETE"]

    clock.advance(timedelta(days=1))
    assert await backend.purge(clock(), 10) == 0  # one batch (the purge pass adds its lock)
    assert await counted() == ["DELETE"]


async def test_sign_in_listing_and_revocation_are_one_statement_each(
    traced: tuple[SqlBackend, Trace], clock: FakeClock
) -> None:
    backend, trace = traced
    store = store_on(backend, clock)

    counted = trace.counted

    fresh = store.new()
    fresh.sign_in("alice")
    assert isinstance(await store.save(fresh), SetCookie)
    assert await counted() == ["INSERT"]

    anonymous = await store.save(store.new(Cart(items=[1])))
    assert isinstance(anonymous, SetCookie)
    loaded = await store.load(anonymous.value)
    assert loaded is not None
    assert await counted() == ["INSERT", "SELECT"]
    loaded.sign_in("alice")
    signed = await store.save(loaded)
    assert isinstance(signed, SetCookie)
    assert await counted() == ["UPDATE"]  # rotation and sign-in together

    again = await store.load(signed.value)
    assert again is not None
    assert again.principal == "alice"
    assert await counted() == ["SELECT"]  # the principal comes with the one read

    infos = await store.sessions_of("alice")
    assert len(infos) == 2
    assert await counted() == ["SELECT"]

    (other,) = [info.handle for info in infos if info.handle != again.handle]
    assert await store.revoke("alice", other)
    assert await counted() == ["DELETE"]

    assert await store.revoke_all("alice", keep=again) == 0
    assert await counted() == ["DELETE"]
    assert await store.revoke_all("alice") == 1
    assert await counted() == ["DELETE"]


async def test_listing_a_principals_sessions_uses_the_principal_index(
    traced: tuple[SqlBackend, Trace],
) -> None:
    backend, _ = traced
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    clause: Any = backend.statements.list_by_principal.clause
    bound = clause.params(
        signed_in_as="alice", now=moment, created_after=moment - timedelta(days=1), max_rows=100
    )
    listing = str(
        bound.compile(dialect=backend.engine.dialect, compile_kwargs={"literal_binds": True})
    )
    index = f"ix_{backend.table.name}_principal"
    async with backend.engine.connect() as conn:
        if backend.engine.dialect.name == "sqlite":
            plan = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + listing)
        else:
            if backend.engine.dialect.name == "postgresql":
                await conn.exec_driver_sql("SET enable_seqscan = off")
            plan = await conn.exec_driver_sql("EXPLAIN " + listing)
        text = " ".join(str(row) for row in plan.all())
    assert index in text, text


@pytest.mark.sql(execution="sqlalchemy")  # the driver executor compiled its SQL when made
async def test_statements_are_compiled_once(traced: tuple[SqlBackend, Trace]) -> None:
    backend, _ = traced
    hits: list[bool] = []

    def cache(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any) -> None:
        hits.append(context.cache_hit == context.cache_hit.CACHE_HIT)

    event.listen(backend.engine.sync_engine, "before_cursor_execute", cache)
    for _ in range(3):
        await backend.read(b"\1" * 32)
    assert hits == [True, True, True]


async def test_undecodable_row_loads_as_none(
    traced: tuple[SqlBackend, Trace], clock: FakeClock
) -> None:
    backend, _ = traced
    events: list[SessionEvent] = []
    store = SessionStore(Cart, backend, clock=clock, on_event=events.append)
    session = store.new(Cart(items=[1]))
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    async with backend.engine.connect() as conn:
        await conn.execute(update(backend.table).values(data=b"\xff not json"))
    assert await store.load(result.value) is None
    assert events[-1].kind is EventKind.UNDECODABLE


@pytest.mark.sql(database="postgres")
async def test_an_apps_own_engine_runs_without_transaction_control(
    sql_target: SqlTarget, clock: FakeClock
) -> None:
    # A plain engine as an application makes it: no autocommit, the pool's reset on.
    engine = create_async_engine(require_postgres())
    backend = SqlBackend(engine, table_name=unique_name("sessions"), execution=sql_target.execution)
    try:
        await backend.create_schema()
        trace = Trace(backend, cursor_events=sql_target.execution == "sqlalchemy")
        await engine.dispose()
        store = store_on(backend, clock)
        created = await store.save(store.new(Cart(items=[1])))
        assert isinstance(created, SetCookie)
        loaded = await store.load(created.value)
        assert loaded is not None
        loaded.data.items.append(2)
        await store.save(loaded)
        await asyncio.sleep(0)  # let asyncpg's query loggers run
        assert trace.transaction_control() == []
        assert trace.statements == ["INSERT", "SELECT", "UPDATE"]
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
        await engine.dispose()


@contextmanager
def counting_hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the calls handed to aiosqlite's worker threads: each is a round trip."""
    import aiosqlite.core

    hops: list[str] = []
    original: Any = aiosqlite.core.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(aiosqlite.core.Connection, "_execute", counted)
        yield hops


@pytest.mark.sql(database="sqlite")
async def test_sqlite_statements_take_one_thread_hop_on_the_driver_executor(
    sql_backend: SqlBackend, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    # SQLAlchemy's aiosqlite adapter makes four hops a statement (cursor(), execute,
    # fetchall, close; a write skips fetchall); the driver executor one: execute_fetchall,
    # or execute for a write.
    store = store_on(sql_backend, clock)
    created = await store.save(store.new(Cart(items=[1])))
    assert isinstance(created, SetCookie)
    await store.load(created.value)  # warm up: connections, compiled cache
    with counting_hops(monkeypatch) as hops:
        loaded = await store.load(created.value)
        assert loaded is not None
        loaded_hops = len(hops)
        loaded.data.items.append(2)
        await store.save(loaded)
    sqlalchemy = sql_backend.executor.name == "sqlalchemy"
    assert (loaded_hops, len(hops)) == ((4, 7) if sqlalchemy else (1, 2))


async def test_sqlite_skips_the_drivers_no_op_rollback(monkeypatch: pytest.MonkeyPatch) -> None:
    # On aiosqlite each driver call is a hop to its worker thread; in autocommit the
    # rollback() SQLAlchemy makes when a connection closes does nothing but cost one.
    import aiosqlite

    rollbacks: list[None] = []
    original = aiosqlite.Connection.rollback

    async def counted(self: aiosqlite.Connection) -> None:
        rollbacks.append(None)
        await original(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    # SQLAlchemy's executor: the driver executor never closes a SQLAlchemy Connection.
    async with SqlTarget("sqlite", "sqlalchemy").open() as backend:
        for _ in range(3):
            await backend.read(b"\1" * 32)
    assert rollbacks == []


async def test_an_apps_own_sqlite_engine_takes_sqlalchemys_executor(tmp_path: Path) -> None:
    # Its connections are not in autocommit: sqlite3 would open a transaction before each
    # write, and the driver executor would leave it open. SQLAlchemy's switches them.
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    engine, ours = create_async_engine(url), create_engine(url)
    try:
        assert SqlBackend(engine).executor.name == "sqlalchemy"
        assert SqlBackend(ours).executor.name == "aiosqlite"
        with pytest.raises(ValueError, match="not in autocommit"):
            SqlBackend(engine, execution="driver")
    finally:
        await engine.dispose()
        await ours.dispose()
