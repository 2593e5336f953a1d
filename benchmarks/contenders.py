"""What is measured: the store and the raw drivers, on PostgreSQL, SQLite and MariaDB.

Every contender does the same two operations on sessions seeded beforehand:

- **load**: read a session by its key and one field of its data (and, for the store, the
  ``save`` a request ends with, which writes nothing for an untouched session);
- **load+save**: load, add one to a counter in the data, save.

The store runs only through its public API (``SqlBackend.from_url``, ``SqlBackend(engine)``,
``SessionStore``), so this file runs unchanged whatever the backend does inside. The raw
drivers run the statements the store's documented table and protocol imply (a primary-key
SELECT of the row; for load+save also the UPDATE guarded by the version it read), on ids
already hashed: no cookie check, no hashing, no decoding, no change detection. They are the
floor a Python session store cannot beat.

The peers (Django, Flask-Session, advanced-alchemy, starsessions) are in ``peers.py``.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiosqlite
import asyncmy
import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.wire import TracedConnection
from typed_session_sql import SessionStore, SetCookie, SqlBackend

CONCURRENCY_MAX = 16


@dataclass
class Visitor:
    """The session data: a typical small session, ~170 bytes as JSON."""

    user_id: int = 0
    name: str = ""
    email: str = ""
    roles: list[str] = field(default_factory=list)
    cart: list[int] = field(default_factory=list)
    csrf: str = ""
    counter: int = 0


def visitor(i: int) -> Visitor:
    return Visitor(
        user_id=i,
        name=f"Visitor {i:06d}",
        email=f"visitor{i:06d}@example.com",
        roles=["reader", "writer"],
        cart=[101, 202, 303, 404, 505],
        csrf=f"{i:032x}",
    )


def visitor_dict(i: int) -> dict[str, Any]:
    """The same data as a dict, for the stores that keep dicts."""
    v = visitor(i)
    return {
        "user_id": v.user_id,
        "name": v.name,
        "email": v.email,
        "roles": v.roles,
        "cart": v.cart,
        "csrf": v.csrf,
        "counter": v.counter,
    }


@dataclass(frozen=True)
class Endpoints:
    """Where a contender connects: straight to the servers, or (``counted``) through the
    counting proxies and traced SQLite connections of ``tests/support/wire.py``."""

    pg_host: str
    pg_port: int
    pg_user: str
    pg_database: str
    redis_host: str
    redis_port: int
    sqlite_path: Path
    counted: bool = False
    mariadb_host: str = ""  # "": no MariaDB server in this run
    mariadb_port: int = 3306
    mariadb_user: str = "root"
    mariadb_database: str = "test"

    def pg_url(self, driver: str = "asyncpg") -> str:
        return (
            f"postgresql+{driver}://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.pg_database}"
        )

    @property
    def pg_dsn(self) -> str:
        return f"postgresql://{self.pg_user}@{self.pg_host}:{self.pg_port}/{self.pg_database}"

    @property
    def sqlite_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.sqlite_path}"

    @property
    def mariadb_url(self) -> str:
        return (
            f"mysql+asyncmy://{self.mariadb_user}@{self.mariadb_host}:{self.mariadb_port}"
            f"/{self.mariadb_database}"
        )

    @property
    def mariadb_params(self) -> dict[str, Any]:
        """asyncmy's connect() arguments, in autocommit as the store runs."""
        return {
            "host": self.mariadb_host,
            "port": self.mariadb_port,
            "user": self.mariadb_user,
            "database": self.mariadb_database,
            "autocommit": True,
        }


@dataclass
class Shared:
    """What the timed instances' seeding leaves for the counted ones (and the store's for
    the raw drivers): the store's table, and each contender's session keys by its key."""

    table: str
    sessions: int
    keys: dict[str, list[str]] = field(default_factory=dict)
    redis_prefix: str = ""
    mariadb_table: str = ""  # on the shared MariaDB server: a name of the run's own


class Contender(abc.ABC):
    """One way of loading and saving sessions. Subclasses set the class attributes."""

    key: ClassVar[str]  # stable id in results.json
    label: ClassVar[str]  # what the tables call it
    server: ClassVar[str] = "postgres"  # "postgres", "sqlite", "mariadb" or "redis"
    threaded: ClassVar[bool] = False  # load/modify are blocking, run in threads
    pool: ThreadPoolExecutor | None = None
    keys: int = 0  # how many sessions its load/modify cycle through

    @abc.abstractmethod
    async def open(self, at: Endpoints, shared: Shared) -> None:
        """Connect; a counted instance reuses the sessions the timed one seeded."""

    async def seed(self, shared: Shared) -> None:  # noqa: B027 (most contenders seed)
        """Create ``shared.sessions`` sessions for this contender's load and modify."""

    # (worker, key index) -> None; async unless ``threaded``.
    load: Any
    modify: Any

    async def close(self) -> None:
        return None

    async def threads(self, call: Any, *args: Any) -> Any:
        """Run a blocking call on this contender's thread pool (threaded contenders)."""
        assert self.pool is not None
        return await asyncio.get_running_loop().run_in_executor(self.pool, call, *args)


