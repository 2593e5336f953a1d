"""Middleware edges that do not depend on the framework, shown with Starlette."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.asgi_apps import Cart
from typed_session_sql import MemoryBackend, SessionConflictError, SessionError, SessionStore
from typed_session_sql.asgi import ASGIApp, SessionMiddleware, default_error_response, get_session

pytestmark = pytest.mark.anyio


async def grow(request: Request) -> Response:
    session = await get_session(request)
    session.data.items.extend(["x" * 100] * 10)
    return PlainTextResponse("grown")


async def conflict(request: Request) -> Response:
    raise SessionConflictError("simulated by the handler")


def app(store: SessionStore[Cart], **options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/grow", grow), Route("/conflict", conflict)],
        middleware=[Middleware(SessionMiddleware, store=store, **options)],
    )


async def get(asgi_app: ASGIApp, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        return await client.get(path)


async def test_a_session_too_large_to_save_is_a_500_without_a_cookie() -> None:
    backend = MemoryBackend()
    response = await get(app(SessionStore(Cart, backend, max_data_bytes=100)), "/grow")
    assert response.status_code == 500
    assert response.text == "The session could not be saved.\n"
    assert "set-cookie" not in response.headers
    assert backend.rows == {}


async def test_the_error_response_can_be_replaced() -> None:
    def error_response(scope: Any, error: SessionError) -> ASGIApp:
        if isinstance(error, SessionConflictError):
            return JSONResponse({"error": "conflict"}, status_code=409)
        return default_error_response(scope, error)

    store = SessionStore(Cart, MemoryBackend())
    response = await get(app(store, error_response=error_response), "/conflict")
    assert response.status_code == 409
    assert response.json() == {"error": "conflict"}
    assert response.headers["cache-control"] == "no-store"


async def test_the_session_is_closed_once_the_response_has_started() -> None:
    failures: list[str] = []

    async def late(request: Request) -> None:
        try:
            await get_session(request)
        except RuntimeError as error:
            failures.append(str(error))

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok", background=BackgroundTask(late, request))

    store = SessionStore(Cart, MemoryBackend())
    starlette = Starlette(
        routes=[Route("/", endpoint)], middleware=[Middleware(SessionMiddleware, store=store)]
    )
    assert (await get(starlette, "/")).text == "ok"
    assert failures == ["the response has started: the session was already saved"]
