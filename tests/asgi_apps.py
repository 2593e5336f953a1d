"""One small app, written for Starlette, FastAPI and Litestar, for the middleware tests.

Each route runs one of the framework-free actions below on the request's session, so the
three frameworks are tested against exactly the same behaviour. Routes are ``/{action}``
and accept GET and POST; ``/ws`` is a WebSocket that reports the session and, when told
``change``, changes it. A request with the header ``x-hold`` pauses after loading its
session until the test releases it (the slow side of a race).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at
# runtime, and they name the store of the enclosing function.
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import anyio
import fastapi
import litestar
from litestar.middleware import DefineMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from typed_session_sql import Session, SessionStore, SqlBackend
from typed_session_sql.asgi import ASGIApp, CookieSettings, SessionMiddleware, get_session


@dataclass
class Cart:
    user: str | None = None
    items: list[str] = field(default_factory=list)


SessionChange = Callable[[Session[Cart]], None]
Action = Callable[[Session[Cart], SessionStore[Cart], str | None], Awaitable[tuple[int, str]]]


async def show(
    session: Session[Cart], store: SessionStore[Cart], cookie: str | None
) -> tuple[int, str]:
    return 200, f"user={session.data.user} items={len(session.data.items)}"


async def add(
    session: Session[Cart], store: SessionStore[Cart], cookie: str | None
) -> tuple[int, str]:
    session.modify(lambda cart: cart.items.append("apple"))
    return 200, "added"


async def login(
    session: Session[Cart], store: SessionStore[Cart], cookie: str | None
) -> tuple[int, str]:
    session.sign_in("ada")  # rotates the id
    session.modify(lambda cart: setattr(cart, "user", "ada"))
    return 200, "signed in"


async def logout(
    session: Session[Cart], store: SessionStore[Cart], cookie: str | None
) -> tuple[int, str]:
    session.delete()
    return 200, "signed out"


async def boom(
    session: Session[Cart], store: SessionStore[Cart], cookie: str | None
) -> tuple[int, str]:
    session.modify(lambda cart: cart.items.append("lost"))
    return 500, "failed"


async def _meanwhile(store: SessionStore[Cart], cookie: str | None, change: SessionChange) -> None:
    """Plays a second request that loads the same session, changes it and saves first."""
    other = await store.load(cookie)
    assert other is not None
    change(other)
    await store.save(other)


async def conflict(
    session: Session[Cart], store: SessionStore[Cart], cookie: str | None
) -> tuple[int, str]:
    """Changes the session by assignment (not replayable) while another request writes it."""
    session.data = Cart(user=session.data.user, items=["mine"])
    await _meanwhile(store, cookie, lambda other: other.data.items.append("theirs"))
    return 200, "should not be seen"


async def deleted(
    session: Session[Cart], store: SessionStore[Cart], cookie: str | None
) -> tuple[int, str]:
    """Changes the session while another request signs it out."""
    session.modify(lambda cart: cart.items.append("late"))
    await _meanwhile(store, cookie, lambda other: other.delete())
    return 200, "should not be seen"


ACTIONS: dict[str, Action] = {
    "show": show,
    "add": add,
    "login": login,
    "logout": logout,
    "boom": boom,
    "conflict": conflict,
    "deleted": deleted,
}


class Hold:
    """Holds requests marked ``x-hold`` after they loaded their session, until released."""

    def __init__(self) -> None:
        self.loaded = anyio.Event()
        self.released = anyio.Event()

    async def pause(self, scope: Any) -> None:
        if any(key == b"x-hold" for key, _ in scope["headers"]):
            self.loaded.set()
            await self.released.wait()


async def run_action(
    name: str, session: Session[Cart], store: SessionStore[Cart], scope: Any, hold: Hold | None
) -> tuple[int, str]:
    if hold is not None:
        await hold.pause(scope)
    cookie, _ = CookieSettings().find(scope["headers"])  # for the actions that play a rival
    return await ACTIONS[name](session, store, cookie)


def describe(session: Session[Cart]) -> str:
    return f"user={session.data.user} principal={session.principal} items={len(session.data.items)}"


async def socket_conversation(
    session: Session[Cart],
    send_text: Callable[[str], Awaitable[None]],
    receive_text: Callable[[], Awaitable[str]],
) -> None:
    """Tell the client about the session; change it if the client says so."""
    await send_text(describe(session))
    if await receive_text() == "change":
        session.modify(lambda cart: cart.items.append("from a socket"))


class AppFactory(Protocol):
    def __call__(
        self,
        store: SessionStore[Cart],
        cookie: CookieSettings,
        *,
        hold: Hold | None = None,
        outside: bool = False,
    ) -> ASGIApp: ...


def starlette_app(
    store: SessionStore[Cart],
    cookie: CookieSettings,
    *,
    hold: Hold | None = None,
    outside: bool = False,
) -> ASGIApp:
    """``outside``: the middleware wraps the whole app (Starlette's error middleware inside)."""

    async def untouched(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def endpoint(request: Request) -> PlainTextResponse:
        session = await get_session(request)
        name = request.path_params["action"]
        status, text = await run_action(name, session, store, request.scope, hold)
        return PlainTextResponse(text, status_code=status)

    async def socket(websocket: WebSocket) -> None:
        session = await store.session(websocket)
        await websocket.accept()
        await socket_conversation(session, websocket.send_text, websocket.receive_text)
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/untouched", untouched, methods=["GET", "POST"]),
            WebSocketRoute("/ws", socket),
            Route("/{action}", endpoint, methods=["GET", "POST"]),
        ],
        middleware=[] if outside else [Middleware(SessionMiddleware, store=store, cookie=cookie)],
    )
    return SessionMiddleware(app, store=store, cookie=cookie) if outside else app