async def save_concurrently(store: SessionStore[Visitor], count: int, first: int = 0) -> list[str]:
    """Save ``count`` new sessions through the store, 16 at a time; their cookies, in order."""
    cookies = [""] * count

    async def saver(w: int) -> None:
        for i in range(w, count, CONCURRENCY_MAX):
            result = await store.save(store.new(visitor(first + i)))
            assert isinstance(result, SetCookie)
            cookies[i] = result.value

    await asyncio.gather(*(saver(w) for w in range(CONCURRENCY_MAX)))
    return cookies


async def load_once(store: SessionStore[Visitor], cookie: str) -> None:
    """Load a session, read a field, and end as a request does: save (nothing to write)."""
    session = await store.load(cookie)
    assert session is not None
    assert session.data.counter >= 0
    await store.save(session)


async def modify_once(store: SessionStore[Visitor], cookie: str) -> None:
    """Load a session, add one to its counter, save."""
    session = await store.load(cookie)
    assert session is not None
    session.data.counter += 1
    await store.save(session)


def floor_statements(table: str, placeholder: Callable[[int], str]) -> tuple[str, str]:
    """The store's two statements as its documented table and protocol imply them: the
    primary-key SELECT of the row, and the UPDATE guarded by the version read."""
    p = placeholder
    select = (
        "SELECT data, version, created_at, expires_at, principal, authenticated_at"
        f" FROM {table} WHERE id_hash = {p(1)}"
    )
    update = (
        f"UPDATE {table} SET data = {p(1)}, expires_at = {p(2)}, version = version + 1"
        f" WHERE id_hash = {p(3)} AND version = {p(4)}"
    )
    return select, update


class _Store(Contender):
    """SessionStore over a SqlBackend; subclasses say how the backend is made."""

    store: SessionStore[Visitor]
    backend: SqlBackend
    cookies: list[str]

    @abc.abstractmethod
    def make_backend(self, at: Endpoints, shared: Shared) -> SqlBackend: ...

    seeds: ClassVar[str] = "store"  # whose cookies it loads

    async def open(self, at: Endpoints, shared: Shared) -> None:
        self.backend = self.make_backend(at, shared)
        self.store = SessionStore(Visitor, self.backend)
        self.cookies = shared.keys.setdefault(self.seeds, [])
        self.keys = shared.sessions

    async def load(self, w: int, k: int) -> None:
        await load_once(self.store, self.cookies[k])

    async def modify(self, w: int, k: int) -> None:
        await modify_once(self.store, self.cookies[k])

    async def close(self) -> None:
        await self.backend.dispose()


class StoreOwnEngine(_Store):
    key = "store"
    label = "typed-session-sql, own engine (`SqlBackend.from_url`)"

    def make_backend(self, at: Endpoints, shared: Shared) -> SqlBackend:
        return SqlBackend.from_url(at.pg_url(), table_name=shared.table, pool_size=CONCURRENCY_MAX)

    async def seed(self, shared: Shared) -> None:
        await self.backend.create_schema()
        self.cookies[:] = await save_concurrently(self.store, shared.sessions)


class StoreAppEngine(_Store):
    key = "store-app-engine"
    label = "typed-session-sql, app's engine (`SqlBackend(engine)`)"

    def make_backend(self, at: Endpoints, shared: Shared) -> SqlBackend:
        # An application's engine as create_async_engine makes it: its pool's defaults
        # (reset on return included), sized for the concurrency.
        engine = create_async_engine(at.pg_url(), pool_size=CONCURRENCY_MAX)
        self.engine = engine
        return SqlBackend(engine, table_name=shared.table)

    async def close(self) -> None:
        await self.engine.dispose()


