"""Which executor runs a backend's statements, chosen once, and how each is observed.

Each divergence the two ways of running a statement used to show (issue 9) has a test here:
a ``schema_translate_map``, statement logging through ``sqlalchemy.engine``, a listener
attached before or after the backend is made. The driver executor is observed through its
own logger and OpenTelemetry's asyncpg instrumentation.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import Pool, QueuePool

from tests.asgi_apps import Cart
from tests.clock import FakeClock
from tests.sql_backends import SqlTarget, require_postgres, statements_seen, unique_name
from typed_session_sql import SessionStore, SetCookie, SqlBackend
from typed_session_sql.backends.sql import HeldConnections, create_engine
from typed_session_sql.backends.sql.backend import _held
from typed_session_sql.backends.sql.engine import autocommit_on_connect

pytestmark = pytest.mark.anyio


async def round_trip(backend: SqlBackend, clock: FakeClock) -> None:
    """Save a session, load it, change and save it: INSERT, SELECT, UPDATE."""
    store = SessionStore(Cart, backend, clock=clock)
    created = await store.save(store.new(Cart(items=["1"])))
    assert isinstance(created, SetCookie)
    loaded = await store.load(created.value)
    assert loaded is not None
    loaded.data.items.append("2")
    await store.save(loaded)


def recorder(engine: AsyncEngine) -> list[str]:
    """The first word of each statement SQLAlchemy runs on ``engine`` from now on."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


@pytest.fixture
async def app_engine(sql_target: SqlTarget) -> AsyncIterator[AsyncEngine]:
    """An engine as an application makes it, with our engine's settings (so SQLite's
    connections are in autocommit and the driver executor is possible)."""
    async with sql_target.url() as url:
        engine = create_engine(url)
        try:
            yield engine
        finally:
            await engine.dispose()


@pytest.mark.sql(execution="driver")
async def test_the_executor_is_chosen_once_and_shown(sql_backend: SqlBackend) -> None:
    driver = sql_backend.engine.dialect.driver
    assert f"executor={driver}" in repr(sql_backend)
    assert "held_connections=" in repr(sql_backend)
    with pytest.raises(ValueError, match="execution must be"):
        SqlBackend(sql_backend.engine, execution="fast")  # type: ignore[arg-type]


@pytest.mark.sql(execution="driver")
async def test_a_listener_attached_after_start_up_changes_nothing(
    sql_backend: SqlBackend, clock: FakeClock
) -> None:
    # The executor is the one chosen when the backend was made: attaching a tracer's cursor
    # listener later neither reroutes the statements nor slows them down.
    before = repr(sql_backend)
    late = recorder(sql_backend.engine)
    with statements_seen(sql_backend) as seen:
        await round_trip(sql_backend, clock)
    assert late == []
    assert seen == ["INSERT", "SELECT", "UPDATE"]  # on the driver executor's logger
    assert repr(sql_backend) == before


@pytest.mark.sql(execution="driver")  # what auto would otherwise take
async def test_a_listener_attached_before_the_backend_is_made_sees_every_statement(
    app_engine: AsyncEngine, clock: FakeClock
) -> None:
    early = recorder(app_engine)
    backend = SqlBackend(app_engine, table_name=unique_name("sessions"))
    assert backend.executor.name == "sqlalchemy"
    try:
        await backend.create_schema()
        early.clear()
        await round_trip(backend, clock)
        assert early == ["INSERT", "SELECT", "UPDATE"]
    finally:
        async with app_engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)


@pytest.fixture
def engine_logging() -> Iterator[list[str]]:
    """Messages of the ``sqlalchemy.engine`` logger at INFO, enabled the documented way."""
    messages: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("sqlalchemy.engine")
    handler, level = Handler(), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.sql(execution="driver")  # what auto would otherwise take
async def test_statements_are_logged_when_sqlalchemy_engine_logs_at_info(
    sql_target: SqlTarget, engine_logging: list[str], clock: FakeClock
) -> None:
    async with sql_target.url() as url:
        backend = SqlBackend.from_url(url, table_name=unique_name("sessions"))
        async with backend:
            assert backend.executor.name == "sqlalchemy"
            await backend.create_schema()
            engine_logging.clear()
            await round_trip(backend, clock)
            words = [m.split(None, 1)[0] for m in engine_logging if backend.table.name in m]
            assert words == ["INSERT", "SELECT", "UPDATE"]
            if sql_target.server:
                async with backend.engine.begin() as conn:
                    await conn.run_sync(backend.metadata.drop_all)


@pytest.mark.sql(database="postgres")
async def test_echo_takes_sqlalchemys_executor(sql_target: SqlTarget) -> None:
    async with SqlBackend.from_url(require_postgres(), echo=True) as backend:
        assert backend.executor.name == "sqlalchemy"
    logging.getLogger("sqlalchemy.engine.Engine").handlers.clear()  # echo added one
    logging.getLogger("sqlalchemy.engine.Engine").setLevel(logging.NOTSET)


