"""The core's guarantees hold through every way an app reaches a session, not just the store.

Each check runs through four entry points:

- ``typed``: handlers that use ``await store.session(request)``, ``sign_in``, ``delete``;
- ``request_session``: handlers written like sqladmin's and Authlib's, against Starlette's
  ``request.session`` (``request_session=True``): a sign-in is ``request.session.update``,
  a sign-out ``request.session.clear()``;
- ``websocket``: what a WebSocket handler sees of the session (it cannot write one; the
  changes go through typed HTTP handlers), including ``store.still_valid``;
- ``testing``: the :mod:`typed_session_sql.testing` jar starts the session and reads back
  what the client holds.

The guarantees: a sign-in moves the session to a new id (no fixation), a sign-out ends it,
two requests changing one session at once lose no write silently, a session signed out
meanwhile is not brought back by a request that loaded it before, and no cookie value or
id hash reaches a log line, an event or a response body. Every combination runs on the
memory backend and SQLite; PostgreSQL runs the entry points that are not the typed API's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.backends import BACKEND_FACTORIES
from tests.clock import FakeClock
from typed_session_sql import SessionEvent, SessionStore
from typed_session_sql.asgi import SessionMiddleware
from typed_session_sql.testing import AsyncSessionJar

pytestmark = pytest.mark.anyio

ENTRY_POINTS = ("typed", "request_session", "websocket", "testing")
WIDE = ("memory", "sqlite-driver")  # every entry point
SLICE = ("postgres-driver",)  # the entry points beyond the typed API
BASE = "http://testserver"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    pairs = [(entry, backend) for backend in WIDE for entry in ENTRY_POINTS]
    pairs += [(entry, backend) for backend in SLICE for entry in ENTRY_POINTS if entry != "typed"]
    metafunc.parametrize(("entry", "backend_name"), pairs, ids=[f"{e}-{b}" for e, b in pairs])


@dataclass
class Gate:
    """Holds the next ``expected`` change requests after they loaded the session, until
    ``go`` is set: so two requests load one session before either saves."""

    expected: int = 0
    arrived: int = 0
    all_in: anyio.Event = field(default_factory=anyio.Event)
    go: anyio.Event = field(default_factory=anyio.Event)

    async def hold(self) -> None:
        if self.arrived >= self.expected:
            return
        self.arrived += 1
        if self.arrived == self.expected:
            self.all_in.set()
        await self.go.wait()


def typed_routes(store: SessionStore[dict[str, Any]], gate: Gate) -> list[Route]:
    async def add(request: Request) -> Response:
        session = await store.session(request)
        await gate.hold()
        item = int(request.query_params["item"])

        def append(data: dict[str, Any]) -> None:
            data.setdefault("items", []).append(item)

        session.modify(append)  # replayed on the other's write after a lost race
        return PlainTextResponse("added")

    async def sign_in(request: Request) -> Response:
        (await store.session(request)).sign_in("ada")
        return PlainTextResponse("signed in")

    async def sign_out(request: Request) -> Response:
        (await store.session(request)).delete()
        return PlainTextResponse("signed out")

    async def view(request: Request) -> Response:
        session = await store.session(request)
        return JSONResponse({"who": session.principal, "items": session.data.get("items", [])})

    return [
        Route("/add", add, methods=["POST"]),
        Route("/sign-in", sign_in, methods=["POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/view", view),
    ]


def request_session_routes(gate: Gate) -> list[Route]:
    """As sqladmin, starlette-admin and Authlib apps do it: nothing but request.session."""

    async def add(request: Request) -> Response:
        await gate.hold()
        request.session["items"] = [
            *request.session.get("items", []),
            int(request.query_params["item"]),
        ]
        return PlainTextResponse("added")

    async def sign_in(request: Request) -> Response:
        request.session.update({"token": "ada"})  # sqladmin's AuthenticationBackend.login
        return PlainTextResponse("signed in")

    async def sign_out(request: Request) -> Response:
        request.session.clear()  # sqladmin's logout
        return PlainTextResponse("signed out")

    async def view(request: Request) -> Response:
        return JSONResponse(
            {"who": request.session.get("token"), "items": request.session.get("items", [])}
        )

    return [
        Route("/add", add, methods=["POST"]),
        Route("/sign-in", sign_in, methods=["POST"]),
        Route("/sign-out", sign_out, methods=["POST"]),
        Route("/view", view),
    ]


def websocket_route(store: SessionStore[dict[str, Any]]) -> WebSocketRoute:
    async def view(websocket: WebSocket) -> None:
        session = await store.session(websocket)
        await websocket.accept()
        valid = await store.still_valid(session)
        items = session.data.get("items", [])
        await websocket.send_json({"who": session.principal, "items": items, "valid": valid})
        await websocket.close()

    return WebSocketRoute("/ws", view)


async def websocket_view(app: Any, cookie: str | None) -> dict[str, Any]:
    """What a browser's WebSocket to ``/typed/ws`` from the app's own page gets."""
    headers = [(b"host", b"testserver"), (b"origin", BASE.encode())]
    if cookie is not None:
        headers.append((b"cookie", f"__Host-id={cookie}".encode()))
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/typed/ws",
        "raw_path": b"/typed/ws",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    inbox = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    (text,) = [message["text"] for message in sent if message["type"] == "websocket.send"]
    view: dict[str, Any] = json.loads(text)
    return view


@dataclass
class Site:
    """One browser (its cookie kept by the testing jar) on an app with both kinds of
    handlers, through one entry point."""

    entry: str
    store: SessionStore[dict[str, Any]]
    client: httpx.AsyncClient
    jar: AsyncSessionJar[dict[str, Any]]
    app: Any
    gate: Gate
    clock: FakeClock
    bodies: list[str] = field(default_factory=list)
    cookies: set[str] = field(default_factory=set)  # every value the browser was given

    @property
    def prefix(self) -> str:
        # A WebSocket cannot write a session: its changes go through the typed handlers.
        return "/rs" if self.entry == "request_session" else "/typed"

    @property
    def cookie(self) -> str | None:
        return self.jar.value

    def present(self, cookie: str | None) -> None:
        """Make the browser hold ``cookie`` (a planted or replayed id)."""
        self.jar.clear()
        if cookie is not None:
            self.jar._hold(cookie, None)

    async def post(self, action: str, **query: int) -> httpx.Response:
        response = await self.client.post(f"{self.prefix}/{action}", params=query)
        self.bodies.append(response.text)
        return response

    async def start(self) -> str:
        """An anonymous stored session holding ``items == [0]``; its cookie."""
        if self.entry == "testing":
            await self.jar.set_session({"items": [0]})
        else:
            assert (await self.post("add", item=0)).status_code == 200
        assert self.cookie is not None
        self.cookies.add(self.cookie)
        return self.cookie

    async def view(self) -> dict[str, Any]:
        """Who is signed in and the items, as this entry point sees the held session."""
        if self.entry == "websocket":
            view = await websocket_view(self.app, self.cookie)
            assert view.pop("valid") is (view["who"] is not None or view["items"] != [])
        elif self.entry == "testing":
            session = await self.jar.load()
            view = {"who": None, "items": []}
            if session is not None:
                view = {"who": session.principal, "items": session.data.get("items", [])}
        else:
            response = await self.client.get(f"{self.prefix}/view")
            view = response.json()
        self.bodies.append(json.dumps(view))
        return view


@pytest.fixture
async def site(
    entry: str, backend_name: str, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Site]:
    caplog.set_level(logging.DEBUG, logger="typed_session_sql")
    events: list[SessionEvent] = []
    clock = FakeClock()
    gate = Gate()
    factory, _ = BACKEND_FACTORIES[backend_name]
    async with factory() as backend:
        store = SessionStore(dict[str, Any], backend, clock=clock, on_event=events.append)
        typed = Starlette(routes=[*typed_routes(store, gate), websocket_route(store)])
        by_request_session = Starlette(routes=request_session_routes(gate))
        app = Starlette(
            routes=[
                Mount("/typed", SessionMiddleware(typed, store)),
                Mount("/rs", SessionMiddleware(by_request_session, store, request_session=True)),
            ]
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE
        ) as client:
            jar = AsyncSessionJar(client, store)
            site = Site(entry, store, client, jar, app, gate, clock)

            async def note_cookies(response: httpx.Response) -> None:
                for header in response.headers.get_list("set-cookie"):
                    value = header.split(";")[0].partition("=")[2]
                    if value:
                        site.cookies.add(value)

            client.event_hooks["response"].append(note_cookies)
            site = Site(entry, store, client, jar, app, gate, clock)
            yield site
        # No secret in any output: no cookie value, nor the hash a handle shows.
        handles = [store._hash(value).hex() for value in site.cookies]
        outputs = [caplog.text, *site.bodies, *(repr(event) for event in events)]
        for secret in [*site.cookies, *handles]:
            assert not any(secret in output for output in outputs)
        assert site.cookies  # the scan above looked for something


async def test_a_sign_in_moves_the_session_to_a_new_id(site: Site) -> None:
    planted = await site.start()  # an attacker's id, or one noted before sign-in
    assert (await site.post("sign-in")).status_code == 200
    signed_in = site.cookie
    assert signed_in not in (None, planted)
    assert await site.view() == {"who": "ada", "items": [0]}
    site.present(planted)
    assert await site.view() == {"who": None, "items": []}  # the planted id holds nothing


async def test_a_sign_out_ends_the_session(site: Site) -> None:
    await site.start()
    await site.post("sign-in")
    signed_in = site.cookie
    assert (await site.post("sign-out")).status_code == 200
    assert site.cookie is None  # the cookie was deleted
    site.present(signed_in)  # a copy of the cookie, replayed
    assert await site.view() == {"who": None, "items": []}


async def test_two_requests_changing_one_session_lose_no_write(site: Site) -> None:
    await site.start()
    site.gate.expected = 2  # both load the session before either saves
    statuses: dict[int, int] = {}

    async def add(item: int) -> None:
        statuses[item] = (await site.post("add", item=item)).status_code

    async with anyio.create_task_group() as group:
        group.start_soon(add, 1)
        group.start_soon(add, 2)
        await site.gate.all_in.wait()
        site.gate.go.set()
    # Each change is saved (replayed on the other's) or refused with a 409: never a
    # success whose write is gone.
    assert set(statuses.values()) <= {200, 409}
    assert 200 in statuses.values()
    saved = sorted(item for item, status in statuses.items() if status == 200)
    assert sorted((await site.view())["items"]) == [0, *saved]


async def test_a_session_signed_out_meanwhile_is_not_brought_back(site: Site) -> None:
    await site.start()
    await site.post("sign-in")
    signed_in = site.cookie
    site.gate.expected = 1
    outcome: list[int] = []

    async def change() -> None:
        outcome.append((await site.post("add", item=1)).status_code)

    async with anyio.create_task_group() as group:
        group.start_soon(change)  # loads the signed-in session, then waits
        await site.gate.all_in.wait()
        assert (await site.post("sign-out")).status_code == 200  # in another tab
        site.gate.go.set()
    assert outcome == [409]
    site.present(signed_in)
    assert await site.view() == {"who": None, "items": []}
    assert await site.store.load(signed_in) is None


async def test_a_revoked_session_is_not_brought_back(site: Site) -> None:
    await site.start()
    await site.post("sign-in")
    signed_in = site.cookie
    assert signed_in is not None
    session = await site.store.load(signed_in)
    assert session is not None
    site.gate.expected = 1
    outcome: list[int] = []

    async def change() -> None:
        outcome.append((await site.post("add", item=1)).status_code)

    async with anyio.create_task_group() as group:
        group.start_soon(change)
        await site.gate.all_in.wait()
        if session.principal is not None:
            assert await site.store.revoke_all("ada") == 1
        else:  # request.session's sign-in names nobody to the store: revoke them all
            await site.store.clear()
        site.gate.go.set()
    assert outcome == [409]
    assert await site.store.still_valid(session) is False
    assert await site.view() == {"who": None, "items": []}
