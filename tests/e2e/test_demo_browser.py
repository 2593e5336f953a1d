"""The demo in a real browser: headless Chromium (Debian's package) driven by Playwright.

Starts ``typed-session-sql demo`` with uvicorn in a subprocess on a free port and a fresh
SQLite file, then looks around anonymously, signs in, reloads, fills the cart and signs
out, checking the cookie jar, the stored rows and the security headers at every step, and
that the Content-Security-Policy blocks nothing the page needs. Skips when
/usr/bin/chromium is missing, unless ``TYPED_SESSION_SQL_REQUIRE_BROWSER=1`` (CI), where it
fails instead.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import serve, sqlite_rows
from tests.selection import unavailable

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.browser


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    unavailable(f"{CHROMIUM} is missing (apt-get install chromium)", "BROWSER")


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


@pytest.fixture
def demo_url(tmp_path: Path, database: Path) -> Iterator[str]:
    """The running demo's base URL; the server stops when the test ends."""

    def command(port: int) -> list[str]:
        program = "import sys; from typed_session_sql.cli import main; sys.exit(main())"
        url = f"sqlite+aiosqlite:///{database}"
        return [sys.executable, "-c", program, "demo", "--port", str(port), "--url", url]

    with serve(command, cwd=tmp_path) as server:
        yield server.url
    assert "Traceback" not in server.text, server.text


def cookie_names(context: Any) -> list[str]:
    return sorted(cookie["name"] for cookie in context.cookies())


def assert_security_headers(response: Any) -> None:
    headers = response.headers
    assert headers["content-security-policy"].startswith("default-src 'none'; style-src 'sha256-")
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cache-control"] == "no-store"


def session_cookie(context: Any) -> dict[str, Any]:
    """The one session cookie in the jar, after checking every attribute it must have."""
    (cookie,) = [cookie for cookie in context.cookies() if cookie["name"] == "__Host-id"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie["value"])
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["domain"] == "127.0.0.1"  # host-only: no Domain attribute was sent
    assert cookie["expires"] == -1  # a browser-session cookie: no Max-Age, no Expires
    return dict(cookie)


def test_sign_in_reload_cart_sign_out_in_chromium(
    demo_url: str, tmp_path: Path, database: Path
) -> None:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("TYPED_SESSION_SQL_SCREENSHOTS", tmp_path))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        context = browser.new_context()
        page = context.new_page()
        problems: list[str] = []  # a CSP violation is a console error
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))

        # Looking around stores nothing: a CSRF nonce cookie, no session, no row.
        for path in ("/", "/session", "/"):
            response = page.goto(demo_url + path)
            assert response is not None
            assert_security_headers(response)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert cookie_names(context) == ["__Host-csrf"]
        assert sqlite_rows(database) == 0
        assert page.evaluate("document.cookie") == ""  # HttpOnly: invisible to scripts
        # The stylesheet is allowed by its hash: the button has the accent colour.
        button = page.get_by_role("button", name="Sign in")
        colour = button.evaluate("element => getComputedStyle(element).backgroundColor")
        assert colour == "rgb(29, 78, 216)"

        page.get_by_label("Your name").fill("Ada")
        button.click()
        expect(page.get_by_role("heading", name="Hello, Ada")).to_be_visible()
        signed_in = session_cookie(context)["value"]
        assert cookie_names(context) == ["__Host-csrf", "__Host-id"]
        assert sqlite_rows(database) == 1

        page.reload()
        expect(page.get_by_role("heading", name="Hello, Ada")).to_be_visible()
        assert session_cookie(context)["value"] == signed_in

        page.get_by_label("Product").select_option("plum")
        page.get_by_label("Quantity").fill("3")
        page.get_by_role("button", name="Add to cart").click()
        expect(page.get_by_role("row", name="Plum 3")).to_be_visible()
        assert session_cookie(context)["value"] == signed_in  # a change keeps the id
        page.screenshot(path=str(shots / "demo-cart.png"), full_page=True)

        page.get_by_role("link", name="Session", exact=True).click()
        expect(page.get_by_text("Version", exact=True)).to_be_visible()
        expect(page.get_by_text("Expires", exact=True)).to_be_visible()
        page.screenshot(path=str(shots / "demo-session.png"), full_page=True)

        page.get_by_role("link", name="Cart", exact=True).click()
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert cookie_names(context) == ["__Host-csrf"]  # signed out: no session cookie
        assert sqlite_rows(database) == 0
        assert problems == []

        # The signed-out cookie, replayed from elsewhere, is worth nothing.
        replay = browser.new_context().request.get(
            demo_url + "/", headers={"cookie": f"__Host-id={signed_in}"}
        )
        assert "<h1>Sign in</h1>" in replay.text()
        browser.close()


def test_a_csrf_token_taken_from_another_browser_is_refused(demo_url: str) -> None:
    """Ada's form token, alone or with her CSRF cookie, is worthless in Eve's browser: the
    token is bound to the session it was issued to."""
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        pages = []
        for name in ("Ada", "Eve"):
            page = browser.new_context().new_page()
            page.goto(demo_url + "/")
            page.get_by_label("Your name").fill(name)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name=f"Hello, {name}")).to_be_visible()
            pages.append(page)
        ada, eve = pages
        field = 'form[action="/cart"] input[name="csrf_token"]'
        token = ada.locator(field).input_value()
        (ada_csrf,) = [c for c in ada.context.cookies() if c["name"] == "__Host-csrf"]

        def add_to_cart_with_adas_token() -> None:
            eve.goto(demo_url + "/")
            eve.locator(field).evaluate("(input, token) => { input.value = token; }", token)
            eve.get_by_role("button", name="Add to cart").click()
            expect(eve.get_by_role("heading", name="This form has expired")).to_be_visible()

        add_to_cart_with_adas_token()  # the token alone
        pair = {key: value for key, value in ada_csrf.items() if key != "partitionKey"}
        eve.context.add_cookies([pair])  # type: ignore[list-item]  # the whole pair
        (eve_csrf,) = [c for c in eve.context.cookies() if c["name"] == "__Host-csrf"]
        assert eve_csrf["value"] == ada_csrf["value"]
        add_to_cart_with_adas_token()

        eve.goto(demo_url + "/")  # Eve's own forms still work, and her cart is untouched
        expect(eve.get_by_text("Your cart is empty.")).to_be_visible()
        eve.get_by_role("button", name="Add to cart").click()
        expect(eve.get_by_role("row", name="Apple 1")).to_be_visible()
        browser.close()
