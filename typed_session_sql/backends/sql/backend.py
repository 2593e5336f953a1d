"""The SQL backend: one table, one statement per operation, one executor chosen once.

Every operation is a single statement run in autocommit mode: no BEGIN/COMMIT round trips,
and each statement is atomic on its own. The statements are built and compiled once per
backend (`.statements`); one executor (`.executor`) runs them all; one retry
loop (`SqlBackend._run`) decides what a failure means (`.failures`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from typed_session_sql.backend import (
    PrincipalRow,
    Record,
    TableStats,
    UnreadableRecordError,
    Update,
    UpdateOutcome,
    make_record,
)
from typed_session_sql.backends.sql import locks, maintenance
from typed_session_sql.backends.sql.connections import (
    ConnectionSource,
    HeldConnections,
    Holder,
    PerStatement,
)
from typed_session_sql.backends.sql.dialects import dialect_for
from typed_session_sql.backends.sql.driver_executor import DriverExecutor
from typed_session_sql.backends.sql.engine import DEFAULT_URL, create_engine
from typed_session_sql.backends.sql.executor import DRIVERS, Execution, Executor, choose
from typed_session_sql.backends.sql.failures import (
    Failure,
    RetryBudget,
    StatementFailed,
    store_error,
    store_error_cause,
    translated,
)
from typed_session_sql.backends.sql.lanes import Lanes
from typed_session_sql.backends.sql.settings import resolve
from typed_session_sql.backends.sql.sqlalchemy_executor import SqlAlchemyExecutor
from typed_session_sql.backends.sql.statements import CompiledStatement, Revoke, build_statements
from typed_session_sql.backends.sql.table import DEFAULT_TABLE, session_table
from typed_session_sql.urls import mask_password

if TYPE_CHECKING:
    from typed_session_sql.backends.sql.readiness import Readiness

__all__ = ["SqlBackend"]

_log = logging.getLogger("typed_session_sql")

# "No lower bound" for created_at, as a value: one statement serves both cases.
_LONG_AGO = datetime(1, 1, 1, tzinfo=UTC)


class SqlBackend:
    """Sessions in one SQL table, through a SQLAlchemy `AsyncEngine`.

    Args:
        engine: the engine to use. Statements run in autocommit mode; see `from_url`
            for an engine of the backend's own.
        table_name: the table's name.
        schema: the schema (PostgreSQL; the database on MySQL) the table lives in; None for
            the default.
        execution: what runs the statements: ``"driver"`` (straight on asyncpg, psycopg,
            asyncmy or aiosqlite: the fast way), ``"sqlalchemy"`` (SQLAlchemy's execution: events,
            echo, logging and execution options apply), or ``"auto"``: the driver where
            there is one and nothing on the engine expects SQLAlchemy's execution (echo,
            statement logging, a statement-event listener). Chosen once, here; shown by
            ``repr(backend)``.
        held_connections: hold this many of the engine's connections for the backend's
            statements (driver execution only), instead of one checkout from the pool per
            statement. An engine the application shares usually holds none.
        owns_engine: `dispose` disposes the engine too (as `from_url` sets).

    An engine of a database the backend has no dialect module for (PostgreSQL, MySQL,
    MariaDB and SQLite have one) raises `UnsupportedDialectError`.

    A connection belongs to the event loop that opened it, so the backend never uses one
    from another loop: each loop gets its own connections (and, on a backend made with
    `from_url`, an engine of its own while another loop uses the first), closed on
    that loop by `dispose` or when the loop shuts down. An engine passed in here is
    the application's: used from a second loop while it may hold the first one's
    connections, the backend raises `EventLoopError`.

    Examples:
        A backend of its own engine, made from a URL (here a SQLite file; without a URL,
        `$TYPED_SESSION_SQL_URL`), its table created or brought up to date, and closed at
        the end of the block:

        ```python
        import asyncio
        from dataclasses import dataclass, field

        from typed_session_sql import SessionStore, SetCookie, SqlBackend


        @dataclass
        class Cart:
            items: list[int] = field(default_factory=list)


        async def main() -> None:
            # postgresql+asyncpg://app@db/app, mysql+asyncmy://app@db/app in production
            async with SqlBackend.from_url("sqlite+aiosqlite:///sessions.db") as backend:
                await backend.migrate()  # or: typed-session-sql migrate upgrade head
                store = SessionStore(Cart, backend)
                session = store.new(Cart(items=[1]))
                cookie = await store.save(session)  # one INSERT
                assert isinstance(cookie, SetCookie)
                loaded = await store.load(cookie.value)  # one SELECT
                assert loaded is not None and loaded.data.items == [1]


        asyncio.run(main())
        ```

        An application that already has an engine passes it instead:
        `SqlBackend(engine, table_name="sessions")`.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        table_name: str = DEFAULT_TABLE,
        schema: str | None = None,
        *,
        execution: Execution = "auto",
        held_connections: HeldConnections | None = None,
        owns_engine: bool = False,
    ) -> None:
        self.metadata = MetaData()
        self.table: Table = session_table(self.metadata, table_name, schema)
        self.owns_engine = owns_engine
        # What differs on this database, found once: no statement asks again.
        self._dialect = dialect_for(engine.dialect.name)
        chosen, why = choose(engine, execution)
        translate = engine.get_execution_options().get("schema_translate_map")
        self.statements = build_statements(self.table, engine.dialect, self._dialect, translate)

        def make_executor(engine: AsyncEngine) -> Executor:
            if chosen == "sqlalchemy":
                return SqlAlchemyExecutor(engine)
            driver = DRIVERS[chosen]()
            connections: ConnectionSource = (
                PerStatement(engine, driver)
                if held_connections is None
                else Holder(engine, held_connections, driver)
            )
            return DriverExecutor(driver, connections)

        self._lanes = Lanes(engine, make_executor(engine), make_executor, owns_engine=owns_engine)
        _log.debug("%r: %s", self, why)

    @property
    def engine(self) -> AsyncEngine:
        """The engine the running event loop's statements use: the one the backend was made
        with, except while it serves another loop that still runs (then, on a backend that
        made its engine, one more like it; see `.lanes`)."""
        return self._lanes.current().engine

    @property
    def executor(self) -> Executor:
        """What runs the running event loop's statements."""
        return self._lanes.current().executor

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        table_name: str = DEFAULT_TABLE,
        schema: str | None = None,
        execution: Execution = "auto",
        held_connections: int | None = None,
        **engine_options: Any,
    ) -> Self:
        """A backend on an engine of its own for ``url``; `dispose` closes it.

        Without ``url``, the ``TYPED_SESSION_SQL_URL`` environment variable, else a SQLite
        file ``./sessions.db``. ``engine_options`` (``pool_size``, ``connect_args``, ...) go
        to `create_engine`, which also reads
        ``?prepared_statements=false`` in the URL (behind PgBouncer before 1.21 in
        transaction mode).

        With driver execution the backend holds ``held_connections`` of the pool's
        connections for its statements (by default ``pool_size``, one less when
        ``max_overflow`` is 0), treated with the pool's ``pool_recycle``,
        ``pool_pre_ping`` and ``pool_timeout``; 0 holds none.
        """
        resolved = url if url is not None else str(resolve(default_url=DEFAULT_URL).url)
        engine = create_engine(resolved, **engine_options)
        held = None
        if isinstance(engine.sync_engine.pool, QueuePool):  # not SQLite's in-memory pool
            held = _held(engine_options, held_connections)
        backend = cls(
            engine,
            table_name,
            schema,
            execution=execution,
            held_connections=held,
            owns_engine=True,
        )
        # Another event loop running at the same time gets an engine of its own (.lanes).
        backend._lanes.make_engine = lambda: create_engine(resolved, **engine_options)
        return backend

    # -- lifecycle ----------------------------------------------------------------------

    async def create_schema(self) -> None:
        """Create the table and its index if missing. Production uses the migrations."""
        with self._translated("create the session table"):
            async with self.engine.begin() as conn:
                await conn.run_sync(self.metadata.create_all)

    async def migrate(self, revision: str = "head") -> None:
        """Upgrade the session table to ``revision`` with the packaged Alembic migrations,
        over this backend's engine (no second engine, no URL needed): the one call an app
        makes at start-up. Concurrent callers, in any number of processes, take turns under
        a lock (PostgreSQL advisory lock, SQLite write lock, MySQL GET_LOCK). See
        `typed_session_sql.backends.sql.migrate.upgrade`: a revision or version record
        that will not do raises `MigrationError` (not to
        be retried), the database `StoreUnavailableError`
        naming it (password masked) and the driver's first line."""
        from typed_session_sql.backends.sql.migrate import upgrade

        await upgrade(self.engine, self.table.name, self.table.schema, revision)

    async def check_ready(self, *, revision: str | None = "head", within: float = 5.0) -> Readiness:
        """Whether this backend can serve now (database reachable, table present at
        ``revision`` or later): for readiness probes. See
        `check_ready`."""
        from typed_session_sql.backends.sql.readiness import check_ready

        return await check_ready(self, revision=revision, within=within)

    async def dispose(self) -> None:
        """Close the connections the backend holds, and the engine if it is the backend's,
        for the running event loop. Another loop's, where the backend served one at the same
        time, close when that loop shuts down."""
        await self._lanes.close_current()

    def purge_lock(self) -> AbstractAsyncContextManager[bool]:
        """The cross-instance purge lock for this table (PostgreSQL's advisory lock, MySQL's
        GET_LOCK; always free on SQLite); entering it yields whether it was taken."""
        return locks.purge_lock(self.engine, self.table, self._dialect.purge_lock)

    async def stats(self, now: datetime) -> TableStats:
        """What the table holds at ``now``: live and expired rows, oldest expiry, size."""
        with self._translated("read the statistics of"):
            return await maintenance.table_stats(self.engine, self.table, now, self._dialect)

    def _translated(self, doing: str) -> AbstractContextManager[None]:
        """The errors of a rare operation, as `.failures.translated` makes them."""
        where = mask_password(self.engine.url.render_as_string(hide_password=True))
        table = str(self.table.fullname)
        return translated(table, f"{doing} {table} on {where}")

    @property
    def telemetry_attributes(self) -> dict[str, str]:
        """The database's OpenTelemetry attributes, for the store's spans (no URL, no user)."""
        mariadb = getattr(self.engine.dialect, "is_mariadb", False)  # known once connected
        attributes = {"db.system.name": "mariadb" if mariadb else self.engine.dialect.name}
        if not self._dialect.database_is_a_file and self.engine.url.database:
            attributes["db.namespace"] = self.engine.url.database
        attributes["db.collection.name"] = str(self.table.fullname)
        return attributes

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.dispose()

    def __repr__(self) -> str:
        executor = self._lanes.first.executor
        return (
            f"SqlBackend({self._lanes.engine.dialect.name}, table={self.table.fullname!r}, "
            f"executor={executor.name}, held_connections={executor.held})"
        )

    # -- running one statement ----------------------------------------------------------

    async def _run(
        self, statement: CompiledStatement, params: Mapping[str, object], *, idempotent: bool = True
    ) -> Any:
        """Run ``statement`` (see `Executor.run`), once more where the
        `RetryBudget` allows. A taken id raises `StatementFailed` for the
        caller to judge; any other failure the library's error (`store_error`).
        Queries are idempotent."""
        try:
            return await self._lanes.current().executor.run(statement, params)
        except StatementFailed as failed:
            return await self._again(failed, statement, params, idempotent)

    async def _again(
        self,
        failed: StatementFailed,
        statement: CompiledStatement,
        params: Mapping[str, object],
        idempotent: bool,
    ) -> Any:
        """`_run` after its first attempt ``failed``: apart, so that the first attempt,
        which nearly always succeeds, runs in one coroutine (`read` makes it itself)."""
        budget = RetryBudget(idempotent=idempotent)
        while True:
            await self._after(failed, budget)
            try:
                return await self._lanes.current().executor.run(statement, params)
            except StatementFailed as again:
                failed = again

    def _count(
        self, statement: CompiledStatement, params: Mapping[str, object], *, idempotent: bool
    ) -> Awaitable[int]:
        """Run a write; how many rows it changed. (`_run` itself: no coroutine of its own.)"""
        counted: Awaitable[int] = self._run(statement, params, idempotent=idempotent)
        return counted

    async def _after(self, failed: StatementFailed, budget: RetryBudget) -> None:
        """Return to run the statement again, or raise."""
        if await budget.allows(failed.failure):
            return
        if failed.failure is Failure.ID_TAKEN:
            raise failed
        raise self._error(failed) from store_error_cause(failed)

    def _error(self, failed: StatementFailed) -> Exception:
        return store_error(failed, str(self.table.fullname))

    # -- the Backend protocol -----------------------------------------------------------

    async def create(self, id_hash: bytes, record: Record) -> bool:
        params = {
            "row_id": id_hash,
            "payload": record.data,
            "expiry": record.expires_at,
            "created": record.created_at,
            "row_version": record.version,
            "signed_in_as": record.principal,
            "signed_in_at": record.authenticated_at,
            "pinned": record.expiry_pinned,
        }
        try:
            return await self._count(self.statements.insert, params, idempotent=False) == 1
        except StatementFailed as failed:
            if self.statements.insert_ignores_conflict:  # ON CONFLICT DO NOTHING: not the id
                raise self._error(failed) from store_error_cause(failed)
            return False  # no ON CONFLICT on this dialect: the id is taken

    async def read(self, id_hash: bytes) -> Record | None:
        # `_run`, written out: a coroutine less on every load.
        select, params = self.statements.select, {"row_id": id_hash}
        try:
            rows = await self._lanes.current().executor.run(select, params)
        except StatementFailed as failed:
            rows = await self._again(failed, select, params, True)
        if not rows:
            return None
        try:
            columns = self.statements.select.decode(rows[0])
            columns[-1] = bool(columns[-1])  # expiry_pinned: MySQL's BOOL is a TINYINT, 0 or 1
            return make_record(*columns)
        except (OverflowError, ValueError) as error:
            raise UnreadableRecordError(
                f"a stored session's columns cannot be read back: {type(error).__name__}"
            ) from None

    async def update(self, change: Update) -> UpdateOutcome:
        params: dict[str, object] = {
            "row_id": change.id_hash,
            "row_version": change.expected_version,
            "payload": change.data,
            "expiry": change.expires_at,
            "pinned": change.expiry_pinned,
        }
        moving = change.new_id_hash is not None
        if moving:
            params["new_row_id"] = change.new_id_hash
        if change.sign_in is not None:
            params["signed_in_as"] = change.sign_in.principal
            params["signed_in_at"] = change.sign_in.at
        statement = self.statements.update[moving, change.sign_in is not None]
        try:
            count = await self._count(statement, params, idempotent=False)
        except StatementFailed as failed:
            if not moving:  # only the new id can be taken
                raise self._error(failed) from store_error_cause(failed)
            return UpdateOutcome.ID_TAKEN  # the statement failed as a whole: nothing written
        return UpdateOutcome.UPDATED if count == 1 else UpdateOutcome.STALE

    async def touch(
        self, id_hash: bytes, version: int, expires_at: datetime, now: datetime
    ) -> bool:
        params = {"row_id": id_hash, "row_version": version, "expiry": expires_at, "now": now}
        return await self._count(self.statements.touch, params, idempotent=True) == 1

    async def delete(self, id_hash: bytes) -> bool:
        return await self._count(self.statements.delete, {"row_id": id_hash}, idempotent=True) == 1

    async def list_by_principal(
        self, principal: str, *, live_at: datetime, created_after: datetime | None, limit: int
    ) -> list[PrincipalRow]:
        params = {
            "signed_in_as": principal,
            "now": live_at,
            "created_after": created_after if created_after is not None else _LONG_AGO,
            "max_rows": limit,
        }
        statement = self.statements.list_by_principal
        listed = []
        for row in await self._run(statement, params):
            try:
                listed.append(PrincipalRow(*statement.decode(row)))
            except (OverflowError, ValueError):
                continue  # unreadable: not listed (a load of it finds it undecodable)
        return listed

    async def delete_by_principal(
        self, principal: str, *, only: bytes | None = None, keep: bytes | None = None
    ) -> int:
        if only is not None and keep is not None:
            raise ValueError("give only or keep, not both")
        params: dict[str, object] = {"signed_in_as": principal}
        scope: Revoke = "all"
        if only is not None:
            scope, params["row_id"] = "one", only
        elif keep is not None:
            scope, params["row_id"] = "others", keep
        return await self._count(self.statements.revoke[scope], params, idempotent=True)

    async def purge(self, now: datetime, batch_size: int) -> int:
        params = {"now": now, "max_rows": batch_size}
        return await self._count(self.statements.purge, params, idempotent=True)

    async def clear(self) -> None:
        await self._count(self.statements.clear, {}, idempotent=True)


def _held(engine_options: Mapping[str, Any], count: int | None) -> HeldConnections | None:
    """What an engine made with ``engine_options`` holds for the backend by default."""
    if count is None:
        size = int(engine_options.get("pool_size", 5))
        count = size - (1 if engine_options.get("max_overflow", 10) == 0 else 0)
    if count <= 0:
        return None
    recycle = engine_options.get("pool_recycle", -1)
    return HeldConnections(
        count,
        recycle=float(recycle) if recycle is not None and recycle > 0 else None,
        pre_ping=bool(engine_options.get("pool_pre_ping", False)),
        timeout=float(engine_options.get("pool_timeout", 30.0)),
    )
