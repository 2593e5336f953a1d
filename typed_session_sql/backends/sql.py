"""The SQL backend: one table, one statement per operation, on SQLAlchemy's asyncio engine.

Every operation is a single statement run in autocommit mode: no BEGIN/COMMIT round trips,
and each statement is atomic on its own. Statements are built once per backend and reused,
so SQLAlchemy's compiled cache serves every call after the first. On asyncpg and aiosqlite
they usually skip SQLAlchemy's execution altogether (:mod:`typed_session_sql.backends.direct`).

The table and its timestamp type live in :mod:`typed_session_sql.backends.sql_table`, the
engine and the failure policy in :mod:`typed_session_sql.backends.sql_engine`; their public
names are re-exported here, where they have always been importable from.
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeAlias

from sqlalchemy import (
    Integer,
    MetaData,
    Table,
    bindparam,
    delete,
    event,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import Delete, Insert
from sqlalchemy.sql.dml import Update as UpdateStatement
from sqlalchemy.sql.selectable import Select

from typed_session_sql.backend import Listed, Record, Update, UpdateOutcome
from typed_session_sql.backends.aiosqlite_direct import AiosqliteDirect
from typed_session_sql.backends.asyncpg_direct import AsyncpgDirect
from typed_session_sql.backends.direct import DirectPath
from typed_session_sql.backends.sql_engine import (
    DEFAULT_URL,
    URL_ENV,
    Attempts,
    Duplicate,
    create_engine,
    reject_closed_connections,
    store_failed,
    store_unavailable,
)
from typed_session_sql.backends.sql_table import (
    DEFAULT_TABLE,
    EpochMicros,
    from_micros,
    from_micros_not_null,
    session_table,
)
from typed_session_sql.errors import StoreUnavailableError

if TYPE_CHECKING:
    from typed_session_sql.stats import TableStats

__all__ = [
    "DEFAULT_TABLE",
    "DEFAULT_URL",
    "URL_ENV",
    "EpochMicros",
    "SqlBackend",
    "create_engine",
    "session_table",
]

# "No lower bound" for created_at, as a value: one statement serves both cases.
_LONG_AGO = datetime(1, 1, 1, tzinfo=UTC)

_Result: TypeAlias = "CursorResult[*tuple[Any, ...]]"


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
        if not event.contains(sync_engine.pool, "checkout", reject_closed_connections):
            event.listen(sync_engine.pool, "checkout", reject_closed_connections)
        self.engine: AsyncEngine = engine
        self.metadata = MetaData()
        self.table: Table = session_table(self.metadata, table_name, schema)
        self._owns_engine = False
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

        The engine is the backend's own, so on asyncpg and aiosqlite the backend keeps up to
        ``pool_size`` idle connections checked out for itself, which spares each statement
        a trip through the pool. Others using ``backend.engine`` get the remaining (overflow)
        connections.
        """
        resolved = url if url is not None else os.environ.get(URL_ENV, DEFAULT_URL)
        backend = cls(create_engine(resolved, **engine_options), table_name, schema)
        backend._owns_engine = True
        if backend._direct is not None:
            backend._direct.keep_idle_connections()
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
        self._update: UpdateStatement = update(t).where(guard).values(changes)
        self._update_moving: UpdateStatement = update(t).where(guard).values({**changes, **moving})
        self._update_sign_in: UpdateStatement = (
            update(t).where(guard).values({**changes, **signing_in})
        )
        self._update_moving_sign_in: UpdateStatement = (
            update(t).where(guard).values({**changes, **moving, **signing_in})
        )
        self._touch: UpdateStatement = (
            update(t)
            .where(
                (c.id_hash == bindparam("p_id"))
                & (c.version == bindparam("p_version"))
                & (c.expires_at > bindparam("p_now", type_=EpochMicros))
                & (c.expires_at < bindparam("p_expires", type_=EpochMicros))
            )
            .values(expires_at=bindparam("p_expires", type_=EpochMicros))
        )
        self._delete: Delete = delete(t).where(c.id_hash == bindparam("p_id"))
        of_principal = c.principal == bindparam("p_principal")
        self._list: Select[Any] = (
            select(c.id_hash, c.created_at, c.expires_at, c.authenticated_at)
            .where(
                of_principal
                & (c.expires_at.is_(None) | (c.expires_at > bindparam("p_now", type_=EpochMicros)))
                & (c.created_at > bindparam("p_created", type_=EpochMicros))
            )
            .order_by(c.created_at.desc(), c.id_hash.desc())
            .limit(bindparam("p_limit", type_=Integer))
        )
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
        # On asyncpg and aiosqlite the same statements, compiled once more, usually run on
        # the driver itself, past SQLAlchemy's per-statement machinery.
        direct: type[DirectPath] | None = None
        if self.engine.dialect.driver == "asyncpg":
            direct = AsyncpgDirect
        elif AiosqliteDirect.suits(self.engine):
            direct = AiosqliteDirect
        self._direct: DirectPath | None = None
        if direct is not None:
            self._direct = direct(self.engine, {
                name: getattr(self, name)
                for name in (
                    "_insert", "_select", "_update", "_update_moving",
                    "_update_sign_in", "_update_moving_sign_in", "_touch", "_delete",
                    "_list", "_revoke_all", "_revoke_one", "_revoke_others", "_purge", "_clear",
                )
            })  # fmt: skip

    # -- lifecycle ----------------------------------------------------------------------

    async def create_schema(self) -> None:
        """Create the table and its index if missing. Production uses the migrations."""
        await self._release_kept()
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
        makes at start-up. Concurrent callers, in any number of processes, take turns under
        a lock (PostgreSQL advisory lock, SQLite write lock). See
        :func:`typed_session_sql.alembic_support.upgrade`."""
        from typed_session_sql.alembic_support import upgrade

        await self._release_kept()
        await upgrade(self.engine, self.table.name, self.table.schema, revision)

    async def dispose(self) -> None:
        """Close the pooled connections of an engine this backend created."""
        await self._release_kept()
        if self._owns_engine:
            await self.engine.dispose()

    async def stats(self, now: datetime) -> TableStats:
        """What the table holds at ``now``: live and expired rows, oldest expiry, size."""
        from typed_session_sql.stats import table_stats

        return await table_stats(self, now)

    def purge_lock(self) -> AbstractAsyncContextManager[bool]:
        """The cross-instance purge lock for this table; entering it yields whether it was
        taken (see :mod:`typed_session_sql.purge`)."""
        from typed_session_sql.purge import pass_lock

        return pass_lock(self)

    async def _release_kept(self) -> None:
        """Give the idle connections the direct path keeps back to the engine's pool."""
        if self._direct is not None:
            await self._direct.release_kept()

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
        # This path takes connections from the pool: don't starve it by keeping some idle.
        direct = self._direct
        if direct is not None and direct.keeps_any():
            await direct.release_kept()
        attempts = Attempts(idempotent)
        while True:
            try:
                async with self.engine.connect() as conn:
                    result: _Result = await conn.execute(statement, params)
                    return result
            except IntegrityError as error:
                raise Duplicate from error
            except DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None) or getattr(
                    error.orig, "pgcode", None
                )
                if await attempts.after_serialization_failure(sqlstate):
                    continue
                if error.connection_invalidated and attempts.reconnect():
                    continue
                raise store_failed(error.orig) from error
            except (SQLAlchemyError, OSError) as error:
                raise store_unavailable(error) from error  # refused, pool timeout, DNS, ...

    def _direct_now(self) -> DirectPath | None:
        """The direct path, if this engine has one and nothing is watching it right now."""
        direct = self._direct
        return direct if direct is not None and direct.available() else None

    # -- the Backend protocol -----------------------------------------------------------

    async def _count(self, name: str, params: dict[str, Any], *, idempotent: bool) -> int:
        """Run the statement ``name``; return how many rows it changed."""
        direct = self._direct_now()
        if direct is not None:
            return await direct.count(name, params, idempotent=idempotent)
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
        except Duplicate as error:
            if self._insert_ignores_conflict:  # ON CONFLICT DO NOTHING: another constraint
                raise StoreUnavailableError("session insert failed") from error.__cause__
            return False

    async def read(self, id_hash: bytes) -> Record | None:
        params = {"p_id": id_hash}
        direct = self._direct_now()
        if direct is not None:
            raw = await direct.fetch_row("_select", params)
            if raw is None:
                return None
            created_at = from_micros_not_null(raw[2])
            return Record(
                raw[0], raw[1], created_at, from_micros(raw[3]), raw[4], from_micros(raw[5])
            )
        row = (await self._execute(self._select, params, idempotent=True)).first()
        if row is None:
            return None
        return Record(row[0], row[1], row[2], row[3], row[4], row[5])

    async def update(self, change: Update) -> UpdateOutcome:
        params: dict[str, Any] = {
            "p_id": change.id_hash,
            "p_version": change.expected_version,
            "p_data": change.data,
            "p_expires": change.expires_at,
        }
        new_id_hash, sign_in = change.new_id_hash, change.sign_in
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
        except Duplicate as error:
            if new_id_hash is None:
                raise StoreUnavailableError("session update failed") from error.__cause__
            return UpdateOutcome.ID_TAKEN  # the statement failed as a whole: nothing written
        return UpdateOutcome.UPDATED if count == 1 else UpdateOutcome.STALE

    async def touch(
        self, id_hash: bytes, version: int, expires_at: datetime, now: datetime
    ) -> bool:
        params = {"p_id": id_hash, "p_version": version, "p_expires": expires_at, "p_now": now}
        return await self._count("_touch", params, idempotent=True) == 1

    async def delete(self, id_hash: bytes) -> bool:
        return await self._count("_delete", {"p_id": id_hash}, idempotent=True) == 1

    async def list_by_principal(
        self, principal: str, *, live_at: datetime, created_after: datetime | None, limit: int
    ) -> list[Listed]:
        params = {
            "p_principal": principal,
            "p_now": live_at,
            "p_created": created_after if created_after is not None else _LONG_AGO,
            "p_limit": limit,
        }
        direct = self._direct_now()
        if direct is not None:
            raws = await direct.fetch_rows("_list", params)
            return [
                Listed(
                    raw[0], from_micros_not_null(raw[1]), from_micros(raw[2]), from_micros(raw[3])
                )
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
