"""One small app, written for Starlette, FastAPI and Litestar, for the middleware tests.

Each route runs one of the framework-free actions below on the request's session, so the
three frameworks are tested against exactly the same behaviour. Routes are ``/{action}``
and accept GET and POST.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import fastapi
import litestar
from litestar.middleware import DefineMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from typed_session_sql import Session, SessionStore
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
    session.regenerate()
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


def _cookie(scope: Any, settings: CookieSettings) -> str | None:
    """The raw session cookie, for the actions that play a concurrent second request."""
    value, _ = settings.find(scope["headers"])
    return value


def starlette_app(store: SessionStore[Cart], cookie: CookieSettings) -> ASGIApp:
    async def untouched(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def endpoint(request: Request) -> PlainTextResponse:
        session = await get_session(request)
        action = ACTIONS[request.path_params["action"]]
        status, text = await action(session, store, _cookie(request.scope, cookie))
        return PlainTextResponse(text, status_code=status)

    return Starlette(
        routes=[
            Route("/untouched", untouched, methods=["GET", "POST"]),
            Route("/{action}", endpoint, methods=["GET", "POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, store=store, cookie=cookie)],
    )


def fastapi_app(store: SessionStore[Cart], cookie: CookieSettings) -> ASGIApp:
    app = fastapi.FastAPI()

    @app.api_route("/untouched", methods=["GET", "POST"])
    async def untouched() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.api_route("/{action}", methods=["GET", "POST"])
    async def endpoint(
        action: str,
        request: fastapi.Request,
        session: Annotated[Session[Cart], fastapi.Depends(get_session)],
    ) -> PlainTextResponse:
        status, text = await ACTIONS[action](session, store, _cookie(request.scope, cookie))
        return PlainTextResponse(text, status_code=status)

    app.add_middleware(SessionMiddleware, store=store, cookie=cookie)
    return app


def litestar_app(store: SessionStore[Cart], cookie: CookieSettings) -> ASGIApp:
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
        status, text = await ACTIONS[request.path_params["action"]](
            session, store, _cookie(request.scope, cookie)
        )
        return litestar.Response(text, status_code=status)

    return litestar.Litestar(
        route_handlers=[untouched, endpoint],
        middleware=[DefineMiddleware(SessionMiddleware, store=store, cookie=cookie)],
    )


APP_FACTORIES: dict[str, Callable[[SessionStore[Cart], CookieSettings], ASGIApp]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
    "litestar": litestar_app,
}
