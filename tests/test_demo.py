"""The demo app in process, through httpx, on a fresh SQLite file migrated at start; and the
demo command on a fresh PostgreSQL database."""

from __future__ import annotations

import ast
import base64
import hashlib
import re
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.cookie_jar import CookieJar
from tests.e2e.server import REPOSITORY, fresh_postgres_database, serve, sqlite_rows
from typed_session_sql.cli import build_parser
from typed_session_sql.demo.app import create_app
from typed_session_sql.demo.forms import MAX_FORM_BYTES

pytestmark = pytest.mark.anyio

SESSION, CSRF = "__Host-id", "__Host-csrf"
ATTRIBUTES = "; Path=/; Secure; HttpOnly; SameSite=Lax"
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Visitor(CookieJar):
    """A browser for the demo: every cookie hardened alike, forms sent urlencoded."""

    def check(self, header: str) -> None:
        assert header.endswith(ATTRIBUTES), header

    async def go(  # type: ignore[override]
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await super().go(method, path, headers, data=form)

    async def token(self) -> str:
        match = TOKEN.search((await self.go("GET", "/")).text)
        assert match is not None
        return match.group(1)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
async def app(database: Path) -> AsyncIterator[Starlette]:
    app = create_app(f"sqlite+aiosqlite:///{database}")
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
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


async def test_sign_in_fill_the_cart_see_the_session_and_sign_out(
    visitor: Visitor, database: Path
) -> None:
    first = await visitor.go("GET", "/")
    assert "<h1>Sign in</h1>" in first.text
    assert list(visitor.cookies) == [CSRF]  # a CSRF nonce, no session: nothing stored
    token = await visitor.token()

    signed_in = await visitor.go("POST", "/sign-in", {"name": "Ada", "csrf_token": token})
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/"
    assert sorted(visitor.cookies) == [CSRF, SESSION]
    assert sqlite_rows(database) == 1

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
    assert SESSION not in visitor.cookies
    assert sqlite_rows(database) == 0
    assert "<h1>Sign in</h1>" in (await visitor.go("GET", "/")).text


async def test_looking_at_pages_stores_nothing(client: httpx.AsyncClient, database: Path) -> None:
    returning = Visitor(client)  # keeps its CSRF cookie
    for number in range(300):
        path = "/" if number % 2 else "/session"
        visitor = returning if number % 3 else Visitor(client)  # some come back, some not
        response = await visitor.go("GET", path)
        assert response.status_code == 200
        assert SESSION not in visitor.cookies
    assert sqlite_rows(database) == 0


async def test_a_planted_session_id_is_worthless_after_sign_in(client: httpx.AsyncClient) -> None:
    mallory = await signed_in_visitor(client, "Mallory")
    token = await mallory.token()
    await mallory.go("POST", "/cart", {"product": "fig", "quantity": "9", "csrf_token": token})
    victim = Visitor(client)
    victim.cookies[SESSION] = mallory.cookies[SESSION]  # planted by the attacker
    token = await victim.token()
    await victim.go("POST", "/sign-in", {"name": "Ada", "csrf_token": token})
    assert victim.cookies[SESSION] != mallory.cookies[SESSION]
    page = (await victim.go("GET", "/")).text
    assert "Hello, Ada" in page
    assert "Your cart is empty." in page  # not Mallory's figs
    assert "<h1>Sign in</h1>" in (await mallory.go("GET", "/")).text  # the planted id is dead


async def test_a_user_signs_out_their_other_sessions(client: httpx.AsyncClient) -> None:
    laptop = await signed_in_visitor(client, "Ada")
    phone = await signed_in_visitor(client, "Ada")
    other_user = await signed_in_visitor(client, "Grace")

    page = (await laptop.go("GET", "/session")).text
    assert "<h2>Your sessions</h2>" in page
    assert page.count("<tr><td><time") == 2  # Ada's two, not Grace's
    assert page.count("this one") == 1
    assert laptop.cookies[SESSION] not in page  # listed without any cookie value

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


# -- CSRF and the form's body ---------------------------------------------------------------


@pytest.mark.parametrize("sent", [None, "", "forged", "other-nonce"])
async def test_forms_without_the_right_csrf_token_are_refused(
    visitor: Visitor, client: httpx.AsyncClient, database: Path, sent: str | None
) -> None:
    await visitor.token()
    if sent == "other-nonce":
        sent = await Visitor(client).token()  # a real token, of another browser's nonce
    form = {"name": "Mallory"} if sent is None else {"name": "Mallory", "csrf_token": sent}
    response = await visitor.go("POST", "/sign-in", form)
    assert response.status_code == 403
    assert "Hello" not in (await visitor.go("GET", "/")).text
    assert sqlite_rows(database) == 0


async def test_a_token_from_before_sign_in_is_worthless_after_it(visitor: Visitor) -> None:
    before = await visitor.token()
    await visitor.go("POST", "/sign-in", {"name": "Ada", "csrf_token": before})
    form = {"product": "fig", "quantity": "1", "csrf_token": before}
    assert (await visitor.go("POST", "/cart", form)).status_code == 403


async def test_a_csrf_cookie_and_token_pair_of_another_browser_is_refused(
    client: httpx.AsyncClient,
) -> None:
    ada, eve = await signed_in_visitor(client, "Ada"), await signed_in_visitor(client, "Eve")
    token = await ada.token()
    eve.cookies[CSRF] = ada.cookies[CSRF]  # the pair: Ada's CSRF cookie and her token
    response = await eve.go(
        "POST", "/cart", {"csrf_token": token, "product": "fig", "quantity": "1"}
    )
    assert response.status_code == 403
    assert "<h1>This form has expired</h1>" in response.text
    assert "Your cart is empty." in (await eve.go("GET", "/")).text


class Upload:
    """Calls the app's ASGI interface directly with a large body, counting the chunks the
    app actually pulls from ``receive``."""

    CHUNK = b"name=" + b"x" * 1019

    def __init__(self, app: Any, chunks: int) -> None:
        self.app, self.chunks, self.read = app, chunks, 0

    async def post(self, path: str, headers: list[tuple[bytes, bytes]]) -> int:
        started: list[int] = []

        async def receive() -> dict[str, Any]:
            self.read += 1
            more = self.read < self.chunks
            return {"type": "http.request", "body": self.CHUNK, "more_body": more}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.append(message["status"])

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "https",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"localhost"), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("localhost", 443),
        }
        await self.app(scope, receive, send)
        (status,) = started
        return status


