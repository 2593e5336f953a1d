"""The demo app in process, through httpx, on a fresh SQLite file migrated at start."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from typed_session_sql.cli import build_parser
from typed_session_sql.demo.app import create_app

pytestmark = pytest.mark.anyio

COOKIE = re.compile(r"__Host-id=([A-Za-z0-9_-]{43}); Path=/; Secure; HttpOnly; SameSite=Lax")
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Visitor:
    """A client that holds one session cookie, set and cleared the way a browser would."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.cookie: str | None = None

    async def go(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = {} if self.cookie is None else {"cookie": f"__Host-id={self.cookie}"}
        response = await self.client.request(method, path, headers=headers, data=form)
        self.client.cookies.clear()
        for header in response.headers.get_list("set-cookie"):
            match = COOKIE.fullmatch(header)
            self.cookie = match.group(1) if match else None
        return response

    async def token(self) -> str:
        match = TOKEN.search((await self.go("GET", "/")).text)
        assert match is not None
        return match.group(1)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://localhost") as client:
            yield client


@pytest.fixture
def visitor(client: httpx.AsyncClient) -> Visitor:
    return Visitor(client)


async def signed_in_visitor(client: httpx.AsyncClient, name: str) -> Visitor:
    visitor = Visitor(client)
    token = await visitor.token()
    assert (await visitor.go("POST", "/sign-in", {"name": name, "csrf_token": token})).is_redirect
    return visitor


async def test_sign_in_fill_the_cart_see_the_session_and_sign_out(visitor: Visitor) -> None:
    first = await visitor.go("GET", "/")
    assert "<h1>Sign in</h1>" in first.text
    anonymous = visitor.cookie
    assert anonymous is not None  # the sign-in form's CSRF token lives in the session
    token = await visitor.token()

    signed_in = await visitor.go("POST", "/sign-in", {"name": "Ada", "csrf_token": token})
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/"
    assert visitor.cookie not in (None, anonymous)  # rotated on sign-in

    token = await visitor.token()
    for quantity in ("2", "3"):
        form = {"product": "pear", "quantity": quantity, "csrf_token": token}
        assert (await visitor.go("POST", "/cart", form)).status_code == 303
    page = (await visitor.go("GET", "/")).text
    assert "Hello, Ada" in page
    assert '<td>Pear</td><td class="num">5</td>' in page

    session = (await visitor.go("GET", "/session")).text
    assert "<dt>Version</dt><dd>" in session
    assert re.search(r"<dt>Expires</dt><dd><time datetime=\"20", session)

    out = await visitor.go("POST", "/sign-out", {"csrf_token": token})
    assert out.status_code == 303
    assert out.headers["set-cookie"].startswith("__Host-id=; Max-Age=0;")
    assert visitor.cookie is None
    assert "<h1>Sign in</h1>" in (await visitor.go("GET", "/")).text


async def test_the_pre_sign_in_id_is_worthless_after_sign_in(visitor: Visitor) -> None:
    token = await visitor.token()
    planted = visitor.cookie
    await visitor.go("POST", "/sign-in", {"name": "Ada", "csrf_token": token})
    visitor.cookie = planted
    assert "<h1>Sign in</h1>" in (await visitor.go("GET", "/")).text


async def test_a_user_signs_out_their_other_sessions(client: httpx.AsyncClient) -> None:
    laptop = await signed_in_visitor(client, "Ada")
    phone = await signed_in_visitor(client, "Ada")
    other_user = await signed_in_visitor(client, "Grace")

    page = (await laptop.go("GET", "/session")).text
    assert "<h2>Your sessions</h2>" in page
    assert page.count("<tr><td><time") == 2  # Ada's two, not Grace's
    assert page.count("this one") == 1
    assert laptop.cookie is not None
    assert laptop.cookie not in page  # listed without any cookie value

    token = await laptop.token()
    refused = await laptop.go("POST", "/sign-out-others", {"csrf_token": "forged"})
    assert refused.status_code == 403
    assert "Hello, Ada" in (await phone.go("GET", "/")).text

    done = await laptop.go("POST", "/sign-out-others", {"csrf_token": token})
    assert done.status_code == 303
    assert "<h1>Sign in</h1>" in (await phone.go("GET", "/")).text  # anonymous now
    assert "Hello, Ada" in (await laptop.go("GET", "/")).text
    assert "Hello, Grace" in (await other_user.go("GET", "/")).text
    page = (await laptop.go("GET", "/session")).text
    assert page.count("<tr><td><time") == 1
    assert "Sign out other sessions" not in page


@pytest.mark.parametrize("sent", [None, "", "forged"])
async def test_forms_without_the_sessions_csrf_token_are_refused(
    visitor: Visitor, sent: str | None
) -> None:
    await visitor.token()
    form = {"name": "Mallory"} if sent is None else {"name": "Mallory", "csrf_token": sent}
    response = await visitor.go("POST", "/sign-in", form)
    assert response.status_code == 403
    assert "Hello" not in (await visitor.go("GET", "/")).text


async def test_a_form_from_a_browser_without_a_session_is_refused(visitor: Visitor) -> None:
    response = await visitor.go("POST", "/sign-in", {"name": "Mallory", "csrf_token": ""})
    assert response.status_code == 403


async def test_names_are_escaped(visitor: Visitor) -> None:
    token = await visitor.token()
    await visitor.go("POST", "/sign-in", {"name": "<b>Ada</b>", "csrf_token": token})
    page = (await visitor.go("GET", "/")).text
    assert "Hello, &lt;b&gt;Ada&lt;/b&gt;" in page
    assert "<b>Ada" not in page


async def test_the_database_is_migrated_on_start(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    app = create_app(f"sqlite+aiosqlite:///{path}")
    async with app.router.lifespan_context(app):
        pass
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "typed_sessions" in tables
    assert any("alembic" in table for table in tables)


def test_the_demo_command_defaults_to_localhost_8000() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.url) == ("127.0.0.1", 8000, None)
    args = build_parser().parse_args(["demo", "--host", "0.0.0.0", "--port", "9000", "--url", "x"])
    assert (args.host, args.port, args.url) == ("0.0.0.0", 9000, "x")
