"""A Secure cookie set over plain HTTP on a host other than localhost: the browser drops
it, sign-in "works" and nothing sticks. The middleware says so once per process."""

from __future__ import annotations

import logging

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tests.models import Cart
from typed_session_sql import MemoryBackend, SessionStore, asgi
from typed_session_sql.asgi import CookieSettings, SessionMiddleware

WARNING = "a Secure session cookie was set on a plain-HTTP request"


def app_for(cookie: CookieSettings | None = None) -> Starlette:
    store = SessionStore(Cart, MemoryBackend())

    async def sign_in(request: Request) -> PlainTextResponse:
        (await store.session(request)).sign_in("ada")
        return PlainTextResponse("signed in")

    app = Starlette(routes=[Route("/sign-in", sign_in, methods=["POST"])])
    app.add_middleware(SessionMiddleware, store=store, cookie=cookie)
    return app


@pytest.fixture(autouse=True)
def not_warned_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asgi, "_warned_about_plain_http", False)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "typed_session_sql" and record.levelno == logging.WARNING
    ]


def test_a_secure_cookie_over_plain_http_elsewhere_is_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestClient(app_for(), base_url="http://192.0.2.2:8107") as client:
        for _ in range(3):
            assert client.post("/sign-in").headers["set-cookie"].startswith("__Host-id=")
    (message,) = warnings_logged(caplog)
    assert message.startswith(WARNING + " to '192.0.2.2'")
    assert "docs/asgi.md" in message
    assert "__Host-id=" not in message  # no cookie value


@pytest.mark.parametrize(
    ("base_url", "headers"),
    [
        ("https://shop.example", {}),  # HTTPS: the cookie sticks
        ("http://localhost:8000", {}),  # browsers treat localhost as secure
        ("http://127.0.0.1:8000", {}),
        ("http://[::1]:8000", {}),
        ("http://app.localhost", {}),
        ("http://testserver", {}),  # test clients: docs/testing.md
        ("http://shop.example", {"x-forwarded-proto": "https"}),  # the proxy's settings decide
        ("http://shop.example", {"forwarded": "proto=https"}),
    ],
)
def test_no_warning_where_the_cookie_sticks_or_a_proxy_decides(
    base_url: str, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(app_for(), base_url=base_url) as client:
        client.post("/sign-in", headers=headers)
    assert warnings_logged(caplog) == []


def test_no_warning_for_a_cookie_that_is_not_secure(caplog: pytest.LogCaptureFixture) -> None:
    cookie = CookieSettings(name="id", secure=False)
    with TestClient(app_for(cookie), base_url="http://shop.example") as client:
        client.post("/sign-in")
    assert warnings_logged(caplog) == []
