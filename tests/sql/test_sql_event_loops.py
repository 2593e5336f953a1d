"""A SQL backend used from several event loops: each gets connections of its own.

The patterns are the ones tests write: two ``TestClient``s on one app (two "devices", each
running the app on an event loop of its own, in a thread of its own, at the same time),
and a module-level ``TestClient`` that is never entered (a fresh loop for every request).
Both ran the first loop's connections on the second loop: "attached to a different loop",
and now and then a segmentation fault inside asyncpg. Every driver (asyncpg, psycopg,
asyncmy, aiosqlite) and both executors, on the app's own store, as an application makes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.from_thread
import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.mariadb.server import require_mariadb
from tests.sql_backends import require_postgres, unique_name
from typed_session_sql import EventLoopError, SessionStore, SqlBackend
from typed_session_sql.asgi import SessionMiddleware
from typed_session_sql.testing import SessionJar

ROOT = Path(__file__).resolve().parents[2]
ROW = b"\0" * 32


@dataclass
class Cart:
    items: list[int] = field(default_factory=list)


# Every driver on both executors: the URL each test makes its backend from.
DRIVERS = ["asyncpg", "psycopg", "asyncmy", "aiosqlite"]
EXECUTIONS = ["driver", "sqlalchemy"]


def url_for(driver: str, tmp_path: Path) -> str:
    if driver == "asyncpg":
        return require_postgres()
    if driver == "psycopg":
        return require_postgres().replace("+asyncpg://", "+psycopg://", 1)
    if driver == "asyncmy":
        return require_mariadb()
    return f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"


@contextmanager
def shop(
    driver: str, execution: str, tmp_path: Path
) -> Iterator[tuple[Starlette, SessionStore[Cart]]]:
    """An app as the first-week report wrote it: a backend from a URL at module level, the
    table made in the lifespan, the backend disposed at its end; the table dropped after."""
    backend = SqlBackend.from_url(
        url_for(driver, tmp_path),
        table_name=unique_name("loops"),
        execution=execution,  # type: ignore[arg-type]
    )
    store = SessionStore(Cart, backend)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.create_schema()
        yield
        await backend.dispose()

    async def cart(request: Request) -> JSONResponse:
        session = await store.session(request)
        if request.method == "POST":
            session.modify(lambda c: c.items.append(1))
        return JSONResponse({"user": session.principal, "items": len(session.data.items)})

    async def everywhere(request: Request) -> JSONResponse:
        session = await store.session(request)
        assert session.principal is not None
        return JSONResponse({"revoked": await store.sign_out_everywhere(session)})

    routes = [
        Route("/cart", cart, methods=["GET", "POST"]),
        Route("/sign-out-everywhere", everywhere, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(SessionMiddleware, store=store)
    try:
        yield app, store
    finally:

        async def drop() -> None:
            async with backend.engine.begin() as conn:
                await conn.run_sync(backend.metadata.drop_all)
            await backend.dispose()

        anyio.run(drop)


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("driver", DRIVERS)
def test_two_test_clients_on_one_app(driver: str, execution: str, tmp_path: Path) -> None:
    with (
        shop(driver, execution, tmp_path) as (app, store),
        TestClient(app) as phone,
        TestClient(app) as laptop,
    ):
        SessionJar(phone, store).set_session(Cart([7]), principal="grace")
        SessionJar(laptop, store).set_session(principal="grace")
        for _ in range(3):  # each client's loop, in turn, on the same backend
            phone.post("/cart")
            laptop.post("/cart")
        assert phone.get("/cart").json() == {"user": "grace", "items": 4}
        assert laptop.get("/cart").json() == {"user": "grace", "items": 3}
        signed_out = laptop.post("/sign-out-everywhere")
        assert signed_out.json() == {"revoked": 2}
        assert signed_out.headers["set-cookie"].startswith("__Host-id=; Max-Age=0")  # here too
        assert phone.get("/cart").json() == {"user": None, "items": 0}


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_test_client_that_is_never_entered(driver: str, execution: str, tmp_path: Path) -> None:
    # FastAPI's tutorial: `client = TestClient(app)` at module level. Each request runs on a
    # loop of its own, closed after it; no lifespan runs.
    with shop(driver, execution, tmp_path) as (app, store):
        anyio.run(store.backend.create_schema)  # type: ignore[attr-defined]
        client = TestClient(app)
        jar = SessionJar(client, store)
        jar.set_session(principal="ada")
        assert client.get("/cart").json() == {"user": "ada", "items": 0}
        jar.set_session(principal="bob")
        client.post("/cart")
        assert client.post("/cart").json() == {"user": "bob", "items": 2}


def test_an_apps_engine_is_refused_a_second_running_loop() -> None:
    # The application's engine cannot be copied: a second loop running at the same time
    # gets one clear error, and no statement of it reaches a connection of the first loop.
    engine = create_async_engine(require_postgres())
    backend = SqlBackend(engine, table_name=unique_name("loops"))
    with anyio.from_thread.start_blocking_portal() as first:
        first.call(backend.create_schema)
        assert first.call(backend.read, ROW) is None
        with (
            anyio.from_thread.start_blocking_portal() as second,
            pytest.raises(EventLoopError, match="another event loop"),
        ):
            second.call(backend.read, ROW)
        first.call(engine.dispose)  # where the application ends its loop (its lifespan)
    with anyio.from_thread.start_blocking_portal() as third:
        assert third.call(backend.read, ROW) is None  # the pool is empty: its own ones

        async def drop() -> None:
            async with engine.begin() as conn:
                await conn.run_sync(backend.metadata.drop_all)
            await backend.dispose()
            await engine.dispose()

        third.call(drop)


# The pattern that crashed: two clients on one asyncpg backend, each loop in its own thread,
# with requests from both threads at once. In a subprocess, so that a crash is a result.
CRASH_PRONE = """
import sys, threading
from pathlib import Path
from starlette.testclient import TestClient
from tests.sql.test_sql_event_loops import shop

answers = []

def shop_on(client):
    answers.extend(client.post("/cart").status_code for _ in range(10))

for execution in ("driver", "sqlalchemy"):
    with shop("asyncpg", execution, Path(".")) as (app, store):
        for _ in range(int(sys.argv[1])):
            with TestClient(app) as phone, TestClient(app) as laptop:
                threads = [threading.Thread(target=shop_on, args=(c,)) for c in (phone, laptop)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
print(sorted(set(answers)), len(answers))
"""


def test_two_loops_at_once_never_crash_the_process() -> None:
    require_postgres()
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(CRASH_PRONE), "2"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "[200] 80\n"), done.stderr[-3000:]
