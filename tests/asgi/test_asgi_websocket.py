"""WebSocket connections read the session of their handshake's cookie; they cannot save it.

Driven by each framework's own test client (Starlette's serves FastAPI too), which runs
the WebSocket handshake and conversation through the ASGI app.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import litestar.exceptions
import litestar.testing
import pytest
import starlette.testclient
from starlette.websockets import WebSocketDisconnect

from tests.asgi.test_asgi_failures import dead_url
from tests.asgi_apps import APP_FACTORIES, Cart
from tests.backends import RecordingBackend
from typed_session_sql import MemoryBackend, SessionStore, SqlBackend
from typed_session_sql.asgi import ASGIApp, CookieSettings

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
    with client.websocket_connect("/ws", headers={"cookie": f"__Host-id={cookie}"}) as socket:
        assert socket.receive_text() == "user=ada principal=ada items=0"
        socket.send_text("thanks")
    assert recorder.kinds == ["read"]


def test_a_websocket_without_a_cookie_has_a_fresh_session_and_costs_nothing(
    client: Client, recorder: RecordingBackend
) -> None:
    with client.websocket_connect("/ws") as socket:
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
    headers = {"cookie": f"__Host-id={cookie}"}
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
    headers = {"cookie": "__Host-id=" + "A" * 43}
    codes: list[int] = []
    with CLIENTS[framework](app) as client:
        try:
            with client.websocket_connect("/ws", headers=headers) as socket:
                socket.receive_text()
        except (WebSocketDisconnect, litestar.exceptions.WebSocketDisconnect) as refused:
            codes.append(refused.code)
        assert client.get("/untouched").text == "ok"  # the app goes on
    assert codes == [1013]
