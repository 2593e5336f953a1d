"""The SQL backend: one table, one statement per operation, on SQLAlchemy's asyncio engine.

Every operation is a single statement run in autocommit mode: no BEGIN/COMMIT round trips,
and each statement is atomic on its own. Statements are built once per backend and reused,
so SQLAlchemy's compiled cache serves every call after the first.

Timestamps are stored as integer microseconds since the Unix epoch (UTC). Integers compare
the same on every dialect whatever the database session's time zone, SQLite included
(where DATETIME is text), cost nothing to convert, and make it impossible to mix in the
database's own clock: every ``now`` comes from the store.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeAlias

from sqlalchemy import (
    BigInteger,
    Column,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    event,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.selectable import Select
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn

from typed_session_sql.backend import MAX_PRINCIPAL_LENGTH, Listed, Record, SignIn, UpdateOutcome
from typed_session_sql.errors import StoreUnavailableError

URL_ENV = "TYPED_SESSION_SQL_URL"
DEFAULT_URL = "sqlite+aiosqlite:///./sessions.db"
DEFAULT_TABLE = "typed_sessions"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# A serialization failure (SQLSTATE 40001) aborted the statement; running it again is safe.
# PostgreSQL raises it only under SERIALIZABLE; CockroachDB and YugabyteDB raise it routinely.
_SERIALIZATION_FAILURE = "40001"
_SERIALIZATION_RETRIES = 5
_UNIQUE_VIOLATION = "23505"

# Parameters holding timestamps; the direct path converts them itself.
_TIME_PARAMS = frozenset({"p_expires", "p_created", "p_now", "p_auth"})


_Result: TypeAlias = "CursorResult[*tuple[Any, ...]]"


class EpochMicros(TypeDecorator[datetime]):
    """An aware datetime stored as a BIGINT of microseconds since 1970-01-01 UTC."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        return _to_micros(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> datetime | None:
        return _from_micros(value)


def session_table(
    metadata: MetaData, name: str = DEFAULT_TABLE, schema: str | None = None
) -> Table:
    """The session table, defined once: the backend, migrations and autogenerate use this."""
    return Table(
        name,
        metadata,
        # blake3 of the session id: uniformly distributed, so a fine key for range-sharded
        # distributed SQL too (no sequence, no hot spot).
        Column("id_hash", LargeBinary(32), primary_key=True),
        Column("data", LargeBinary, nullable=False),
        # NULL = never expires (never purged).
        Column("expires_at", EpochMicros, nullable=True),
        Column("created_at", EpochMicros, nullable=False),
        Column("version", Integer, nullable=False),
        # Who signed in (set only by Session.sign_in), and when; NULL = anonymous.
        Column("principal", String(MAX_PRINCIPAL_LENGTH), nullable=True),
        Column("authenticated_at", EpochMicros, nullable=True),
        Index(f"ix_{name}_expires_at", "expires_at"),
        # Partial: anonymous sessions (most rows, most writes) never enter it.
        Index(
            f"ix_{name}_principal",
            "principal",
            postgresql_where=text("principal IS NOT NULL"),
            sqlite_where=text("principal IS NOT NULL"),
        ),
        schema=schema,
    )


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine tuned for session traffic: autocommit, no pool reset, SQLite in WAL mode.

    Autocommit means no transaction is ever left open on a pooled connection, so resetting
    it on return (a ROLLBACK round trip on some drivers) buys nothing. Extra ``kwargs`` go to
    :func:`sqlalchemy.ext.asyncio.create_async_engine`.
    """
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    options.update(kwargs)
    engine = create_async_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL itself needs the lock another process may hold.
        # Several processes writing at once then wait their turn instead of failing with
        # "database is locked"; every operation is one short statement, so waits are short.
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _reject_closed_connections(
    dbapi_connection: Any, connection_record: Any, connection_proxy: Any
) -> None:
    """Replace a pooled connection the server already closed, at no round trip.

    The driver notices the server's close (restart, ``pg_terminate_backend``, idle timeout)
    as soon as the event loop reads it; asking the driver is free, unlike ``pool_pre_ping``.
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver, "is_closed", None)  # asyncpg; psycopg has a `closed` flag
    closed = is_closed() if callable(is_closed) else getattr(driver, "closed", False) is True
    if closed:
        raise DisconnectionError("the pooled connection was closed by the server")


