"""The app the HTTP slice of the load talks to, served by a real uvicorn.

    TYPED_SESSION_SQL_PRODUCTION_APP='{"url": ..., "table": ...}' \\
        python -m uvicorn tests.production.app:app

Sessions go through :class:`SessionMiddleware`, so a store that is down answers 503. The
routes mirror :class:`tests.production.worker.StoreClient`'s operations.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.production.workload import APP_CONFIG_ENV, ENGINE_OPTIONS, Counts, increment
from typed_session_sql import SessionStore, SqlBackend
from typed_session_sql.asgi import CookieSettings, SessionMiddleware, get_session

_config = json.loads(os.environ.get(APP_CONFIG_ENV, "{}"))
backend = SqlBackend.from_url(
    _config.get("url", "sqlite+aiosqlite://"),
    table_name=_config.get("table", "sessions"),
    **(_config.get("engine", ENGINE_OPTIONS) if "url" in _config else {}),
)
store = SessionStore(Counts, backend)


async def inc(request: Request) -> JSONResponse:
    session = await get_session(request)
    if session.is_new:  # the shared session did not load: never make a new one instead
        return JSONResponse({"missing": True}, status_code=410)
    key = request.path_params["key"]
    loaded = session.data.counts.get(key, 0)
    session.modify(increment(key))
    return JSONResponse({"loaded": loaded})


async def sign_in(request: Request) -> JSONResponse:
    session = await get_session(request)
    session.sign_in(request.path_params["key"])
    return JSONResponse({})


async def sign_out(request: Request) -> JSONResponse:
    session = await get_session(request)
    if session.is_new:
        return JSONResponse({"missing": True}, status_code=410)
    session.delete()
    return JSONResponse({})


async def whoami(request: Request) -> JSONResponse:
    session = await get_session(request)
    return JSONResponse({"principal": session.principal})


async def create(request: Request) -> JSONResponse:
    session = await get_session(request)
    session.data.counts["pool"] = 1
    return JSONResponse({})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    await backend.dispose()


app = SessionMiddleware(
    Starlette(
        routes=[
            Route("/inc/{key}", inc, methods=["POST"]),
            Route("/signin/{key}", sign_in, methods=["POST"]),
            Route("/signout", sign_out, methods=["POST"]),
            Route("/whoami", whoami, methods=["POST"]),
            Route("/create", create, methods=["POST"]),
        ],
        lifespan=lifespan,
    ),
    store,
    CookieSettings(name="sid", secure=False),
)
