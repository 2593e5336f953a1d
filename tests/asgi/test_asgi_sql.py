"""The middleware on the real SQL backend (SQLite file, PostgreSQL), counting statements."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from tests.asgi_apps import APP_FACTORIES, Cart
from tests.clock import FakeClock
from tests.sql_backends import SqlTarget
from typed_session_sql import SessionStore, SqlBackend
from typed_session_sql.asgi import CookieSettings

pytestmark = pytest.mark.anyio

# SQLAlchemy's executor: the statements are counted by a cursor listener attached later.
SQL_BACKENDS: dict[str, Callable[[], AbstractAsyncContextManager[SqlBackend]]] = {
    "sqlite": SqlTarget("sqlite", "sqlalchemy").open,
    "postgres": SqlTarget("postgres", "sqlalchemy").open,
}
SET_COOKIE = re.compile(r"__Host-id=([A-Za-z0-9_-]{43}); Path=/; Secure; HttpOnly; SameSite=Lax")


@dataclass
class SqlSite:
    client: httpx.AsyncClient
    backend: SqlBackend
    statements: list[str]

    async def send(self, method: str, path: str, cookie: str | None = None) -> httpx.Response:
        headers = {} if cookie is None else {"cookie": f"__Host-id={cookie}"}
        response = await self.client.request(method, path, headers=headers)
        self.client.cookies.clear()
        return response

    async def signed_in(self) -> str:
        match = SET_COOKIE.fullmatch((await self.send("POST", "/login")).headers["set-cookie"])
        assert match is not None
        self.statements.clear()
        return match.group(1)

    @asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        """The sessions table is gone for a while (a deploy that forgot to migrate, a restore
        half done): every statement fails in the database."""
        name = self.backend.table.name
        async with self.backend.engine.connect() as conn:
            await conn.execute(text(f'ALTER TABLE "{name}" RENAME TO "{name}_away"'))
        try:
            yield
        finally:
            async with self.backend.engine.connect() as conn:
                await conn.execute(text(f'ALTER TABLE "{name}_away" RENAME TO "{name}"'))
            self.statements.clear()


@pytest.fixture(params=sorted(APP_FACTORIES))
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(SQL_BACKENDS))
async def sql_site(
    request: pytest.FixtureRequest, framework: str, clock: FakeClock
) -> AsyncIterator[SqlSite]:
    async with SQL_BACKENDS[request.param]() as backend:
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement.split()[0].upper())

        event.listen(backend.engine.sync_engine, "before_cursor_execute", record)
        store = SessionStore(Cart, backend, clock=clock)
        app = APP_FACTORIES[framework](store, CookieSettings())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            yield SqlSite(client, backend, statements)


async def test_requests_that_do_not_need_the_database_send_no_statement(sql_site: SqlSite) -> None:
    cookie = await sql_site.signed_in()
    assert (await sql_site.send("GET", "/untouched", cookie)).text == "ok"
    assert (await sql_site.send("GET", "/show")).text == "user=None items=0"
    assert (await sql_site.send("GET", "/show", "not-an-id")).text == "user=None items=0"
    assert sql_site.statements == []


async def test_each_request_costs_the_statements_it_needs_and_no_more(sql_site: SqlSite) -> None:
    cookie = await sql_site.signed_in()
    assert (await sql_site.send("GET", "/show", cookie)).text == "user=ada items=0"
    assert sql_site.statements == ["SELECT"]
    sql_site.statements.clear()
    assert (await sql_site.send("POST", "/add", cookie)).text == "added"
    assert sql_site.statements == ["SELECT", "UPDATE"]
    sql_site.statements.clear()
    created = await sql_site.send("POST", "/add")
    assert SET_COOKIE.fullmatch(created.headers["set-cookie"])
    assert sql_site.statements == ["INSERT"]


async def test_rotation_and_sign_out_on_sql(sql_site: SqlSite) -> None:
    cookie = await sql_site.signed_in()
    rotated = await sql_site.send("POST", "/login", cookie)
    match = SET_COOKIE.fullmatch(rotated.headers["set-cookie"])
    assert match is not None
    assert match.group(1) != cookie
    assert (await sql_site.send("GET", "/show", cookie)).text == "user=None items=0"
    out = await sql_site.send("POST", "/logout", match.group(1))
    assert out.headers["set-cookie"].startswith("__Host-id=; Max-Age=0;")
    assert (await sql_site.send("GET", "/show", match.group(1))).text == "user=None items=0"


async def test_a_missing_table_is_a_500_and_service_resumes_when_it_is_back(
    sql_site: SqlSite,
) -> None:
    # Not a 503: retrying in a few seconds meets the same missing table (tests/
    # test_asgi_failures.py has the 503 of a database that does not answer).
    cookie = await sql_site.signed_in()
    async with sql_site.outage():
        for method, path, sent in [("GET", "/show", cookie), ("POST", "/add", None)]:
            response = await sql_site.send(method, path, sent)
            assert response.status_code == 500
            assert "retry-after" not in response.headers
            assert "set-cookie" not in response.headers
            assert "Traceback" not in response.text
    assert (await sql_site.send("POST", "/add", cookie)).status_code == 200
    assert (await sql_site.send("GET", "/show", cookie)).text == "user=ada items=1"