class SqlBackend:
    """Sessions in one SQL table, through a SQLAlchemy :class:`AsyncEngine`.

    Args:
        engine: the engine to use. Its statements run in autocommit mode; an engine from
            :meth:`from_url` (or :func:`create_engine`) also skips the pool's reset.
        table_name: the table's name.
        schema: the schema (PostgreSQL) the table lives in; None for the default.
    """

    def __init__(
        self, engine: AsyncEngine, table_name: str = DEFAULT_TABLE, schema: str | None = None
    ) -> None:
        sync_engine = engine.sync_engine
        if sync_engine.get_execution_options().get("isolation_level") != "AUTOCOMMIT" and (
            getattr(sync_engine.dialect, "_on_connect_isolation_level", None) != "AUTOCOMMIT"
        ):
            engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        if not event.contains(sync_engine.pool, "checkout", _reject_closed_connections):
            event.listen(sync_engine.pool, "checkout", _reject_closed_connections)
        self.engine: AsyncEngine = engine
        self.metadata = MetaData()
        self.table: Table = session_table(self.metadata, table_name, schema)
        self._owns_engine = False
        # Idle pooled connections the backend keeps checked out (asyncpg, own engine only).
        self._keep = 0
        self._held: list[Any] = []
        self._held_pool: object = None
        self._build_statements()

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        table_name: str = DEFAULT_TABLE,
        schema: str | None = None,
        **engine_options: Any,
    ) -> Self:
        """A backend on an engine of its own for ``url``.

        Without ``url``, the ``TYPED_SESSION_SQL_URL`` environment variable, else a SQLite
        file ``./sessions.db``. ``engine_options`` (``pool_size``, ``connect_args``, ...) go
        to :func:`create_engine`. :meth:`dispose` closes the engine.

        The engine is the backend's own, so on asyncpg the backend keeps up to
        ``pool_size`` idle connections checked out for itself, which spares each statement
        a trip through the pool. Others using ``backend.engine`` get the remaining (overflow)
        connections.
        """
        resolved = url if url is not None else os.environ.get(URL_ENV, DEFAULT_URL)
        backend = cls(create_engine(resolved, **engine_options), table_name, schema)
        backend._owns_engine = True
        if backend._direct is not None:
            pool = backend.engine.sync_engine.pool
            size = getattr(pool, "size", None)
            if callable(size):
                # Without overflow, leave one connection cycling through the pool for others.
                overflow = getattr(pool, "_max_overflow", 0)
                backend._keep = max(0, size() - (1 if overflow == 0 else 0))
        return backend

    def _build_statements(self) -> None:
        t = self.table
        c = t.c
        dialect = self.engine.dialect.name
        values = {
            "id_hash": bindparam("p_id"),
            "data": bindparam("p_data"),
            "expires_at": bindparam("p_expires", type_=EpochMicros),
            "created_at": bindparam("p_created", type_=EpochMicros),
            "version": bindparam("p_version"),
            "principal": bindparam("p_principal"),
            "authenticated_at": bindparam("p_auth", type_=EpochMicros),
        }
        self._insert_ignores_conflict = dialect in ("postgresql", "sqlite")
        self._insert: Insert
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            self._insert = pg_insert(t).values(values).on_conflict_do_nothing()
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            self._insert = sqlite_insert(t).values(values).on_conflict_do_nothing()
        else:  # no ON CONFLICT: a collision surfaces as an IntegrityError instead
            self._insert = insert(t).values(values)
        self._select: Select[Any] = select(
            c.data, c.version, c.created_at, c.expires_at, c.principal, c.authenticated_at
        ).where(c.id_hash == bindparam("p_id"))
        guard = (c.id_hash == bindparam("p_id")) & (c.version == bindparam("p_version"))
        changes = {
            "data": bindparam("p_data"),
            "expires_at": bindparam("p_expires", type_=EpochMicros),
            "version": c.version + literal_column("1"),
        }
        moving: dict[str, Any] = {"id_hash": bindparam("p_new_id")}
        signing_in = {
            "principal": bindparam("p_principal"),
            "authenticated_at": bindparam("p_auth", type_=EpochMicros),
        }
        self._update: Update = update(t).where(guard).values(changes)
        self._update_moving: Update = update(t).where(guard).values({**changes, **moving})
        self._update_sign_in: Update = update(t).where(guard).values({**changes, **signing_in})
        self._update_moving_sign_in: Update = (
            update(t).where(guard).values({**changes, **moving, **signing_in})
        )
        self._touch: Update = (
            update(t)
            .where(
                (c.id_hash == bindparam("p_id"))
                & (c.expires_at > bindparam("p_now", type_=EpochMicros))
                & (c.expires_at < bindparam("p_expires", type_=EpochMicros))
            )
            .values(expires_at=bindparam("p_expires", type_=EpochMicros))
        )
        self._delete: Delete = delete(t).where(c.id_hash == bindparam("p_id"))
        of_principal = c.principal == bindparam("p_principal")
        self._list: Select[Any] = select(
            c.id_hash, c.created_at, c.expires_at, c.authenticated_at
        ).where(of_principal)
        self._revoke_all: Delete = delete(t).where(of_principal)
        self._revoke_one: Delete = delete(t).where(of_principal & (c.id_hash == bindparam("p_id")))
        self._revoke_others: Delete = delete(t).where(
            of_principal & (c.id_hash != bindparam("p_id"))
        )
        victims = (
            select(c.id_hash)
            .where(c.expires_at <= bindparam("p_now", type_=EpochMicros))
            .limit(bindparam("p_limit", type_=Integer))
        )
        if dialect == "postgresql":
            # Concurrent purgers take disjoint batches instead of queueing on each other's
            # row locks (and never block a request writing one of those rows for long).
            victims = victims.with_for_update(skip_locked=True)
        self._purge: Delete = delete(t).where(c.id_hash.in_(victims.scalar_subquery()))
        self._clear: Delete = delete(t)
        self._direct: dict[str, _Direct] | None = None
        if self.engine.dialect.driver == "asyncpg":
            self._direct = {
                name: _Direct.compile(getattr(self, name), self.engine.dialect)
                for name in (
                    "_insert", "_select", "_update", "_update_moving",
                    "_update_sign_in", "_update_moving_sign_in", "_touch", "_delete",
                    "_list", "_revoke_all", "_revoke_one", "_revoke_others", "_purge", "_clear",
                )
            }  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------------

    async def create_schema(self) -> None:
        """Create the table and its index if missing. Production uses the migrations."""
        await self._release_held()
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(self.metadata.create_all)
        except (SQLAlchemyError, OSError) as error:
            raise StoreUnavailableError(
                f"could not create the session table: {type(error).__name__}"
            ) from error

    async def migrate(self, revision: str = "head") -> None:
        """Upgrade the session table to ``revision`` with the packaged Alembic migrations,
        over this backend's engine (no second engine, no URL needed): the one call an app
        makes at start-up. Concurrent callers are safe on PostgreSQL (transactional DDL)."""
        from alembic import command

        from typed_session_sql.alembic_support import make_config

        config = make_config(table=self.table.name, schema=self.table.schema)

        def upgrade(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        await self._release_held()
        # Migrations want a transaction (DDL is transactional on PostgreSQL); the engine's
        # statements run in autocommit, so this one connection switches back.
        isolation = "SERIALIZABLE" if self.engine.dialect.name == "sqlite" else "READ COMMITTED"
        try:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level=isolation)
                await conn.run_sync(upgrade)
                await conn.commit()
        except (SQLAlchemyError, OSError) as error:
            raise StoreUnavailableError(
                f"could not migrate the session table: {type(error).__name__}"
            ) from error

    async def dispose(self) -> None:
        """Close the pooled connections of an engine this backend created."""
        await self._release_held()
        if self._owns_engine:
            await self.engine.dispose()

    async def _release_held(self) -> None:
        """Give the connections the backend keeps idle back to the engine's pool."""
        held, self._held = self._held, []
        for pooled in held:
            await greenlet_spawn(pooled.close)

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
        return f"SqlBackend({self.engine.dialect.name}, table={self.table.fullname!r})"

    # -- running one statement ----------------------------------------------------------

    async def _execute(
        self, statement: Any, params: dict[str, Any], *, idempotent: bool
    ) -> _Result:
        """Run one autocommit statement; map failures to :class:`StoreUnavailableError`.

        Retries a serialization failure (the statement was rolled back, so it is safe), and,
        for ``idempotent`` statements, once more after a dropped connection. Writes that are
        not idempotent are never re-run after a disconnect: the first attempt may have
        committed before the connection died.
        """
        if self._held:  # this path takes connections from the pool: don't starve it
            await self._release_held()
        attempts = _Attempts(idempotent)
        while True:
            try:
                async with self.engine.connect() as conn:
                    result: _Result = await conn.execute(statement, params)
                    return result
            except IntegrityError as error:
                raise _Duplicate from error
            except DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None) or getattr(
                    error.orig, "pgcode", None
                )
                if await attempts.after_serialization_failure(sqlstate):
                    continue
                if error.connection_invalidated and attempts.reconnect():
                    continue
                raise _failed(error.orig) from error
            except (SQLAlchemyError, OSError) as error:
                raise _unavailable(error) from error  # refused, pool timeout, DNS, ...

    def _direct_statement(self, name: str) -> _Direct | None:
        """The driver-level statement for ``name``, unless the engine is being observed.

        With asyncpg, running the precompiled SQL on the pooled driver connection skips
        SQLAlchemy's per-statement execution machinery (about half the cost of a primary-key
        read at 16 concurrent requests). Cursor-execute listeners (statement counting,
        tracing) and ``echo`` only see statements SQLAlchemy runs, so while any is present
        every statement takes the ordinary path instead.
        """
        if self._direct is None:
            return None
        sync_engine = self.engine.sync_engine
        dispatch = sync_engine.dispatch
        if dispatch.before_cursor_execute or dispatch.after_cursor_execute or sync_engine.echo:
            return None
        return self._direct[name]

    async def _run_direct(
        self,
        statement: _Direct,
        params: dict[str, Any],
        *,
        idempotent: bool,
        fetch: bool,
        many: bool = False,
    ) -> Any:
        """Run ``statement`` on a pooled asyncpg connection: the row (``fetch``), all rows
        (``fetch`` and ``many``) or the count.

        Same contract as :meth:`_execute`; a unique violation raises :class:`_Duplicate`.
        """
        args = statement.arguments(params)
        attempts = _Attempts(idempotent)
        while True:
            try:
                pooled = await self._checkout()
            except (SQLAlchemyError, OSError) as error:
                raise _unavailable(error) from error
            driver = pooled.driver_connection
            assert driver is not None
            try:
                if fetch and many:
                    result = await driver.fetch(statement.sql, *args)
                elif fetch:
                    result = await driver.fetchrow(statement.sql, *args)
                else:
                    status: str = await driver.execute(statement.sql, *args)
                    result = int(status.rsplit(" ", 1)[-1])
            except Exception as error:
                sqlstate = getattr(error, "sqlstate", None)
                if driver.is_closed():
                    pooled.invalidate(error)  # outside a greenlet: closes at once, no I/O
                    if attempts.reconnect():
                        continue
                else:
                    await self._checkin(pooled)
                if sqlstate == _UNIQUE_VIOLATION:
                    raise _Duplicate from error
                if await attempts.after_serialization_failure(sqlstate):
                    continue
                raise _failed(error) from error
            except BaseException:
                # Cancelled mid-statement: the connection's state is unknown; drop it.
                pooled.invalidate()
                raise
            await self._checkin(pooled)
            return result

    async def _checkout(self) -> Any:
        """A pooled connection: one the backend holds if it has one, else from the pool."""
        pool = self.engine.sync_engine.pool
        if self._held_pool is not pool:  # first use, or the engine was disposed meanwhile
            stale, self._held, self._held_pool = self._held, [], pool
            for pooled in stale:
                pooled.invalidate()  # outside a greenlet: closes at once, no I/O
        held = self._held
        while held:
            pooled = held.pop()
            if not pooled.driver_connection.is_closed():
                return pooled
            pooled.invalidate()  # the server closed it while idle: replace it
        return await self.engine.raw_connection()

    async def _checkin(self, pooled: Any) -> None:
        if len(self._held) < self._keep and self._held_pool is self.engine.sync_engine.pool:
            self._held.append(pooled)
        else:
            await greenlet_spawn(pooled.close)

    # -- the Backend protocol -----------------------------------------------------------

    async def _count(self, name: str, params: dict[str, Any], *, idempotent: bool) -> int:
        """Run the statement ``name``; return how many rows it changed."""
        direct = self._direct_statement(name)
        if direct is not None:
            count: int = await self._run_direct(direct, params, idempotent=idempotent, fetch=False)
            return count
        result = await self._execute(getattr(self, name), params, idempotent=idempotent)
        return result.rowcount

    async def create(self, id_hash: bytes, record: Record) -> bool:
        params = {
            "p_id": id_hash,
            "p_data": record.data,
            "p_expires": record.expires_at,
            "p_created": record.created_at,
            "p_version": record.version,
            "p_principal": record.principal,
            "p_auth": record.authenticated_at,
        }
        try:
            return await self._count("_insert", params, idempotent=False) == 1
        except _Duplicate as error:
            if self._insert_ignores_conflict:  # ON CONFLICT DO NOTHING: another constraint
                raise StoreUnavailableError("session insert failed") from error.__cause__
            return False

    async def read(self, id_hash: bytes) -> Record | None:
        params = {"p_id": id_hash}
        direct = self._direct_statement("_select")
        if direct is not None:
            raw = await self._run_direct(direct, params, idempotent=True, fetch=True)
            if raw is None:
                return None
            created_at = _from_micros(raw[2])
            assert created_at is not None
            return Record(
                raw[0], raw[1], created_at, _from_micros(raw[3]), raw[4], _from_micros(raw[5])
            )
        row = (await self._execute(self._select, params, idempotent=True)).first()
        if row is None:
            return None
        return Record(row[0], row[1], row[2], row[3], row[4], row[5])

    async def update(
        self,
        id_hash: bytes,
        expected_version: int,
        data: bytes,
        expires_at: datetime | None,
        new_id_hash: bytes | None = None,
        sign_in: SignIn | None = None,
    ) -> UpdateOutcome:
        params: dict[str, Any] = {
            "p_id": id_hash,
            "p_version": expected_version,
            "p_data": data,
            "p_expires": expires_at,
        }
        name = "_update"
        if new_id_hash is not None:
            name = "_update_moving"
            params["p_new_id"] = new_id_hash
        if sign_in is not None:
            name += "_sign_in"
            params["p_principal"] = sign_in.principal
            params["p_auth"] = sign_in.at
        try:
            count = await self._count(name, params, idempotent=False)
        except _Duplicate as error:
            if new_id_hash is None:
                raise StoreUnavailableError("session update failed") from error.__cause__
            return UpdateOutcome.ID_TAKEN  # the statement failed as a whole: nothing written
        return UpdateOutcome.UPDATED if count == 1 else UpdateOutcome.STALE

    async def touch(self, id_hash: bytes, expires_at: datetime, now: datetime) -> bool:
        params = {"p_id": id_hash, "p_expires": expires_at, "p_now": now}
        return await self._count("_touch", params, idempotent=True) == 1

    async def delete(self, id_hash: bytes) -> bool:
        return await self._count("_delete", {"p_id": id_hash}, idempotent=True) == 1

    async def list_by_principal(self, principal: str) -> list[Listed]:
        params = {"p_principal": principal}
        direct = self._direct_statement("_list")
        if direct is not None:
            raws = await self._run_direct(direct, params, idempotent=True, fetch=True, many=True)
            return [
                Listed(raw[0], _aware(raw[1]), _from_micros(raw[2]), _from_micros(raw[3]))
                for raw in raws
            ]
        rows = (await self._execute(self._list, params, idempotent=True)).all()
        return [Listed(row[0], row[1], row[2], row[3]) for row in rows]

    async def delete_by_principal(
        self, principal: str, *, only: bytes | None = None, keep: bytes | None = None
    ) -> int:
        if only is not None and keep is not None:
            raise ValueError("give only or keep, not both")
        params: dict[str, Any] = {"p_principal": principal}
        name = "_revoke_all"
        if only is not None:
            name, params["p_id"] = "_revoke_one", only
        elif keep is not None:
            name, params["p_id"] = "_revoke_others", keep
        return await self._count(name, params, idempotent=True)

    async def purge(self, now: datetime, batch_size: int) -> int:
        params = {"p_now": now, "p_limit": batch_size}
        return await self._count("_purge", params, idempotent=True)

    async def clear(self) -> None:
        await self._count("_clear", {}, idempotent=True)


