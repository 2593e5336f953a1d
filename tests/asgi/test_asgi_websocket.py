"""WebSocket connections read the session of their handshake's cookie; they cannot save it.

Driven by each framework's own test client (Starlette's serves FastAPI too), which runs
the WebSocket handshake and conversation through the ASGI app.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import litestar.exceptions
import litestar.testing
import pytest
import starlette.testclient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.asgi.test_asgi_failures import dead_url
from tests.asgi_apps import APP_FACTORIES, Cart
from tests.backends import RecordingBackend
from tests.clock import FakeClock
from typed_session_sql import (
    EventKind,
    ExpiryPolicy,
    MemoryBackend,
    SessionEvent,
    SessionStore,
    SqlBackend,
)
from typed_session_sql.asgi import ASGIApp, CookieSettings, SessionMiddleware

COOKIE = re.compile(r"__Host-id=([A-Za-z0-9_-]{43});")
Client = Any  # Starlette's TestClient or Litestar's: the same calls, no common base class

CLIENTS: dict[str, Callable[[ASGIApp], AbstractContextManager[Client]]] = {
    "starlette": lambda app: starlette.testclient.TestClient(app, base_url="https://testserver"),
    "fastapi": lambda app: starlette.testclient.TestClient(app, base_url="https://testserver"),
    "litestar": lambda app: litestar.testing.TestClient(app, base_url="https://testserver.local"),
}


@pytest.fixture(params=sorted(APP_FACTORIES))
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def recorder() -> RecordingBackend:
    return RecordingBackend(MemoryBackend())


@pytest.fixture
def client(framework: str, recorder: RecordingBackend) -> Iterator[Client]:
    app = APP_FACTORIES[framework](SessionStore(Cart, recorder), CookieSettings())
    with CLIENTS[framework](app) as client:
        yield client


def handshake(client: Client, cookie: str | None = None, origin: str | None = "own") -> Any:
    """A browser's handshake headers: the cookie, and the page's Origin (the app's own unless
    told otherwise; None leaves it out). Both test clients connect over ``ws://``."""
    headers = {} if cookie is None else {"cookie": f"__Host-id={cookie}"}
    if origin is not None:
        headers["origin"] = f"http://{client.base_url.host}" if origin == "own" else origin
    return headers


def signed_in(client: Client, recorder: RecordingBackend) -> str:
    response = client.post("/login")
    match = COOKIE.match(response.headers["set-cookie"])
    assert match is not None
    client.cookies.clear()
    recorder.kinds.clear()
    return match.group(1)


def test_a_websocket_reads_the_session_of_its_handshake_cookie(
    client: Client, recorder: RecordingBackend
) -> None:
    cookie = signed_in(client, recorder)
    with client.websocket_connect("/ws", headers=handshake(client, cookie)) as socket:
        assert socket.receive_text() == "user=ada principal=ada items=0"
        socket.send_text("thanks")
    assert recorder.kinds == ["read"]


def test_a_websocket_without_a_cookie_has_a_fresh_session_and_costs_nothing(
    client: Client, recorder: RecordingBackend
) -> None:
    with client.websocket_connect("/ws", headers=handshake(client)) as socket:
        assert socket.receive_text() == "user=None principal=None items=0"
        socket.send_text("thanks")
    assert recorder.kinds == []


def test_changing_the_session_in_a_websocket_is_refused_clearly(
    framework: str, client: Client, recorder: RecordingBackend
) -> None:
    # The handler's own close raises, so the error points at the handler. Starlette lets it
    # out of the app; Litestar hands it to its exception hooks and closes with 1011.
    errors: list[BaseException] = []
    if framework == "litestar":

        async def seen(error: BaseException, scope: object) -> None:
            errors.append(error)

        client.app.after_exception.append(seen)
    cookie = signed_in(client, recorder)
    headers = handshake(client, cookie)
    try:
        with client.websocket_connect("/ws", headers=headers) as socket:
            socket.receive_text()
            socket.send_text("change")
            socket.receive_text()
    except (RuntimeError, WebSocketDisconnect, litestar.exceptions.WebSocketDisconnect) as error:
        errors.append(error)
    refusals = [error for error in errors if isinstance(error, RuntimeError)]
    assert len(refusals) == 1, errors
    assert str(refusals[0]).startswith("a session cannot be saved from a WebSocket")
    assert recorder.kinds == ["read"]  # nothing written
    client.cookies.clear()
    assert client.get("/show", headers=headers).text == "user=ada items=0"


def test_a_store_failure_refuses_the_handshake_as_try_again_later(framework: str) -> None:
    backend = SqlBackend.from_url(dead_url())
    app = APP_FACTORIES[framework](SessionStore(Cart, backend), CookieSettings())
    codes: list[int] = []
    with CLIENTS[framework](app) as client:
        headers = handshake(client, "A" * 43)
        try:
            with client.websocket_connect("/ws", headers=headers) as socket:
                socket.receive_text()
        except (WebSocketDisconnect, litestar.exceptions.WebSocketDisconnect) as refused:
            codes.append(refused.code)
        assert client.get("/untouched").text == "ok"  # the app goes on
    assert codes == [1013]


# -- Origin: another site's page cannot ride on the user's cookie --------------------------

FOREIGN_ORIGINS = {
    "another site": "https://attacker.test",
    "an opaque origin": "null",
    "https for a ws:// handshake": "https://testserver",
    "another port": "http://testserver:8080",
    "a path": "http://testserver/",
}


