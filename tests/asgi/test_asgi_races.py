"""Rotation races end to end: what the browser holds after two requests overlap.

Two requests leave the browser with the same cookie. The slow one loads its session and
waits; the fast one runs to the end and its response reaches the browser; then the slow
one finishes, and its response arrives last. A cookie jar applies each ``Set-Cookie`` in
that order, as a browser does. Whatever the slow request does, the browser must end with
the winner's cookie, or with none after a sign-out. Every race runs in each framework on
memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import anyio
import httpx
import pytest

from tests.asgi_apps import APP_FACTORIES, Cart, Hold
from tests.backends import BACKEND_FACTORIES
from tests.clock import FakeClock
from typed_session_sql import SessionStore
from typed_session_sql.asgi import CookieSettings

pytestmark = pytest.mark.anyio

NAME = "__Host-id"


class CookieJar:
    """One browser's session cookie, changed by each ``Set-Cookie`` in arrival order."""

    def __init__(self) -> None:
        self.value: str | None = None

    def receive(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            pair, *attributes = [part.strip() for part in header.split(";")]
            name, _, value = pair.partition("=")
            if name != NAME:
                continue
            expired = any(attribute.lower() == "max-age=0" for attribute in attributes)
            self.value = None if expired or not value else value

    def headers(self, *, hold: bool = False) -> dict[str, str]:
        headers = {} if self.value is None else {"cookie": f"{NAME}={self.value}"}
        return headers | ({"x-hold": "1"} if hold else {})


@dataclass
class Browser:
    client: httpx.AsyncClient
    hold: Hold
    clock: FakeClock
    jar: CookieJar

    async def go(self, method: str, path: str) -> httpx.Response:
        response = await self.client.request(method, path, headers=self.jar.headers())
        self.client.cookies.clear()  # the jar above is the only cookie store
        self.jar.receive(response)
        return response

    async def race(self, slow: tuple[str, str], fast: tuple[str, str]) -> httpx.Response:
        """Send ``slow``, then ``fast`` once ``slow`` has loaded its session; ``fast``'s
        response arrives first. Returns the slow response."""
        responses: list[httpx.Response] = []

        async def send_slow() -> None:
            method, path = slow
            response = await self.client.request(method, path, headers=self.jar.headers(hold=True))
            responses.append(response)

        async with anyio.create_task_group() as group:
            group.start_soon(send_slow)
            await self.hold.loaded.wait()
            await self.go(*fast)
            self.hold.released.set()
        self.client.cookies.clear()
        (slow_response,) = responses
        self.jar.receive(slow_response)
        return slow_response


@pytest.fixture(params=sorted(APP_FACTORIES))
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings() -> CookieSettings:
    return CookieSettings()


@pytest.fixture
async def browser(
    framework: str, store_backend: str, clock: FakeClock, settings: CookieSettings
) -> AsyncIterator[Browser]:
    factory, _ = BACKEND_FACTORIES[store_backend]
    async with factory() as backend:
        store = SessionStore(Cart, backend, clock=clock)
        hold = Hold()
        app = APP_FACTORIES[framework](store, settings, hold=hold)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            yield Browser(client, hold, clock, CookieJar())


async def signed_in_then_renewal_due(browser: Browser) -> str:
    await browser.go("POST", "/add")  # an anonymous session with a cart
    browser.clock.advance(timedelta(minutes=10))  # its renewal is due on the next load
    assert browser.jar.value is not None
    return browser.jar.value


async def assert_signed_in_with(browser: Browser, before: str) -> None:
    assert browser.jar.value not in (None, before)  # the sign-in's fresh cookie survived
    shown = await browser.go("GET", "/show")
    assert shown.text == "user=ada items=1"
    assert browser.jar.value is not None


@pytest.mark.parametrize("settings", [CookieSettings(persistent=True)])
async def test_a_renewal_racing_a_sign_in_does_not_undo_it(browser: Browser) -> None:
    before = await signed_in_then_renewal_due(browser)
    slow = await browser.race(slow=("GET", "/show"), fast=("POST", "/login"))
    assert slow.status_code == 200
    assert slow.headers.get_list("set-cookie") == []  # the touch changed no row
    await assert_signed_in_with(browser, before)


async def test_a_modify_racing_a_sign_in_is_a_409_that_keeps_the_new_cookie(
    browser: Browser,
) -> None:
    before = await signed_in_then_renewal_due(browser)
    slow = await browser.race(slow=("POST", "/add"), fast=("POST", "/login"))
    assert slow.status_code == 409
    assert slow.headers.get_list("set-cookie") == []
    await assert_signed_in_with(browser, before)


async def test_a_sign_in_submitted_twice_keeps_the_first_sign_ins_cookie(browser: Browser) -> None:
    before = await signed_in_then_renewal_due(browser)
    slow = await browser.race(slow=("POST", "/login"), fast=("POST", "/login"))
    assert slow.status_code == 409
    assert slow.headers.get_list("set-cookie") == []
    await assert_signed_in_with(browser, before)


@pytest.mark.parametrize("settings", [CookieSettings(persistent=True)])
async def test_a_renewal_racing_a_sign_out_does_not_bring_the_cookie_back(
    browser: Browser,
) -> None:
    before = await signed_in_then_renewal_due(browser)
    slow = await browser.race(slow=("GET", "/show"), fast=("POST", "/logout"))
    assert slow.status_code == 200
    assert slow.headers.get_list("set-cookie") == []
    assert browser.jar.value is None
    browser.jar.value = before  # replayed from elsewhere: dead
    assert (await browser.go("GET", "/show")).text == "user=None items=0"


async def test_a_session_deleted_by_this_request_still_gets_its_deletion_cookie(
    browser: Browser,
) -> None:
    # Sign-out clicked twice: the slow one finds the row already gone, and still clears the
    # cookie, since this request asked for the deletion.
    await signed_in_then_renewal_due(browser)
    slow = await browser.race(slow=("POST", "/logout"), fast=("POST", "/logout"))
    assert slow.status_code == 200
    assert [header.split(";")[0] for header in slow.headers.get_list("set-cookie")] == [f"{NAME}="]
    assert browser.jar.value is None
