"""The demo in a real browser: headless Chromium (Debian's package) driven by Playwright.

Starts ``typed-session-sql demo`` with uvicorn in a subprocess on a free port and a fresh
SQLite file, then signs in, reloads, fills the cart and signs out, checking the cookie jar
at every step. Skips when /usr/bin/chromium is missing, unless
``TYPED_SESSION_SQL_REQUIRE_BROWSER=1`` (CI), where it fails instead.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
STARTUP_TIMEOUT = 60.0  # seconds: a bound on a hung start, not a wait for time to pass

pytestmark = pytest.mark.browser


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("TYPED_SESSION_SQL_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " and TYPED_SESSION_SQL_REQUIRE_BROWSER=1")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def demo_url(tmp_path: Path) -> Iterator[str]:
    """The running demo's base URL; the server stops when the test ends."""
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "import sys; from typed_session_sql.cli import main; sys.exit(main())",
        "demo",
        "--port",
        str(port),
        "--url",
        f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}",
    ]
    server = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(STARTUP_TIMEOUT, server.kill)
    watchdog.start()
    log: list[str] = []
    assert server.stderr is not None
    for line in server.stderr:  # uvicorn says when it listens; no polling, no sleeping
        log.append(line)
        if "Application startup complete" in line:
            break
    watchdog.cancel()
    if server.poll() is not None:
        pytest.fail("the demo did not start:\n" + "".join(log))
    drain = threading.Thread(target=lambda: log.extend(server.stderr or ()), daemon=True)
    drain.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        drain.join(timeout=30)
    assert not any("Traceback" in line for line in log), "".join(log)


def session_cookie(context: Any) -> dict[str, Any]:
    """The one session cookie in the jar, after checking every attribute it must have."""
    jar = context.cookies()
    assert [cookie["name"] for cookie in jar] == ["__Host-id"], jar
    (cookie,) = jar
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie["value"])
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["domain"] == "127.0.0.1"  # host-only: no Domain attribute was sent
    assert cookie["expires"] == -1  # a browser-session cookie: no Max-Age, no Expires
    return dict(cookie)


def test_sign_in_reload_cart_sign_out_in_chromium(demo_url: str, tmp_path: Path) -> None:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("TYPED_SESSION_SQL_SCREENSHOTS", tmp_path))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        context = browser.new_context()
        page = context.new_page()

        page.goto(demo_url + "/")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        anonymous = session_cookie(context)["value"]
        assert page.evaluate("document.cookie") == ""  # HttpOnly: invisible to scripts

        page.get_by_label("Your name").fill("Ada")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Hello, Ada")).to_be_visible()
        signed_in = session_cookie(context)["value"]
        assert signed_in != anonymous  # rotated on sign-in

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
        after = session_cookie(context)["value"]  # the sign-in form's fresh anonymous session
        assert after not in (anonymous, signed_in)

        # The signed-out cookie, replayed from elsewhere, is worth nothing.
        replay = browser.new_context().request.get(
            demo_url + "/", headers={"cookie": f"__Host-id={signed_in}"}
        )
        assert "<h1>Sign in</h1>" in replay.text()
        browser.close()
