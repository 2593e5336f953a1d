"""One small app with ``SessionMiddleware(..., csrf=True)``, for Starlette, FastAPI and Litestar.

Routes: ``GET /token`` answers a token; ``POST /login`` signs in, then answers a token of
the new session; ``POST /logout`` signs out; ``/echo``, for every method, answers the body
exactly as the app read it (so a test sees that the CSRF check replayed it unchanged).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime.
from collections.abc import Callable
from typing import Any

import fastapi
import litestar
from litestar.middleware import DefineMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from typed_session_sql import SessionStore
from typed_session_sql.asgi import ASGIApp, CsrfSettings, SessionMiddleware, csrf_token, get_session

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def login(request: Any) -> str:
    session = await get_session(request)
    session.sign_in("ada")
    return await csrf_token(request)


async def logout(request: Any) -> str:
    (await get_session(request)).delete()
    return await csrf_token(request)


def starlette_app(store: SessionStore[dict[str, Any]], csrf: CsrfSettings) -> ASGIApp:
    async def token(request: Request) -> Response:
        return PlainTextResponse(await csrf_token(request))

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    def text(action: Callable[[Any], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return PlainTextResponse(await action(request))

        return endpoint

    return Starlette(
        routes=[
            Route("/token", token),
            Route("/echo", echo, methods=METHODS),
            Route("/login", text(login), methods=["POST"]),
            Route("/logout", text(logout), methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, store=store, csrf=csrf)],
    )


def fastapi_app(store: SessionStore[dict[str, Any]], csrf: CsrfSettings) -> ASGIApp:
    app = fastapi.FastAPI()

    @app.get("/token")
    async def token(request: fastapi.Request) -> PlainTextResponse:
        return PlainTextResponse(await csrf_token(request))

    @app.api_route("/echo", methods=METHODS)
    async def echo(request: fastapi.Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.post("/login")
    async def sign_in(request: fastapi.Request) -> PlainTextResponse:
        return PlainTextResponse(await login(request))

    @app.post("/logout")
    async def sign_out(request: fastapi.Request) -> PlainTextResponse:
        return PlainTextResponse(await logout(request))

    app.add_middleware(SessionMiddleware, store=store, csrf=csrf)
    return app


def litestar_app(store: SessionStore[dict[str, Any]], csrf: CsrfSettings) -> ASGIApp:
    Req = litestar.Request[Any, Any, Any]

    @litestar.get("/token", media_type=litestar.MediaType.TEXT)
    async def token(request: Req) -> str:
        return await csrf_token(request)

    @litestar.route("/echo", http_method=["GET", "POST", "PUT", "PATCH", "DELETE"], status_code=200)
    async def echo(request: Req) -> bytes:
        return await request.body()

    @litestar.post("/login", media_type=litestar.MediaType.TEXT, status_code=200)
    async def sign_in(request: Req) -> str:
        return await login(request)

    @litestar.post("/logout", media_type=litestar.MediaType.TEXT, status_code=200)
    async def sign_out(request: Req) -> str:
        return await logout(request)

    return litestar.Litestar(
        route_handlers=[token, echo, sign_in, sign_out],
        middleware=[DefineMiddleware(SessionMiddleware, store=store, csrf=csrf)],
    )


CSRF_APPS = {"starlette": starlette_app, "fastapi": fastapi_app, "litestar": litestar_app}
