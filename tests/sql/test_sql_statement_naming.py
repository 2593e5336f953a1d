"""``prepared_statements=false`` in the URL: no driver names a statement, and a statement
missing on its server connection is an error that names the setting.

A pooler in transaction mode that does not track prepared statements (PgBouncer before
1.21) may run a client's next statement on another server connection: a statement the
driver named and prepared on the first is not there. These tests do to a direct connection
what such a pooler does (``DEALLOCATE ALL`` on it), and look at what the server holds
(``pg_prepared_statements``); tests/production/test_pgbouncer.py does it through PgBouncer.

Each backend has one connection (``pool_size=1``, none held), so the test's own look at the
server runs on the connection the backend's statements ran on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.models import Cart
from tests.sql_backends import Execution, require_postgres, unique_name
from typed_session_sql import SessionStore, SetCookie, SqlBackend, StoreUnavailableError
from typed_session_sql.backends.sql import create_engine

pytestmark = pytest.mark.anyio

EVERY_PATH = pytest.mark.parametrize(
    ("driver", "execution"),
    [
        (driver, execution)
        for driver in ("asyncpg", "psycopg")
        for execution in ("driver", "sqlalchemy")
    ],
    ids=lambda value: str(value),
)
RUNS = 8  # psycopg prepares a statement on its 5th run, by default


def url_for(driver: str, query: str = "") -> str:
    url = require_postgres().replace("+asyncpg://", f"+{driver}://", 1)
    return url + (("&" if "?" in url else "?") + query if query else "")


@asynccontextmanager
async def one_connection(url: str, execution: Execution) -> AsyncIterator[SqlBackend]:
    backend = SqlBackend.from_url(
        url,
        table_name=unique_name("sessions"),
        execution=execution,
        held_connections=0,
        pool_size=1,
        max_overflow=0,
    )
    try:
        await backend.create_schema()
        yield backend
    finally:
        async with backend.engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
        await backend.dispose()


async def simple_query(backend: SqlBackend, sql: str) -> list[Any]:
    """``sql`` by the simple query protocol (nothing prepared) on the backend's connection."""
    pooled = await backend.engine.raw_connection()
    try:
        driver = pooled.driver_connection
        if backend.engine.dialect.driver == "asyncpg":
            rows: list[Any] = await driver.fetch(sql)  # type: ignore[union-attr]
        else:
            cursor = await driver.execute(sql, prepare=False)  # type: ignore[union-attr]
            rows = await cursor.fetchall() if cursor.description else []
        return [tuple(row) for row in rows]
    finally:
        pooled.close()


async def forget_prepared_statements(backend: SqlBackend) -> None:
    """``DEALLOCATE ALL`` on the backend's connection, behind the driver's back (psycopg
    notices a DEALLOCATE run through it, and forgets its own)."""
    await simple_query(backend, "DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$")


async def busy_store(backend: SqlBackend) -> tuple[SessionStore[Cart], str]:
    """A store whose statements (create, load, save) have each run RUNS times."""
    store = SessionStore(Cart, backend)
    cookie = ""
    for n in range(RUNS):
        saved = await store.save(store.new(Cart(items=[n])))
        assert isinstance(saved, SetCookie)
        cookie = saved.value
        session = await store.load(cookie)
        assert session is not None
        session.data.items.append(n)
        await store.save(session)
    return store, cookie


async def named_statements(backend: SqlBackend) -> list[str]:
    """The statements on the session table the server holds prepared for the connection."""
    rows = await simple_query(backend, "SELECT statement FROM pg_prepared_statements")
    return [row[0] for row in rows if backend.table.name in row[0]]


@EVERY_PATH
async def test_with_prepared_statements_false_no_statement_is_named(
    driver: str, execution: Execution
) -> None:
    async with one_connection(url_for(driver), execution) as backend:
        await busy_store(backend)
        by_default = await named_statements(backend)
    async with one_connection(url_for(driver, "prepared_statements=false"), execution) as backend:
        await busy_store(backend)
        unnamed = await named_statements(backend)
    assert by_default  # each driver names its statements unless told not to
    assert unnamed == []


@EVERY_PATH
async def test_a_statement_missing_on_the_connection_is_an_error_naming_the_setting(
    driver: str, execution: Execution
) -> None:
    async with one_connection(url_for(driver), execution) as backend:
        store, cookie = await busy_store(backend)
        # What a pooler in transaction mode does: the next statement runs on a server
        # connection that never prepared it.
        await forget_prepared_statements(backend)
        with pytest.raises(StoreUnavailableError) as caught:
            await store.load(cookie)
    assert "prepared_statements=false" in str(caught.value)
    assert getattr(caught.value.__cause__, "sqlstate", None) == "26000"


@EVERY_PATH
async def test_unnamed_statements_survive_what_a_pooler_does(
    driver: str, execution: Execution
) -> None:
    async with one_connection(url_for(driver, "prepared_statements=false"), execution) as backend:
        store, cookie = await busy_store(backend)
        await forget_prepared_statements(backend)
        assert await store.load(cookie) is not None


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_a_prepared_statements_value_that_is_not_a_boolean_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="prepared_statements in the URL must be true or false"):
        create_engine(url_for("asyncpg", f"prepared_statements={value}"))


def test_the_setting_is_the_engines_not_the_drivers() -> None:
    """The driver never sees the parameter (asyncpg would refuse it); connect_args given
    with the URL win over what it implies."""
    engine = create_engine(
        url_for("psycopg", "prepared_statements=off"), connect_args={"prepare_threshold": 3}
    )
    assert "prepared_statements" not in engine.url.query
    assert create_engine(url_for("asyncpg", "prepared_statements=true")).url.query == {}