class _Attempts:
    """What one operation may still retry: serialization failures, and one reconnect."""

    __slots__ = ("idempotent", "reconnected", "serialization_failures")

    def __init__(self, idempotent: bool) -> None:
        self.idempotent = idempotent
        self.reconnected = False
        self.serialization_failures = 0

    async def after_serialization_failure(self, sqlstate: object) -> bool:
        """Whether to run the statement again (after a short backoff)."""
        if sqlstate != _SERIALIZATION_FAILURE:
            return False
        if self.serialization_failures >= _SERIALIZATION_RETRIES:
            return False
        self.serialization_failures += 1
        await asyncio.sleep(0.001 * 2**self.serialization_failures)
        return True

    def reconnect(self) -> bool:
        """Whether to run the statement again on a fresh connection after a disconnect."""
        if not self.idempotent or self.reconnected:
            return False
        self.reconnected = True
        return True


def _failed(error: object) -> StoreUnavailableError:
    return StoreUnavailableError(f"session store failed: {type(error).__name__}")


def _unavailable(error: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(f"session store unavailable: {type(error).__name__}")


class _Duplicate(Exception):
    """The direct path hit a unique violation (the new id of a rotation, or a create)."""


@dataclass(frozen=True, slots=True)
class _Direct:
    """A statement compiled once to the driver's SQL, with its parameters in order."""

    sql: str
    names: tuple[str, ...]
    times: tuple[bool, ...]

    @classmethod
    def compile(cls, statement: Any, dialect: Dialect) -> _Direct:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        if not all(name.startswith("p_") for name in names):
            raise AssertionError(f"unexpected parameter in {compiled}")  # pragma: no cover
        return cls(str(compiled), names, tuple(name in _TIME_PARAMS for name in names))

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        return [
            _to_micros(params[name]) if is_time else params[name]
            for name, is_time in zip(self.names, self.times, strict=True)
        ]


def _to_micros(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("session timestamps must be timezone-aware")
    return (value - _EPOCH) // _MICROSECOND


def _from_micros(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _aware(value: int) -> datetime:
    """A NOT NULL timestamp column's value."""
    return _EPOCH + timedelta(microseconds=value)