def fastapi_app(
    store: SessionStore[Cart],
    cookie: CookieSettings,
    *,
    hold: Hold | None = None,
    outside: bool = False,
) -> ASGIApp:
    app = fastapi.FastAPI()
    CartSession = Annotated[Session[Cart], fastapi.Depends(store.session)]

    @app.api_route("/untouched", methods=["GET", "POST"])
    async def untouched() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.websocket("/ws")
    async def socket(websocket: fastapi.WebSocket, session: CartSession) -> None:
        await websocket.accept()
        await socket_conversation(session, websocket.send_text, websocket.receive_text)
        await websocket.close()

    @app.api_route("/{action}", methods=["GET", "POST"])
    async def endpoint(
        action: str, request: fastapi.Request, session: CartSession
    ) -> PlainTextResponse:
        status, text = await run_action(action, session, store, request.scope, hold)
        return PlainTextResponse(text, status_code=status)

    if outside:
        return SessionMiddleware(app, store=store, cookie=cookie)
    app.add_middleware(SessionMiddleware, store=store, cookie=cookie)
    return app


def litestar_app(
    store: SessionStore[Cart],
    cookie: CookieSettings,
    *,
    hold: Hold | None = None,
    outside: bool = False,
) -> ASGIApp:
    @litestar.route(
        "/untouched",
        http_method=["GET", "POST"],
        media_type=litestar.MediaType.TEXT,
        status_code=200,
    )
    async def untouched() -> str:
        return "ok"

    @litestar.route(
        "/{action:str}",
        http_method=["GET", "POST"],
        media_type=litestar.MediaType.TEXT,
        status_code=200,
    )
    async def endpoint(request: litestar.Request[Any, Any, Any]) -> litestar.Response[str]:
        session: Session[Cart] = await get_session(request)
        name = request.path_params["action"]
        status, text = await run_action(name, session, store, request.scope, hold)
        return litestar.Response(text, status_code=status)

    @litestar.websocket("/ws")
    async def socket(socket: litestar.WebSocket[Any, Any, Any]) -> None:
        session = await store.session(socket)
        await socket.accept()
        await socket_conversation(session, socket.send_text, socket.receive_text)
        await socket.close()

    middleware = (
        [] if outside else [DefineMiddleware(SessionMiddleware, store=store, cookie=cookie)]
    )
    app = litestar.Litestar(route_handlers=[untouched, endpoint, socket], middleware=middleware)
    return SessionMiddleware(app, store=store, cookie=cookie) if outside else app


APP_FACTORIES: dict[str, AppFactory] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
    "litestar": litestar_app,
}


def served_app() -> ASGIApp:
    """For ``uvicorn --factory tests.asgi_apps:served_app``: the framework named by
    ``TSS_APP_FRAMEWORK`` on the database at ``TSS_APP_URL`` (not migrated), the middleware
    around the whole app if ``TSS_APP_OUTSIDE=1``."""
    store = SessionStore(Cart, SqlBackend.from_url(os.environ["TSS_APP_URL"]))
    factory = APP_FACTORIES[os.environ["TSS_APP_FRAMEWORK"]]
    return factory(store, CookieSettings(), outside=os.environ.get("TSS_APP_OUTSIDE") == "1")
