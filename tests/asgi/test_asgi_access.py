"""``store.session``: the request's session, typed by the store that made it."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.asgi_apps import Cart
from typed_session_sql import MemoryBackend, SessionStore
from typed_session_sql.asgi import CookieSettings, SessionMiddleware, get_session

pytestmark = pytest.mark.anyio

SNIPPET = """\
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from typed_session_sql import MemoryBackend, Session, SessionStore


@dataclass
class Cart:
    items: list[int] = field(default_factory=list)


store = SessionStore(Cart, MemoryBackend())
CartSession = Annotated[Session[Cart], Depends(store.session)]


async def handler(request: Request) -> None:
    reveal_type(await store.session(request))
    right: Session[Cart] = await store.session(request)
    wrong: Session[int] = await store.session(request)  # the line mypy must refuse
"""


def test_a_wrong_annotation_fails_mypy_strict(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(SNIPPET)  # run there: its own cache, no config
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "snippet.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.splitlines()
    wrong_line = SNIPPET.splitlines().index(
        "    wrong: Session[int] = await store.session(request)  # the line mypy must refuse"
    )
    revealed = "typed_session_sql.session.Session[snippet.Cart]"
    assert lines == [
        f'snippet.py:{wrong_line - 1}: note: Revealed type is "{revealed}"',
        f"snippet.py:{wrong_line + 1}: error: Incompatible types in assignment (expression has "
        'type "Session[Cart]", variable has type "Session[int]")  [assignment]',
    ], result.stdout + result.stderr


@dataclass
class Visit:
    pages: int = 0


async def test_each_store_finds_its_own_session_under_two_middlewares() -> None:
    carts = SessionStore(Cart, MemoryBackend())
    visits = SessionStore(Visit, MemoryBackend())

    async def both(request: Request) -> PlainTextResponse:
        cart = await carts.session(request)
        visit = await visits.session(request)
        cart.modify(lambda data: data.items.append("apple"))
        visit.modify(lambda data: setattr(data, "pages", data.pages + 1))
        innermost = await get_session(request)
        return PlainTextResponse(f"{len(cart.data.items)} {visit.data.pages} {innermost is visit}")

    app = Starlette(
        routes=[Route("/", both)],
        middleware=[
            Middleware(SessionMiddleware, store=carts, cookie=CookieSettings(name="__Host-cart")),
            Middleware(SessionMiddleware, store=visits, cookie=CookieSettings(name="__Host-v")),
        ],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        assert (await client.get("/")).text == "1 1 True"
        assert (await client.get("/")).text == "2 2 True"
    assert len(carts.backend.rows) == len(visits.backend.rows) == 1  # type: ignore[attr-defined]


async def test_a_store_without_its_middleware_is_a_loud_error() -> None:
    wrapped = SessionStore(Cart, MemoryBackend())
    other = SessionStore(Cart, MemoryBackend())
    errors: list[str] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        try:
            await other.session(request)
        except RuntimeError as error:
            errors.append(str(error))
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", endpoint)], middleware=[Middleware(SessionMiddleware, store=wrapped)]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        await client.get("/")
    assert len(errors) == 1
    assert re.fullmatch(
        r"no SessionMiddleware with SessionStore\(.*\) wraps this request", errors[0]
    )


def test_the_accessor_looks_like_a_request_dependency_to_fastapi() -> None:
    store = SessionStore(Cart, MemoryBackend())
    (parameter,) = inspect.signature(store.session).parameters.values()
    assert parameter.annotation is HTTPConnection  # FastAPI injects Request or WebSocket
    assert store.session == store.session
    assert hash(store.session) == hash(store.session)
    assert repr(store.session).endswith(".session")


def test_request_session_needs_a_store_of_dicts() -> None:
    with pytest.raises(TypeError, match=r"SessionStore\(dict, backend\)"):
        SessionMiddleware(
            never_called, store=SessionStore(Cart, MemoryBackend()), request_session=True
        )


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("never called")
