"""The app the web benchmark serves under uvicorn (and in_process.py calls in process):
one Starlette app, four ways.

``BENCH_APP`` picks the session layer:

- ``none``: no session middleware at all (the floor);
- ``store``: typed-session-sql's ``SessionMiddleware`` over ``SqlBackend.from_url`` on
  PostgreSQL (``BENCH_PG_URL``, table ``BENCH_TABLE``);
- ``byhand``: what an application could write by hand on the store's table: cookie ->
  blake3 -> one ``SELECT`` on raw asyncpg's pool (reset off) -> msgspec decode into the
  model; a write then ``UPDATE ... WHERE version = $n``. No middleware: the handlers do
  it. The reference a session read is measured against (issue 19);
- ``starsessions``: starsessions' ``SessionMiddleware`` over its ``RedisStore``
  (``BENCH_REDIS_HOST``, ``BENCH_REDIS_PORT``, keys under ``BENCH_REDIS_PREFIX``).

Routes: ``GET /none`` never touches the session; ``GET /read`` reads one field of it;
``POST /write`` adds one to a counter in it. Without middleware, /read and /write answer
the same as /none.

    BENCH_APP=store ... python -m uvicorn web_app:app --app-dir benchmarks
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import msgspec
from blake3 import blake3
from contenders import CONCURRENCY_MAX, Visitor
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


def store_app(pg_url: str | None = None, table: str | None = None) -> Starlette:
    backend = SqlBackend.from_url(
        pg_url or os.environ["BENCH_PG_URL"],
        table_name=table or os.environ["BENCH_TABLE"],
        pool_size=CONCURRENCY_MAX,
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


async def _no_reset(connection: Any) -> None:
    return None


COOKIE_NAME = b"__Host-id"


def _cookie(request: Request) -> bytes | None:
    """The session cookie's value, as a careful hand-written app finds it: the raw header,
    split on ';' (no framework parser)."""
    headers: list[tuple[bytes, bytes]] = request.scope["headers"]
    for name, value in headers:
        if name == b"cookie":
            for pair in value.split(b";"):
                key, _, found = pair.strip().partition(b"=")
                if key == COOKIE_NAME:
                    return found
    return None


def byhand_app(pg_url: str | None = None, table: str | None = None) -> Starlette:
    url = (pg_url or os.environ["BENCH_PG_URL"]).replace("postgresql+asyncpg", "postgresql")
    name = table or os.environ["BENCH_TABLE"]
    select = f"SELECT data, version, expires_at FROM {name} WHERE id_hash = $1"
    update = f"UPDATE {name} SET data = $1, version = $2 + 1 WHERE id_hash = $3 AND version = $2"
    decoder = msgspec.json.Decoder(Visitor)
    encoder = msgspec.json.Encoder()
    pools: list[Any] = []

    async def load(request: Request) -> tuple[bytes, Visitor, int] | None:
        value = _cookie(request)
        if value is None:
            return None
        id_hash = blake3(value).digest()
        row = await pools[0].fetchrow(select, id_hash)
        if row is None:
            return None
        data, version, expires_at = row
        if expires_at is not None and expires_at <= time.time() * 1e6:  # epoch microseconds
            return None
        return id_hash, decoder.decode(data), version

    async def read(request: Request) -> PlainTextResponse:
        loaded = await load(request)
        return PlainTextResponse(str(loaded[1].counter if loaded else 0))

    async def write(request: Request) -> PlainTextResponse:
        loaded = await load(request)
        if loaded is None:
            return PlainTextResponse("no session", status_code=400)
        id_hash, visitor, version = loaded
        visitor.counter += 1
        status = await pools[0].execute(update, encoder.encode(visitor), version, id_hash)
        if status != "UPDATE 1":
            return PlainTextResponse("conflict", status_code=409)
        return PlainTextResponse(str(visitor.counter))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            url, min_size=CONCURRENCY_MAX, max_size=CONCURRENCY_MAX, reset=_no_reset
        )
        pools.append(pool)
        yield
        await pool.close()

    return Starlette(routes=_routes(read, write), lifespan=lifespan)


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


APPS: dict[str, Callable[[], Starlette]] = {
    "none": bare_app,
    "store": store_app,
    "byhand": byhand_app,
    "starsessions": starsessions_app,
}


def __getattr__(name: str) -> Starlette:
    """``web_app:app``, made on first access (uvicorn's), so in_process.py can import the
    builders without the environment."""
    if name != "app":
        raise AttributeError(name)
    made = APPS[os.environ.get("BENCH_APP", "none")]()
    globals()["app"] = made
    return made