@pytest.mark.parametrize(
    "origin", [*FOREIGN_ORIGINS.values(), None], ids=[*FOREIGN_ORIGINS, "none"]
)
def test_a_handshake_from_another_origin_gets_a_new_anonymous_session(origin: str | None) -> None:
    events: list[SessionEvent] = []
    recorder = RecordingBackend(MemoryBackend())
    app = APP_FACTORIES["starlette"](
        SessionStore(Cart, recorder, on_event=events.append), CookieSettings()
    )
    with CLIENTS["starlette"](app) as client:
        cookie = signed_in(client, recorder)
        with client.websocket_connect("/ws", headers=handshake(client, cookie, origin)) as socket:
            assert socket.receive_text() == "user=None principal=None items=0"
            socket.send_text("thanks")
    assert recorder.kinds == []  # the victim's session was never even read
    (refused,) = [event for event in events if event.kind is EventKind.FOREIGN_ORIGIN]
    assert cookie not in refused.detail


def test_the_handshake_s_own_origin_is_compared_by_scheme_host_and_port(framework: str) -> None:
    # wss:// pages are https, the default port may be spelt out, and host names are not case
    # sensitive; every framework's client sees the same.
    recorder = RecordingBackend(MemoryBackend())
    app = APP_FACTORIES[framework](SessionStore(Cart, recorder), CookieSettings())
    with CLIENTS[framework](app) as client:
        cookie = signed_in(client, recorder)
        origin = f"HTTP://{client.base_url.host.upper()}:80"
        with client.websocket_connect("/ws", headers=handshake(client, cookie, origin)) as socket:
            assert socket.receive_text() == "user=ada principal=ada items=0"
            socket.send_text("thanks")
        with client.websocket_connect(
            "/ws", headers=handshake(client, cookie, "https://attacker.test")
        ) as socket:
            assert socket.receive_text() == "user=None principal=None items=0"
            socket.send_text("thanks")


def test_websocket_origins_lets_the_listed_origins_in() -> None:
    recorder = RecordingBackend(MemoryBackend())
    store = SessionStore(Cart, recorder)

    async def socket(websocket: WebSocket) -> None:
        session = await store.session(websocket)
        await websocket.accept()
        await websocket.send_text(str(session.principal))
        await websocket.close()

    async def login(request: Request) -> PlainTextResponse:
        (await store.session(request)).sign_in("ada")
        return PlainTextResponse("signed in")

    inner = Starlette(
        routes=[Route("/login", login, methods=["POST"]), WebSocketRoute("/ws", socket)]
    )
    app = SessionMiddleware(inner, store, websocket_origins=["https://app.example:8443"])
    with CLIENTS["starlette"](app) as client:
        cookie = signed_in(client, recorder)
        for origin, seen in [("https://app.example:8443", "ada"), ("https://app.example", "None")]:
            with client.websocket_connect("/ws", headers=handshake(client, cookie, origin)) as ws:
                assert ws.receive_text() == seen


@pytest.mark.parametrize(
    "origins", [["*"], ["app.example"], ["https://app.example/path"], ["null"], ["ftp://x"]]
)
def test_websocket_origins_refuses_what_is_not_an_origin(origins: list[str]) -> None:
    with pytest.raises(ValueError, match="websocket_origins takes origins like"):
        SessionMiddleware(
            Starlette(), SessionStore(Cart, MemoryBackend()), websocket_origins=origins
        )


def test_websocket_origins_refuses_a_lone_string() -> None:
    with pytest.raises(TypeError, match="not a string"):
        SessionMiddleware(
            Starlette(), SessionStore(Cart, MemoryBackend()), websocket_origins="https://a.example"
        )


# -- a long-lived WebSocket asks whether its session still holds ---------------------------


@pytest.mark.parametrize("ending", ["sign-out", "revoke", "expiry", "sign-in elsewhere"])
def test_a_long_lived_websocket_learns_that_its_session_ended(ending: str) -> None:
    clock = FakeClock()
    store = SessionStore(
        Cart, MemoryBackend(), clock=clock, expiry=ExpiryPolicy(idle=timedelta(hours=1))
    )

    async def socket(websocket: WebSocket) -> None:
        session = await store.session(websocket)
        await websocket.accept()
        while await websocket.receive_text() == "still valid?":
            await websocket.send_text(str(await store.still_valid(session)))
        await websocket.close()

    async def act(request: Request) -> PlainTextResponse:
        session = await store.session(request)
        if request.path_params["action"] == "sign-in":
            session.sign_in("ada")
        elif request.path_params["action"] == "sign-out":
            session.delete()
        return PlainTextResponse("done")

    inner = Starlette(
        routes=[Route("/{action}", act, methods=["POST"]), WebSocketRoute("/ws", socket)]
    )
    app = SessionMiddleware(inner, store)
    with CLIENTS["starlette"](app) as client:
        cookie = COOKIE.match(client.post("/sign-in").headers["set-cookie"])
        assert cookie is not None
        headers = handshake(client, cookie.group(1))
        with client.websocket_connect("/ws", headers=headers) as ws:
            ws.send_text("still valid?")
            assert ws.receive_text() == "True"
            if ending == "sign-out":
                client.post("/sign-out", headers=headers)
            elif ending == "revoke":
                assert client.portal is not None
                assert client.portal.call(store.revoke_all, "ada") == 1
            elif ending == "expiry":
                clock.advance(timedelta(hours=1))
            else:  # the same browser signed in again over HTTP: the socket's id is dead
                client.post("/sign-in", headers=headers)
            ws.send_text("still valid?")
            assert ws.receive_text() == "False"
            ws.send_text("bye")


@pytest.mark.anyio
async def test_a_session_never_stored_is_not_valid() -> None:
    store = SessionStore(Cart, MemoryBackend())
    session = store.new()
    assert await store.still_valid(session) is False
    session.modify(lambda cart: cart.items.append("fig"))
    await store.save(session)
    assert await store.still_valid(session) is True
