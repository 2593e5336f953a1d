"""The app the web benchmark serves under uvicorn: one Starlette app, three ways.

``BENCH_APP`` picks the session layer:

- ``none``: no session middleware at all (the floor);
- ``store``: typed-session-sql's ``SessionMiddleware`` over ``SqlBackend.from_url`` on
  PostgreSQL (``BENCH_PG_URL``, table ``BENCH_TABLE``);
- ``starsessions``: starsessions' ``SessionMiddleware`` over its ``RedisStore``
  (``BENCH_REDIS_HOST``, ``BENCH_REDIS_PORT``, keys under ``BENCH_REDIS_PREFIX``).

Routes: ``GET /none`` never touches the session; ``GET /read`` reads one field of it;
``POST /write`` adds one to a counter in it. Without middleware, /read and /write answer
the same as /none.

    BENCH_APP=store ... python -m uvicorn web_app:app --app-dir benchmarks
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from contenders import Visitor
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from typed_session_sql import SessionStore, SqlBackend
from typed_session_sql.asgi import SessionMiddleware, get_session

Handler = Callable[[Request], Any]


async def untouched(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def bump(visitor: Visitor) -> None:
    visitor.counter += 1


def store_app() -> Starlette:
    backend = SqlBackend.from_url(
        os.environ["BENCH_PG_URL"], table_name=os.environ["BENCH_TABLE"], pool_size=16
    )
    store = SessionStore(Visitor, backend)

    async def read(request: Request) -> PlainTextResponse:
        session = await get_session(request)
        return PlainTextResponse(str(session.data.counter))

    async def write(request: Request) -> PlainTextResponse:
        session = await get_session(request)
        session.modify(bump)
        return PlainTextResponse(str(session.data.counter))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await backend.dispose()

    return Starlette(
        routes=_routes(read, write),
        middleware=[Middleware(SessionMiddleware, store=store)],
        lifespan=lifespan,
    )


def starsessions_app() -> Starlette:
    from redis.asyncio import Redis
    from starsessions import SessionMiddleware as StarsessionsMiddleware
    from starsessions import load_session
    from starsessions.stores.redis import RedisStore

    redis = Redis(host=os.environ["BENCH_REDIS_HOST"], port=int(os.environ["BENCH_REDIS_PORT"]))
    store = RedisStore(connection=redis, prefix=os.environ["BENCH_REDIS_PREFIX"])

    async def read(request: Request) -> PlainTextResponse:
        await load_session(request)
        return PlainTextResponse(str(request.session.get("counter")))

    async def write(request: Request) -> PlainTextResponse:
        await load_session(request)
        request.session["counter"] = request.session.get("counter", 0) + 1
        return PlainTextResponse(str(request.session["counter"]))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await redis.aclose()

    return Starlette(
        routes=_routes(read, write),
        middleware=[
            Middleware(StarsessionsMiddleware, store=store, lifetime=3600, cookie_https_only=False)
        ],
        lifespan=lifespan,
    )


def bare_app() -> Starlette:
    return Starlette(routes=_routes(untouched, untouched))


def _routes(read: Handler, write: Handler) -> list[Route]:
    return [
        Route("/none", untouched),
        Route("/read", read),
        Route("/write", write, methods=["POST"]),
    ]


APPS = {"none": bare_app, "store": store_app, "starsessions": starsessions_app}
app = APPS[os.environ.get("BENCH_APP", "none")]()