@pytest.mark.sql(database="postgres")
async def test_a_schema_translate_map_works_on_every_executor(
    sql_target: SqlTarget, clock: FakeClock
) -> None:
    # A tenant app: the table lives in the schema the engine's map names.
    url, tenant = require_postgres(), unique_name("tenant")
    admin = create_engine(url)
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{tenant}"'))
    engine = create_async_engine(url).execution_options(schema_translate_map={None: tenant})
    backend = SqlBackend(engine, execution=sql_target.execution)
    try:
        assert backend.executor.name == engine.dialect.driver or sql_target.execution != "driver"
        await backend.create_schema()
        await round_trip(backend, clock)
        async with admin.connect() as conn:
            stored = await conn.execute(text(f'SELECT count(*) FROM "{tenant}".typed_sessions'))
            assert stored.scalar_one() == 1
        # auto keeps the driver executor: the map is compiled into its SQL
        assert SqlBackend(engine).executor.name == "asyncpg"
    finally:
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP SCHEMA "{tenant}" CASCADE'))
        await admin.dispose()


@pytest.mark.sql(execution="driver")
async def test_the_driver_executor_logs_each_statement_without_parameters(
    sql_backend: SqlBackend, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="typed_session_sql.sql")
    store = SessionStore(Cart, sql_backend, clock=clock)
    created = await store.save(store.new(Cart(items=["424242"])))
    assert isinstance(created, SetCookie)
    assert await store.load(created.value) is not None
    messages = [r.getMessage() for r in caplog.records if r.name == "typed_session_sql.sql"]
    assert [m.split(None, 1)[0] for m in messages] == ["INSERT", "SELECT"]
    assert all(sql_backend.table.name in m for m in messages)
    assert not any("424242" in m or created.value in m for m in messages)


@contextmanager
def asyncpg_traced() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()


@pytest.mark.sql(database="postgres", execution="driver")
async def test_opentelemetrys_asyncpg_instrumentation_sees_every_statement(
    sql_backend: SqlBackend, clock: FakeClock
) -> None:
    with asyncpg_traced() as exporter:
        await round_trip(sql_backend, clock)
    spans = [span for span in exporter.get_finished_spans() if span.name != "SELECT 1"]
    assert [span.name for span in spans] == ["INSERT", "SELECT", "UPDATE"]
    assert all(
        sql_backend.table.name in str((span.attributes or {}).get("db.statement", ""))
        or sql_backend.table.name in str((span.attributes or {}).get("db.query.text", ""))
        for span in spans
    )


@pytest.mark.sql(database="postgres", execution="driver")
async def test_an_apps_engine_is_not_held_unless_asked(sql_target: SqlTarget) -> None:
    engine = create_async_engine(require_postgres(), pool_size=3)
    try:
        backend = SqlBackend(engine, table_name=unique_name("sessions"))
        assert "held_connections=0" in repr(backend)
        await backend.create_schema()
        for _ in range(3):
            await backend.read(b"\0" * 32)
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        async with engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
    finally:
        await engine.dispose()


async def test_an_engine_carries_its_own_autocommit_mark_into_its_copies(tmp_path: Any) -> None:
    """Whether the driver executor may run an engine's statements is read off the engine:
    a copy made with ``execution_options`` keeps it, an engine made elsewhere lacks it, an
    engine of ours out of autocommit lacks it too (review A9: no registry of engines)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    ours, theirs = create_engine(url), create_async_engine(url)
    committing = create_engine(url, isolation_level="SERIALIZABLE")
    try:
        copy = ours.execution_options(stream_results=False)
        assert [autocommit_on_connect(e) for e in (ours, copy, theirs, committing)] == [
            True,
            True,
            False,
            False,
        ]
        assert "executor=aiosqlite" in repr(SqlBackend(copy))
        assert "executor=sqlalchemy" in repr(SqlBackend(theirs))
    finally:
        for engine in (ours, theirs, committing):
            await engine.dispose()


def test_held_connections_default_to_what_sqlalchemys_pool_defaults_to() -> None:
    """`from_url` holds what the pool would have open by default, and treats held
    connections as the pool treats its own: pinned against QueuePool's signature, so a
    change of SQLAlchemy's defaults fails here rather than drifting."""
    queue = inspect.signature(QueuePool.__init__).parameters
    pool = inspect.signature(Pool.__init__).parameters
    assert pool["recycle"].default == -1  # never, which a held connection reads as None
    assert queue["max_overflow"].default != 0  # so no place is kept free for overflow
    assert _held({}, None) == HeldConnections(
        queue["pool_size"].default,
        recycle=None,
        pre_ping=pool["pre_ping"].default,
        timeout=queue["timeout"].default,
    )