class _RawAsyncpg(Contender):
    """The floor on PostgreSQL: asyncpg running the store's two statements on hashed ids."""

    hashes: list[bytes]
    select_sql: str
    update_sql: str

    async def open(self, at: Endpoints, shared: Shared) -> None:
        t = shared.table
        self.select_sql, self.update_sql = floor_statements(t, lambda n: f"${n}")
        await self.connect(at.pg_dsn)
        rows = await self.fetch(f"SELECT id_hash FROM {t} ORDER BY id_hash")
        self.hashes = [row[0] for row in rows][: shared.sessions]
        self.keys = len(self.hashes)

    @abc.abstractmethod
    async def connect(self, dsn: str) -> None: ...

    @abc.abstractmethod
    async def fetch(self, sql: str) -> list[Any]: ...

    @abc.abstractmethod
    def connection(self, w: int) -> Any:
        """What worker ``w`` runs its statements on: the pool, or its own connection."""

    async def load(self, w: int, k: int) -> None:
        row = await self.connection(w).fetchrow(self.select_sql, self.hashes[k])
        assert row is not None

    async def modify(self, w: int, k: int) -> None:
        on = self.connection(w)
        h = self.hashes[k]
        row = await on.fetchrow(self.select_sql, h)
        status = await on.execute(self.update_sql, row[0], row[3], h, row[1])
        assert status == "UPDATE 1"


async def _no_reset(connection: Any) -> None:
    return None


class AsyncpgPool(_RawAsyncpg):
    key = "asyncpg-pool"
    label = "raw asyncpg, its pool (reset off)"

    async def connect(self, dsn: str) -> None:
        self.pool_ = await asyncpg.create_pool(
            dsn, min_size=CONCURRENCY_MAX, max_size=CONCURRENCY_MAX, reset=_no_reset
        )

    async def fetch(self, sql: str) -> list[Any]:
        rows: list[Any] = await self.pool_.fetch(sql)
        return rows

    def connection(self, w: int) -> Any:
        return self.pool_

    async def close(self) -> None:
        await self.pool_.close()


class AsyncpgConnections(_RawAsyncpg):
    key = "asyncpg-conn"
    label = "raw asyncpg, a connection per worker"

    async def connect(self, dsn: str) -> None:
        self.conns = [await asyncpg.connect(dsn) for _ in range(CONCURRENCY_MAX)]

    async def fetch(self, sql: str) -> list[Any]:
        rows: list[Any] = await self.conns[0].fetch(sql)
        return rows

    def connection(self, w: int) -> Any:
        return self.conns[w]

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


class StoreSqlite(_Store):
    key = "store-sqlite"
    label = "typed-session-sql on SQLite (`SqlBackend.from_url`)"
    server = "sqlite"

    def make_backend(self, at: Endpoints, shared: Shared) -> SqlBackend:
        options: dict[str, Any] = {"pool_size": CONCURRENCY_MAX}
        if at.counted:
            options["connect_args"] = {"factory": TracedConnection}
        return SqlBackend.from_url(at.sqlite_url, table_name=shared.table, **options)

    seeds = "store-sqlite"

    async def seed(self, shared: Shared) -> None:
        await self.backend.create_schema()
        self.cookies[:] = await save_concurrently(self.store, shared.sessions)


class AiosqliteConnections(Contender):
    """The floor on SQLite: aiosqlite, a connection per worker, the store's statements with
    the store's pragmas (read back from a store connection), on hashed ids."""

    key = "aiosqlite"
    label = "raw aiosqlite, a connection per worker"
    server = "sqlite"

    async def open(self, at: Endpoints, shared: Shared) -> None:
        t = shared.table
        self.select_sql, self.update_sql = floor_statements(t, lambda n: "?")
        pragmas = await _store_pragmas(at, shared.table)
        kwargs: dict[str, Any] = {"isolation_level": None}
        if at.counted:
            kwargs["factory"] = TracedConnection
        self.conns: list[aiosqlite.Connection] = []
        for _ in range(CONCURRENCY_MAX):
            conn = await aiosqlite.connect(at.sqlite_path, **kwargs)
            for pragma in pragmas:
                await conn.execute(pragma)
            self.conns.append(conn)
        rows = await self.conns[0].execute_fetchall(f"SELECT id_hash FROM {t} ORDER BY id_hash")
        self.hashes: list[bytes] = [row[0] for row in rows][: shared.sessions]
        self.keys = len(self.hashes)

    async def load(self, w: int, k: int) -> None:
        rows = await self.conns[w].execute_fetchall(self.select_sql, (self.hashes[k],))
        assert len(list(rows)) == 1

    async def modify(self, w: int, k: int) -> None:
        conn, h = self.conns[w], self.hashes[k]
        (row,) = await conn.execute_fetchall(self.select_sql, (h,))
        cursor = await conn.execute(self.update_sql, (row[0], row[3], h, row[1]))
        assert cursor.rowcount == 1

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()


