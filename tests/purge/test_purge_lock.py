"""The PostgreSQL purge lock: a transaction-level advisory lock in a transaction held open
for the pass, which works behind a pooler in transaction mode too
(tests/production/test_pgbouncer.py), and keeps nothing from VACUUM meanwhile."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.sql_backends import on_the_server, require_postgres, unique_name
from typed_session_sql import SqlBackend
from typed_session_sql.backends.sql.locks import lock_key

pytestmark = pytest.mark.anyio

DRIVERS = ["asyncpg", "psycopg"]


@pytest.fixture(params=DRIVERS)
async def named_backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SqlBackend, str]]:
    """A backend (asyncpg or psycopg) whose connections carry a unique application_name."""
    driver, name = request.param, unique_name("purger")
    connect_args = (
        {"server_settings": {"application_name": name}}
        if driver == "asyncpg"
        else {"application_name": name}
    )
    backend = SqlBackend.from_url(
        require_postgres().replace("+asyncpg://", f"+{driver}://", 1),
        table_name=unique_name("sessions"),
        connect_args=connect_args,
    )
    try:
        yield backend, name
    finally:
        await backend.dispose()


async def server_view(name: str, key: int) -> tuple[list[tuple[str, object]], int]:
    """(state, backend_xmin) of each connection named ``name``, and how many advisory locks
    on ``key`` the server has granted, to anyone."""
    sessions = await on_the_server(
        "SELECT state, backend_xmin FROM pg_stat_activity"
        " WHERE application_name = :name AND state <> 'idle'",
        name=name,
    )
    ((locks,),) = await on_the_server(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid = :high AND objid = :low",
        high=(key >> 32) & 0xFFFFFFFF,
        low=key & 0xFFFFFFFF,
    )
    return [(state, xmin) for state, xmin in sessions], locks


async def test_the_lock_is_one_open_transaction_that_holds_no_snapshot(
    named_backend: tuple[SqlBackend, str],
) -> None:
    backend, name = named_backend
    key = lock_key(str(backend.table.fullname))
    async with backend.purge_lock() as got:
        assert got
        held = await server_view(name, key)
    after = await server_view(name, key)
    # While held: one connection, idle in its transaction, with no snapshot that would keep
    # the rows the pass deletes (or anyone else's) from VACUUM.
    assert held == ([("idle in transaction", None)], 1)
    # After: the transaction ended, and the lock with it.
    assert after == ([], 0)
