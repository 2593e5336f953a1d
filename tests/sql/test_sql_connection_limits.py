"""Held connections on a server that lets the backend open fewer than it holds.

A role of the test's own with ``CONNECTION LIMIT 2`` on the shared server: the server
refuses its third connection ("too many connections for role"), as a full server refuses
any. A backend that holds five serves every statement on the two it got, the others
waiting for those, rather than failing them, and asks for more only once a second
(tests/production/test_connections.py does the same against a server whose
``max_connections`` is reached).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from tests.sql_backends import on_the_server, require_postgres, unique_name
from typed_session_sql import SqlBackend, StoreUnavailableError
from typed_session_sql.backends.sql import connections as connections_module

pytestmark = pytest.mark.anyio

LIMIT = 2
ROW = b"\0" * 32


@pytest.fixture(params=["asyncpg", "psycopg"])
async def limited(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The URL of a role the server lets open LIMIT connections, with a session table of
    its own (in ``SqlBackend``'s default name would collide: a random one, granted)."""
    role, table = unique_name("limited"), unique_name("sessions")
    owner = SqlBackend.from_url(require_postgres(), table_name=table)
    try:
        await owner.create_schema()
        await on_the_server(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {LIMIT}')
        await on_the_server(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}" TO "{role}"')
        url = make_url(require_postgres()).set(
            drivername=f"postgresql+{request.param}", username=role
        )
        yield f"{url.render_as_string(hide_password=False)}#{table}"
    finally:
        async with owner.engine.begin() as conn:
            await conn.run_sync(owner.metadata.drop_all)
        await owner.dispose()
        await on_the_server(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = :role",
            role=role,
        )
        await on_the_server(f'DROP ROLE IF EXISTS "{role}"')


class Monotonic:
    """The connections module's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_statements_wait_for_the_connections_there_are_instead_of_failing(
    limited: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Monotonic()
    monkeypatch.setattr(connections_module, "monotonic", clock)
    url, table = limited.split("#")
    backend = SqlBackend.from_url(url, table_name=table, pool_size=6, max_overflow=0)
    attempts: list[object] = []
    event.listen(backend.engine.sync_engine, "do_connect", lambda *args: attempts.append(args))

    async def burst() -> list[object]:
        return await asyncio.gather(*(backend.read(ROW) for _ in range(20)), return_exceptions=True)

    try:
        assert "held_connections=5" in repr(backend)
        first = await burst()
        after_first = len(attempts)
        second = await burst()  # within a second of the refusals: no more asking
        after_second = len(attempts)
        clock.now += 1.0
        third = await burst()  # a second later: asks again (and is refused again)
    finally:
        await backend.dispose()
    for reads in (first, second, third):
        assert [r for r in reads if isinstance(r, StoreUnavailableError)] == []
        assert reads == [None] * 20
    assert after_first == 5, attempts  # each held connection asked for once: 2 given, 3 refused
    assert after_second == after_first
    assert len(attempts) > after_second