FORM = (b"content-type", b"application/x-www-form-urlencoded")
EIGHT_MIB = 8 * 1024


CAPPED = MAX_FORM_BYTES // len(Upload.CHUNK) + 1  # chunks that hold the demo's largest form


@pytest.mark.parametrize(
    ("case", "status", "most_read"),
    [
        ("no-csrf-cookie", 403, 0),
        ("cross-site", 403, 0),
        ("no-token-in-the-form", 403, CAPPED),  # the middleware looked as far as a form goes
        ("declared-too-large", 413, 0),
        ("not-a-form", 415, 0),
        ("chunked-too-large", 413, CAPPED),
    ],
)
async def test_a_form_that_cannot_pass_is_refused_before_its_body_is_read(
    visitor: Visitor, app: Starlette, case: str, status: int, most_read: int
) -> None:
    token = (b"x-csrf-token", (await visitor.token()).encode())
    cookie = (b"cookie", f"{CSRF}={visitor.cookies[CSRF]}".encode())
    length = (b"content-length", str(EIGHT_MIB * len(Upload.CHUNK)).encode())
    headers = {
        "no-csrf-cookie": [FORM, length, token],
        "cross-site": [FORM, length, cookie, token, (b"sec-fetch-site", b"cross-site")],
        "no-token-in-the-form": [FORM, length, cookie],
        "declared-too-large": [FORM, length, cookie, token],
        "not-a-form": [
            (b"content-type", b"multipart/form-data; boundary=x"),
            length,
            cookie,
            token,
        ],
        "chunked-too-large": [FORM, cookie, token],
    }[case]
    upload = Upload(app, chunks=EIGHT_MIB)
    assert await upload.post("/sign-in", headers) == status
    assert upload.read <= most_read


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("name=Ada&a=1&b=2&c=3&d=4", 413),  # five fields
        ("name=Ada&name=Eve", 400),  # sent twice
        ("name=%FF", 400),  # not UTF-8
        ("name", 400),  # no '='
        ("name=" + "x" * MAX_FORM_BYTES, 413),
    ],
)
async def test_malformed_or_oversized_forms_are_refused(
    visitor: Visitor, body: str, status: int
) -> None:
    token = await visitor.token()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    content = f"csrf_token={token}&{body}"
    cookie = {"cookie": f"{CSRF}={visitor.cookies[CSRF]}"}
    response = await visitor.client.post("/sign-in", content=content, headers=headers | cookie)
    assert response.status_code == status
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    "quantity",
    ["\u00b2", "\u0663", "\uff13", "0", "100", "-1", " 5", "5 ", "1e2", "0x10", "", "9" * 1000],
    ids=lambda value: ascii(value)[:20],
)
async def test_a_quantity_is_ascii_digits_from_1_to_99_else_400(
    client: httpx.AsyncClient, quantity: str
) -> None:
    ada = await signed_in_visitor(client, "Ada")
    token = await ada.token()
    form = {"product": "pear", "quantity": quantity, "csrf_token": token}
    response = await ada.go("POST", "/cart", form)
    assert response.status_code == 400
    assert "quantity from 1 to 99" in response.text
    assert "Your cart is empty." in (await ada.go("GET", "/")).text


