"""Helpers for testing an app that uses sessions, with any httpx-based test client.

Two problems they solve:

- The default cookie is ``__Host-id; Secure``, and an httpx client (FastAPI's and
  Starlette's ``TestClient``, Litestar's, a plain ``AsyncClient``) never sends a Secure
  cookie back to ``http://testserver``: the session is lost between requests. A jar keeps
  the session cookie itself, over plain HTTP too, and applies every ``Set-Cookie`` of it
  in order, redirects included, as a browser does.
- Starting a test signed in, or with given data, without clicking through the app:
  `SessionJar.set_session` stores a session and hands the client its cookie (like
  Litestar's ``set_session_data``); `SessionJar.load` reads back what the client
  holds (like Django's ``client.session``).

``SessionJar`` is for synchronous clients; it runs the store's calls on the client's event
loop (enter the client first, ``with TestClient(app) as client``, when the store is on SQL:
its connections belong to that loop). ``AsyncSessionJar`` is for async clients.

httpx is not imported: any client with httpx's ``event_hooks`` works (httpx, httpx2).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import anyio.from_thread

from typed_session_sql.cookie_commands import SetCookie
from typed_session_sql.cookies import CookieSettings
from typed_session_sql.session import Session
from typed_session_sql.store import SessionStore

__all__ = ["AsyncSessionJar", "SessionJar"]

T = TypeVar("T")
R = TypeVar("R")


class HttpClient(Protocol):
    """What the jars need of a client: httpx's event hooks and base URL."""

    @property
    def event_hooks(self) -> Mapping[str, list[Any]]: ...

    @property
    def base_url(self) -> Any: ...


class _Jar(Generic[T]):
    """The session cookie of one client, kept by the jar instead of the client's own jar."""

    def __init__(
        self, client: HttpClient, store: SessionStore[T], cookie: CookieSettings | None = None
    ) -> None:
        self.client = client
        self.store = store
        self.cookie = cookie if cookie is not None else CookieSettings()
        self._value: str | None = None
        self._host: str | None = None  # where the cookie came from; None: any host

    @property
    def value(self) -> str | None:
        """The session cookie's value the client now holds, or None."""
        return self._value

    def clear(self) -> None:
        """Forget the cookie, as if the browser were closed."""
        self._value = self._host = None

    def _hold(self, value: str, host: str | None) -> None:
        self._value, self._host = value, host

    def _send_cookie(self, request: Any) -> None:
        """Put the held cookie on ``request``, replacing any of the same name the client's
        own jar added (over HTTPS it keeps one too): never two session cookies."""
        name = self.cookie.name
        pairs = [
            pair.strip()
            for pair in request.headers.get("cookie", "").split(";")
            if pair.strip() and pair.strip().partition("=")[0] != name
        ]
        if self._value is not None and self._host in (None, request.url.host):
            pairs.append(f"{name}={self._value}")
        if pairs:
            request.headers["cookie"] = "; ".join(pairs)
        elif "cookie" in request.headers:
            del request.headers["cookie"]

    def _take_cookie(self, response: Any) -> None:
        """Apply each ``Set-Cookie`` of the session cookie, in order."""
        for header in response.headers.get_list("set-cookie"):
            pair, *attributes = (part.strip() for part in header.split(";"))
            name, _, value = pair.partition("=")
            if name != self.cookie.name:
                continue
            if not value or any(attribute.lower() == "max-age=0" for attribute in attributes):
                self.clear()
            else:
                self._hold(value, response.request.url.host)

    def _held(self, result: object) -> None:
        if not isinstance(result, SetCookie):
            raise ValueError("set_session needs data or a principal: nothing was stored")
        self._hold(result.value, self.client.base_url.host or None)

    async def _start(self, data: T | None, principal: str | None) -> Session[T]:
        session = self.store.new(data)
        if principal is not None:
            session.sign_in(principal)
        self._held(await self.store.save(session))
        return session

    async def _load(self) -> Session[T] | None:
        return await self.store.load(self._value)


