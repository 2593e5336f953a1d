"""``typed_session_sql.testing`` with FastAPI's TestClient, Litestar's test clients and a
plain httpx AsyncClient: the session kept over plain HTTP, a test started signed in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import litestar.testing
import pytest
from fastapi.testclient import TestClient

from tests.asgi_apps import APP_FACTORIES, Cart
from typed_session_sql import MemoryBackend, SessionStore, SqlBackend
from typed_session_sql.asgi import CookieSettings
from typed_session_sql.testing import AsyncSessionJar, SessionJar


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> SessionStore[Cart]:
    if request.param == "memory":
        return SessionStore(Cart, MemoryBackend())
    return SessionStore(Cart, SqlBackend.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}"))


Client = Any  # FastAPI's TestClient or Litestar's: the same calls, no common base class


@contextmanager
def entered(client: Client, store: SessionStore[Cart]) -> Iterator[None]:
    """Enter the client (its event loop then runs every call) and make the table on it."""
    with client:
        # Starlette's portal, Litestar's blocking_portal: the loop the app runs on.
        portal: Any = client.portal if isinstance(client, TestClient) else client.blocking_portal
        if isinstance(store.backend, SqlBackend):
            portal.call(store.backend.create_schema)
        yield
        if isinstance(store.backend, SqlBackend):
            portal.call(store.backend.dispose)


@pytest.fixture(params=["fastapi", "litestar"])
def client(request: pytest.FixtureRequest, store: SessionStore[Cart]) -> Iterator[Client]:
    app = APP_FACTORIES[request.param](store, CookieSettings())
    # Their default base URLs, plain http: where a Secure cookie is never sent back.
    test_client = (
        TestClient(app) if request.param == "fastapi" else litestar.testing.TestClient(app)
    )
    with entered(test_client, store):
        yield test_client


def test_without_a_jar_the_session_is_lost_over_plain_http(client: TestClient) -> None:
    assert client.post("/add").text == "added"
    assert client.get("/show").text == "user=None items=0"  # the Secure cookie stayed behind


def test_a_jar_keeps_the_session_over_plain_http(
    client: TestClient, store: SessionStore[Cart]
) -> None:
    jar = SessionJar(client, store)
    client.post("/add")
    client.post("/add")
    assert client.get("/show").text == "user=None items=2"
    session = jar.load()
    assert session is not None
    assert session.data.items == ["apple", "apple"]


def test_a_test_starts_signed_in_with_given_data(
    client: TestClient, store: SessionStore[Cart]
) -> None:
    jar = SessionJar(client, store)
    session = jar.set_session(Cart(user="ada", items=["pear"]), principal="ada")
    assert session.principal == "ada"
    assert client.get("/show").text == "user=ada items=1"
    client.post("/login")  # the app signs in again: a new id, which the jar follows
    loaded = jar.load()
    assert loaded is not None
    assert (loaded.principal, loaded.handle) == ("ada", loaded.handle)
    assert loaded.handle != session.handle


def test_sign_out_empties_the_jar(client: TestClient, store: SessionStore[Cart]) -> None:
    jar = SessionJar(client, store)
    jar.set_session(principal="ada")
    assert jar.value is not None
    client.post("/logout")
    assert jar.value is None
    assert jar.load() is None
    assert client.get("/show").text == "user=None items=0"


def test_a_jar_refuses_to_start_an_empty_session(
    client: TestClient, store: SessionStore[Cart]
) -> None:
    with pytest.raises(ValueError, match="needs data or a principal"):
        SessionJar(client, store).set_session()


def test_the_jar_sends_one_session_cookie_even_over_https() -> None:
    # Over https the client's own jar keeps the cookie too; the request must still carry
    # exactly one, or the middleware sees two and refuses both.
    store = SessionStore(Cart, MemoryBackend())
    app = APP_FACTORIES["fastapi"](store, CookieSettings())
    with TestClient(app, base_url="https://testserver") as client:
        jar = SessionJar(client, store)
        client.post("/add")
        response = client.post("/add")
        assert response.request.headers["cookie"].count("__Host-id=") == 1
        assert client.get("/show").text == "user=None items=2"
        assert jar.value is not None


@pytest.mark.anyio
async def test_an_async_jar_on_httpx_over_asgi(framework_name: str) -> None:
    store = SessionStore(Cart, MemoryBackend())
    app = APP_FACTORIES[framework_name](store, CookieSettings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        jar = AsyncSessionJar(client, store)
        await jar.set_session(Cart(items=["fig"]), principal="ada")
        await client.post("/add")
        assert (await client.get("/show")).text == "user=None items=2"
        session = await jar.load()
        assert session is not None
        assert (session.principal, session.data.items) == ("ada", ["fig", "apple"])


@pytest.mark.anyio
async def test_an_async_jar_on_litestars_async_test_client() -> None:
    store = SessionStore(Cart, MemoryBackend())
    app = APP_FACTORIES["litestar"](store, CookieSettings())
    async with litestar.testing.AsyncTestClient(app) as client:
        jar = AsyncSessionJar(client, store)
        await client.post("/login")
        assert (await client.get("/show")).text == "user=ada items=0"
        session = await jar.load()
        assert session is not None
        assert session.principal == "ada"


@pytest.fixture(params=sorted(APP_FACTORIES))
def framework_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)