async def _store_pragmas(at: Endpoints, table: str) -> list[str]:
    """The busy timeout and synchronous level a connection of the store's engine runs with,
    as statements for another connection (journal_mode is the file's, already WAL)."""
    backend = SqlBackend.from_url(at.sqlite_url, table_name=table)
    try:
        async with backend.engine.connect() as conn:
            timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
            synchronous = (await conn.execute(text("PRAGMA synchronous"))).scalar_one()
    finally:
        await backend.dispose()
    return [f"PRAGMA busy_timeout = {int(timeout)}", f"PRAGMA synchronous = {int(synchronous)}"]


class StoreMariadb(_Store):
    """The store on MariaDB; its engine runs statements prepared (asyncmy's cache)."""

    key = "store-mariadb"
    label = "typed-session-sql on MariaDB (`SqlBackend.from_url`)"
    server = "mariadb"
    seeds = "store-mariadb"
    execution: ClassVar[str] = "auto"  # the driver executor, asyncmy

    def make_backend(self, at: Endpoints, shared: Shared) -> SqlBackend:
        return SqlBackend.from_url(
            at.mariadb_url,
            table_name=shared.mariadb_table,
            pool_size=CONCURRENCY_MAX,
            execution=self.execution,  # type: ignore[arg-type]
        )

    async def seed(self, shared: Shared) -> None:
        await self.backend.create_schema()
        self.cookies[:] = await save_concurrently(self.store, shared.sessions)


class StoreMariadbSqlAlchemy(StoreMariadb):
    """The same sessions through SQLAlchemy's execution: what the driver executor saves."""

    key = "store-mariadb-sqlalchemy"
    label = "typed-session-sql on MariaDB, SQLAlchemy's executor"
    execution = "sqlalchemy"

    async def seed(self, shared: Shared) -> None:
        return None  # StoreMariadb's sessions


class _RawAsyncmy(Contender):
    """The floor on MariaDB: asyncmy running the store's two statements on hashed ids."""

    server = "mariadb"
    hashes: list[bytes]
    select_sql: str
    update_sql: str

    async def open(self, at: Endpoints, shared: Shared) -> None:
        t = shared.mariadb_table
        self.select_sql, self.update_sql = floor_statements(t, lambda n: "%s")
        await self.connect(at.mariadb_params)
        rows = await self.run(0, f"SELECT id_hash FROM {t} ORDER BY id_hash", None)
        self.hashes = [row[0] for row in rows][: shared.sessions]
        self.keys = len(self.hashes)

    @abc.abstractmethod
    async def connect(self, params: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def run(self, w: int, sql: str, args: tuple[Any, ...] | None) -> Any:
        """Run ``sql`` for worker ``w``: a query's rows, or a write's row count."""

    async def load(self, w: int, k: int) -> None:
        rows = await self.run(w, self.select_sql, (self.hashes[k],))
        assert len(rows) == 1

    async def modify(self, w: int, k: int) -> None:
        h = self.hashes[k]
        (row,) = await self.run(w, self.select_sql, (h,))
        assert await self.run(w, self.update_sql, (row[0], row[3], h, row[1])) == 1


async def _on(conn: Any, sql: str, args: tuple[Any, ...] | None) -> Any:
    """One statement on an asyncmy connection, as the text protocol runs it."""
    cursor = conn.cursor()
    count = await cursor.execute(sql, args)
    return await cursor.fetchall() if sql.startswith("SELECT") else count


class AsyncmyPool(_RawAsyncmy):
    key = "asyncmy-pool"
    label = "raw asyncmy, its pool"

    async def connect(self, params: dict[str, Any]) -> None:
        self.pool_ = await asyncmy.create_pool(
            minsize=CONCURRENCY_MAX, maxsize=CONCURRENCY_MAX, **params
        )

    async def run(self, w: int, sql: str, args: tuple[Any, ...] | None) -> Any:
        async with self.pool_.acquire() as conn:
            return await _on(conn, sql, args)

    async def close(self) -> None:
        self.pool_.close()
        await self.pool_.wait_closed()


class AsyncmyConnections(_RawAsyncmy):
    key = "asyncmy-conn"
    label = "raw asyncmy, a connection per worker"

    async def connect(self, params: dict[str, Any]) -> None:
        self.conns = [await asyncmy.connect(**params) for _ in range(CONCURRENCY_MAX)]

    async def run(self, w: int, sql: str, args: tuple[Any, ...] | None) -> Any:
        return await _on(self.conns[w], sql, args)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.ensure_closed()


class AsyncmyPrepared(AsyncmyConnections):
    """The same with asyncmy's prepared-statement cache, as the store's engine runs it."""

    key = "asyncmy-prepared"
    label = "raw asyncmy, a connection per worker, prepared statements"

    async def connect(self, params: dict[str, Any]) -> None:
        await super().connect({**params, "stmt_cache_size": 32})