class SessionJar(_Jar[T]):
    """The session cookie of a synchronous client (``TestClient`` of Starlette, FastAPI or
    Litestar; ``httpx.Client``), kept over plain HTTP too.

    Args:
        client: the test client; the jar adds itself to its event hooks.
        store: the app's store, for `set_session` and `load`.
        cookie: the app's cookie settings, if not the default.

    Examples:
        A test that starts signed in, then checks what the app stored:

        ```python
        from dataclasses import dataclass

        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient

        from typed_session_sql import MemoryBackend, SessionStore
        from typed_session_sql.asgi import SessionMiddleware
        from typed_session_sql.testing import SessionJar


        @dataclass
        class Account:
            theme: str = "light"


        store = SessionStore(Account, MemoryBackend())


        async def dark(request: Request) -> JSONResponse:
            session = await store.session(request)
            if session.principal is None:
                return JSONResponse({"error": "sign in first"}, status_code=403)
            session.data = Account(theme="dark")
            return JSONResponse({"user": session.principal})


        app = Starlette(
            routes=[Route("/theme/dark", dark, methods=["POST"])],
            middleware=[Middleware(SessionMiddleware, store=store)],
        )


        def test_a_signed_in_user_switches_to_dark() -> None:
            with TestClient(app) as client:  # entered: the jar runs on the client's loop
                jar = SessionJar(client, store)
                jar.set_session(principal="ada")  # like Django's force_login
                assert client.post("/theme/dark").json() == {"user": "ada"}
                session = jar.load()
                assert session is not None and session.data.theme == "dark"


        test_a_signed_in_user_switches_to_dark()  # pytest would call it
        ```
    """

    def __init__(
        self, client: HttpClient, store: SessionStore[T], cookie: CookieSettings | None = None
    ) -> None:
        super().__init__(client, store, cookie)
        client.event_hooks["request"].append(self._send_cookie)
        client.event_hooks["response"].append(self._take_cookie)

    def set_session(self, data: T | None = None, *, principal: str | None = None) -> Session[T]:
        """Store a session with ``data`` (else the type's default), signed in as
        ``principal`` if given, and make the client hold its cookie. Returns the session."""
        return self._call(functools.partial(self._start, data, principal))

    def load(self) -> Session[T] | None:
        """The stored session the client's cookie names, as the app would load it."""
        return self._call(self._load)

    def _call(self, function: Callable[[], Awaitable[R]]) -> R:
        portal = _running_portal(self.client)
        if portal is not None:
            return portal.call(function)
        with anyio.from_thread.start_blocking_portal() as fresh:
            return fresh.call(function)


class AsyncSessionJar(_Jar[T]):
    """The session cookie of an async client (``httpx.AsyncClient``, Litestar's
    ``AsyncTestClient``), kept over plain HTTP too. Same arguments as `SessionJar`.

    Examples:
        A FastAPI app tested with `httpx.AsyncClient`, the jar's calls awaited (under
        pytest, mark the test `@pytest.mark.anyio`: anyio's plugin comes with the library):

        ```python
        import asyncio
        from dataclasses import dataclass, field
        from typing import Annotated

        import httpx
        from fastapi import Depends, FastAPI

        from typed_session_sql import MemoryBackend, Session, SessionStore
        from typed_session_sql.asgi import SessionMiddleware
        from typed_session_sql.testing import AsyncSessionJar


        @dataclass
        class Cart:
            items: list[str] = field(default_factory=list)


        store = SessionStore(Cart, MemoryBackend())
        app = FastAPI()
        app.add_middleware(SessionMiddleware, store=store)


        @app.get("/cart")
        async def cart(session: Annotated[Session[Cart], Depends(store.session)]) -> list[str]:
            return session.data.items


        async def test_the_cart_shows_what_the_session_holds() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                jar = AsyncSessionJar(client, store)
                await jar.set_session(Cart(items=["fig"]))
                assert (await client.get("/cart")).json() == ["fig"]


        asyncio.run(test_the_cart_shows_what_the_session_holds())  # pytest would run it
        ```
    """

    def __init__(
        self, client: HttpClient, store: SessionStore[T], cookie: CookieSettings | None = None
    ) -> None:
        super().__init__(client, store, cookie)

        async def send_cookie(request: Any) -> None:
            self._send_cookie(request)

        async def take_cookie(response: Any) -> None:
            self._take_cookie(response)

        client.event_hooks["request"].append(send_cookie)
        client.event_hooks["response"].append(take_cookie)

    async def set_session(
        self, data: T | None = None, *, principal: str | None = None
    ) -> Session[T]:
        """Store a session with ``data`` (else the type's default), signed in as
        ``principal`` if given, and make the client hold its cookie. Returns the session."""
        return await self._start(data, principal)

    async def load(self) -> Session[T] | None:
        """The stored session the client's cookie names, as the app would load it."""
        return await self._load()


def _running_portal(client: object) -> anyio.from_thread.BlockingPortal | None:
    """The event loop an entered test client runs the app on: Starlette's ``portal``,
    Litestar's ``blocking_portal``."""
    for name in ("portal", "blocking_portal"):
        portal = getattr(client, name, None)
        if isinstance(portal, anyio.from_thread.BlockingPortal):
            return portal
    return None