async def test_five_thousand_digits_are_refused_by_the_body_cap(client: httpx.AsyncClient) -> None:
    ada = await signed_in_visitor(client, "Ada")
    token = await ada.token()  # first, as in the demo's forms: the check reads no further
    form = {"csrf_token": token, "product": "pear", "quantity": "9" * 5000}
    assert (await ada.go("POST", "/cart", form)).status_code == 413


@pytest.mark.parametrize("name", ["", " ", "a\x00b", "tab\there", "x" * 41])
async def test_a_bad_name_is_a_400(visitor: Visitor, database: Path, name: str) -> None:
    token = await visitor.token()
    response = await visitor.go("POST", "/sign-in", {"name": name, "csrf_token": token})
    assert response.status_code == 400
    assert "Please enter a name." in response.text
    assert sqlite_rows(database) == 0


async def test_names_are_escaped(visitor: Visitor) -> None:
    token = await visitor.token()
    await visitor.go("POST", "/sign-in", {"name": "<b>Ada</b>", "csrf_token": token})
    page = (await visitor.go("GET", "/")).text
    assert "Hello, &lt;b&gt;Ada&lt;/b&gt;" in page
    assert "<b>Ada" not in page


# -- headers ------------------------------------------------------------------------------


async def test_every_response_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    ada = await signed_in_visitor(client, "Ada")
    token = await ada.token()
    responses = [
        await Visitor(client).go("GET", "/"),
        await ada.go("GET", "/"),
        await ada.go("GET", "/session"),
        await ada.go("POST", "/cart", {"product": "fig", "quantity": "1", "csrf_token": token}),
        await ada.go("POST", "/cart", {"product": "fig", "quantity": "²", "csrf_token": token}),
        await ada.go("POST", "/cart", {"csrf_token": "forged"}),
    ]
    assert [response.status_code for response in responses] == [200, 200, 200, 303, 400, 403]
    style = re.search(r"<style>(.*?)</style>", responses[0].text, flags=re.DOTALL)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    for response in responses:
        headers = response.headers
        assert headers["content-security-policy"] == (
            f"default-src 'none'; style-src 'sha256-{digest}'; img-src data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers.get_list("cache-control") == ["no-store"]


# -- start-up, the command, PostgreSQL ----------------------------------------------------


async def test_the_database_is_migrated_on_start(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    app = create_app(f"sqlite+aiosqlite:///{path}")
    async with app.router.lifespan_context(app):
        pass
    with closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "typed_sessions" in tables
    assert any("alembic" in table for table in tables)


def test_the_demo_command_defaults_to_localhost_8000() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.url) == ("127.0.0.1", 8000, None)
    args = build_parser().parse_args(["demo", "--host", "0.0.0.0", "--port", "9000", "--url", "x"])
    assert (args.host, args.port, args.url) == ("0.0.0.0", 9000, "x")


def test_the_demo_command_runs_on_a_fresh_postgresql_database(tmp_path: Path) -> None:
    with fresh_postgres_database() as url:

        def command(port: int) -> list[str]:
            program = "import sys; from typed_session_sql.cli import main; sys.exit(main())"
            return [sys.executable, "-c", program, "demo", "--port", str(port), "--url", url]

        with serve(command, cwd=tmp_path) as server, httpx.Client(base_url=server.url) as web:
            page = web.get("/")
            token = TOKEN.search(page.text)
            assert token is not None
            nonce = page.headers["set-cookie"].split(";")[0]
            form = {"name": "Ada", "csrf_token": token.group(1)}
            signed_in = web.post("/sign-in", data=form, headers={"cookie": nonce})
            assert signed_in.status_code == 303
            set_cookies = signed_in.headers.get_list("set-cookie")
            # The visitor's CSRF cookie is stale now: the next page gives one of the session.
            assert [header.split("=")[0] for header in set_cookies] == [SESSION]
    assert "Traceback" not in server.text


def test_nox_demo_installs_the_postgres_extra() -> None:
    # `nox -s demo -- --url postgresql+asyncpg://...` needs asyncpg in the demo's venv.
    tree = ast.parse((REPOSITORY / "noxfile.py").read_text())
    (demo,) = [
        node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "demo"
    ]
    installs = [
        argument.value
        for node in ast.walk(demo)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "install"
        for argument in node.args
        if isinstance(argument, ast.Constant)
    ]
    assert ".[demo,postgres]" in installs
