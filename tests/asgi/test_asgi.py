"""The middleware through httpx, in Starlette, FastAPI and Litestar alike."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest

from tests.asgi_apps import APP_FACTORIES, Cart
from tests.backends import OutageMemoryBackend
from tests.clock import FakeClock
from typed_session_sql import (
    EventKind,
    MemoryBackend,
    Session,
    SessionEvent,
    SessionStore,
    SetCookie,
    StoreUnavailableError,
)
from typed_session_sql.asgi import CookieSettings, SessionMiddleware, get_session
from typed_session_sql.backend import Record
from typed_session_sql.ids import new_cookie_value

pytestmark = pytest.mark.anyio

ATTRIBUTES = "; Path=/; Secure; HttpOnly; SameSite=Lax"
CREATED = re.compile(r"__Host-id=([A-Za-z0-9_-]{43})" + re.escape(ATTRIBUTES))
DELETION = "__Host-id=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT" + ATTRIBUTES


@dataclass
class Site:
    """A framework's app, its store and backend, and a client that keeps no cookie jar."""

    client: httpx.AsyncClient
    backend: OutageMemoryBackend
    store: SessionStore[Cart]
    clock: FakeClock
    events: list[SessionEvent] = field(default_factory=list)

    async def request(
        self, method: str, path: str, cookie: bytes | str | None = None, **kwargs: object
    ) -> httpx.Response:
        headers = {} if cookie is None else {"cookie": cookie}
        response = await self.client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
        self.client.cookies.clear()  # every test says exactly which cookie it sends
        return response

    async def signed_in(self) -> str:
        """A stored session for user ada; returns its cookie value."""
        response = await self.request("POST", "/login")
        match = CREATED.fullmatch(response.headers["set-cookie"])
        assert match is not None
        self.backend.operations.clear()
        self.events.clear()
        return match.group(1)


def cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


@pytest.fixture(params=sorted(APP_FACTORIES))
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings() -> CookieSettings:
    return CookieSettings()


@pytest.fixture
async def site(framework: str, clock: FakeClock, settings: CookieSettings) -> AsyncIterator[Site]:
    backend = OutageMemoryBackend()
    events: list[SessionEvent] = []
    store = SessionStore(Cart, backend, clock=clock, on_event=events.append)
    app = APP_FACTORIES[framework](store, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield Site(client, backend, store, clock, events)


# -- laziness ---------------------------------------------------------------------------


async def test_a_request_that_does_not_use_the_session_costs_nothing(site: Site) -> None:
    cookie = await site.signed_in()
    response = await site.request("GET", "/untouched", f"__Host-id={cookie}")
    assert response.status_code == 200
    assert site.backend.operations == []
    assert cookies(response) == []
    assert "vary" not in response.headers


async def test_no_cookie_means_no_read_and_an_untouched_new_session_no_cookie(site: Site) -> None:
    response = await site.request("GET", "/show")
    assert response.text == "user=None items=0"
    assert site.backend.operations == []
    assert cookies(response) == []
    assert response.headers["vary"] == "Cookie"


async def test_an_unchanged_session_is_read_once_and_its_cookie_not_resent(site: Site) -> None:
    cookie = await site.signed_in()
    response = await site.request("GET", "/show", f"__Host-id={cookie}")
    assert response.text == "user=ada items=0"
    assert site.backend.kinds == ["read"]
    assert cookies(response) == []
    assert response.headers["vary"] == "Cookie"


@pytest.mark.parametrize(
    "value",
    [b"x", b"A" * 8192, b"' OR 1=1 --", b'"quoted"', "é".encode() * 22, b"A" * 42 + b"B"],
    ids=["short", "8k", "sql", "quoted", "non-ascii", "non-canonical"],
)
async def test_a_malformed_cookie_is_anonymous_without_a_backend_call(
    site: Site, value: bytes
) -> None:
    response = await site.request("GET", "/show", b"__Host-id=" + value)
    assert response.status_code == 200
    assert response.text == "user=None items=0"
    assert site.backend.operations == []
    assert EventKind.MALFORMED_COOKIE in [event.kind for event in site.events]


# -- cookie attributes on create, rotate, delete ------------------------------------------


async def test_creating_a_session_sets_a_hardened_browser_session_cookie(site: Site) -> None:
    response = await site.request("POST", "/add")
    assert response.text == "added"
    (set_cookie,) = cookies(response)
    assert CREATED.fullmatch(set_cookie), set_cookie  # no Domain, no Max-Age, no Expires
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "Cookie"
    assert site.backend.kinds == ["create"]


async def test_sign_in_rotates_the_id_and_the_old_one_is_dead(site: Site) -> None:
    before = (await site.request("POST", "/add")).headers["set-cookie"]
    old = CREATED.fullmatch(before)
    assert old is not None
    response = await site.request("POST", "/login", f"__Host-id={old.group(1)}")
    new = CREATED.fullmatch(response.headers["set-cookie"])
    assert new is not None
    assert new.group(1) != old.group(1)
    assert response.headers["cache-control"] == "no-store"
    replay = await site.request("GET", "/show", f"__Host-id={old.group(1)}")
    assert replay.text == "user=None items=0"
    current = await site.request("GET", "/show", f"__Host-id={new.group(1)}")
    assert current.text == "user=ada items=1"


async def test_sign_out_deletes_the_row_and_the_cookie_with_the_same_attributes(site: Site) -> None:
    cookie = await site.signed_in()
    response = await site.request("POST", "/logout", f"__Host-id={cookie}")
    assert cookies(response) == [DELETION]
    assert response.headers["cache-control"] == "no-store"
    assert site.backend.kinds == ["read", "delete"]
    replay = await site.request("GET", "/show", f"__Host-id={cookie}")
    assert replay.text == "user=None items=0"


@pytest.mark.parametrize("cookie", ["unknown", "expired", "duplicate"])
async def test_signing_out_of_a_dead_session_still_clears_the_cookie(
    site: Site, cookie: str
) -> None:
    value = await site.signed_in() if cookie == "expired" else new_cookie_value()
    header = f"__Host-id={value}" + (f"; __Host-id={value}" if cookie == "duplicate" else "")
    site.clock.advance(timedelta(hours=1))  # past the 30-minute idle bound
    response = await site.request("POST", "/logout", header)
    assert cookies(response) == [DELETION]


async def test_signing_out_without_a_cookie_sends_none(site: Site) -> None:
    response = await site.request("POST", "/logout")
    assert cookies(response) == []


async def test_a_save_replaces_the_apps_cache_control(site: Site) -> None:
    # The action's response has no Cache-Control of its own; the cookie's must be no-store
    # whatever the app said, so a shared cache never stores a Set-Cookie.
    response = await site.request("POST", "/login")
    assert response.headers.get_list("cache-control") == ["no-store"]


# -- where the id comes from ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [b"%5F%5FHost-id", b"\xa0__Host-id", "\u3000__Host-id".encode(), b"__host-id", b"__HOST-ID"],
    ids=["percent-encoded", "nbsp-padded", "ideographic-space-padded", "lower-case", "upper-case"],
)
async def test_only_the_exact_cookie_name_counts(site: Site, name: bytes) -> None:
    cookie = await site.signed_in()
    response = await site.request("GET", "/show", name + b"=" + cookie.encode())
    assert response.text == "user=None items=0"
    assert site.backend.operations == []


async def test_the_exact_name_among_other_cookies_is_found(site: Site) -> None:
    cookie = await site.signed_in()
    header = f"theme=dark;__Host-id={cookie} ;  lang=en"
    response = await site.request("GET", "/show", header)
    assert response.text == "user=ada items=0"


@pytest.mark.parametrize("split", [False, True], ids=["one-header", "two-headers"])
async def test_two_session_cookies_mean_no_session(site: Site, split: bool) -> None:
    cookie = await site.signed_in()
    tossed = new_cookie_value()
    if split:
        headers = [("cookie", f"__Host-id={cookie}"), ("cookie", f"__Host-id={tossed}")]
        response = await site.client.get("/show", headers=headers)
    else:
        response = await site.request("GET", "/show", f"__Host-id={cookie}; __Host-id={tossed}")
    assert response.text == "user=None items=0"
    assert site.backend.operations == []
    assert [event.kind for event in site.events] == [EventKind.DUPLICATE_COOKIE]


async def test_an_id_in_the_query_string_is_ignored(site: Site) -> None:
    cookie = await site.signed_in()
    params = {"__Host-id": cookie, "id": cookie, "session": cookie}
    response = await site.request("GET", "/show", params=params)
    assert response.text == "user=None items=0"
    assert site.backend.operations == []


async def test_an_unknown_id_is_never_adopted(site: Site) -> None:
    planted = new_cookie_value()
    response = await site.request("POST", "/add", f"__Host-id={planted}")
    issued = CREATED.fullmatch(response.headers["set-cookie"])
    assert issued is not None
    assert issued.group(1) != planted
    assert site.backend.kinds == ["read", "create"]
    again = await site.request("GET", "/show", f"__Host-id={planted}")
    assert again.text == "user=None items=0"


# -- failures ---------------------------------------------------------------------------


async def test_a_5xx_response_saves_nothing(site: Site) -> None:
    cookie = await site.signed_in()
    response = await site.request("POST", "/boom", f"__Host-id={cookie}")
    assert response.status_code == 500
    assert cookies(response) == []
    assert site.backend.kinds == ["read"]
    fresh = await site.request("POST", "/boom")
    assert cookies(fresh) == []
    shown = await site.request("GET", "/show", f"__Host-id={cookie}")
    assert shown.text == "user=ada items=0"


async def test_a_lost_race_is_a_409_without_a_cookie(site: Site) -> None:
    cookie = await site.signed_in()
    response = await site.request("POST", "/conflict", f"__Host-id={cookie}")
    assert response.status_code == 409
    assert "should not be seen" not in response.text
    assert cookies(response) == []
    assert response.headers["cache-control"] == "no-store"
    shown = await site.request("GET", "/show", f"__Host-id={cookie}")
    assert shown.text == "user=ada items=1"  # the other request's write, not ours


async def test_a_session_deleted_meanwhile_is_a_409_that_leaves_the_cookie_alone(
    site: Site,
) -> None:
    # The request that deleted it may be a sign-in that rotated the id and gave the browser
    # a fresh cookie a moment ago: a deletion cookie here would erase that one.
    cookie = await site.signed_in()
    response = await site.request("POST", "/deleted", f"__Host-id={cookie}")
    assert response.status_code == 409
    assert cookies(response) == []
    assert site.backend.rows == {}
    replay = await site.request("GET", "/show", f"__Host-id={cookie}")
    assert replay.text == "user=None items=0"  # the dead id is harmless: never adopted


async def test_a_store_outage_is_a_503_without_a_cookie_and_recovers(site: Site) -> None:
    cookie = await site.signed_in()
    site.backend.down = True
    for path, sent in [("/show", cookie), ("/add", cookie), ("/add", None)]:
        response = await site.request("POST", path, None if sent is None else f"__Host-id={sent}")
        assert response.status_code == 503, (path, response.text)
        assert "Traceback" not in response.text
        assert cookies(response) == []
    untouched = await site.request("POST", "/show")  # no cookie, no write: no store needed
    assert untouched.status_code == 200
    site.backend.down = False
    response = await site.request("POST", "/add", f"__Host-id={cookie}")
    assert response.status_code == 200
    shown = await site.request("GET", "/show", f"__Host-id={cookie}")
    assert shown.text == "user=ada items=1"


# -- renewal and persistent cookies -----------------------------------------------------


async def test_a_renewal_alone_does_not_resend_a_browser_session_cookie(site: Site) -> None:
    cookie = await site.signed_in()
    site.clock.advance(timedelta(minutes=10))
    response = await site.request("GET", "/show", f"__Host-id={cookie}")
    assert site.backend.kinds == ["read", "touch"]  # the expiry moved in the store ...
    assert cookies(response) == []  # ... but the cookie has no expiry to move


@pytest.mark.parametrize("settings", [CookieSettings(persistent=True)])
async def test_a_persistent_cookie_follows_the_sessions_expiry(site: Site) -> None:
    created = await site.request("POST", "/login")
    (set_cookie,) = cookies(created)
    value = set_cookie.split(";")[0]
    assert set_cookie == f"{value}; Max-Age=1800{ATTRIBUTES}"  # the 30-minute idle bound
    site.clock.advance(timedelta(minutes=10))
    unchanged = await site.request("GET", "/show", value)
    assert cookies(unchanged) == [f"{value}; Max-Age=1800{ATTRIBUTES}"]  # renewed: same value
    site.clock.advance(timedelta(seconds=30))
    assert cookies(await site.request("GET", "/show", value)) == []  # no renewal due yet


# -- settings and wiring ----------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [CookieSettings(name="sid", secure=False, same_site="strict", http_only=False)],
)
async def test_cookie_settings_shape_the_header(site: Site) -> None:
    response = await site.request("POST", "/add")
    assert re.fullmatch(
        r"sid=[A-Za-z0-9_-]{43}; Path=/; SameSite=Strict", response.headers["set-cookie"]
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secure": False},
        {"domain": "example.com"},
        {"path": "/app"},
        {"name": "__Secure-id", "secure": False},
        {"name": "sid", "secure": False, "same_site": "none"},
        {"name": "a b"},
        {"name": "sid;x"},
        {"name": ""},
        {"same_site": "Lax"},
        {"name": "sid", "path": "app"},
        {"name": "sid", "path": "/a;b"},
        {"name": "sid", "domain": "a.com; Secure"},
        # Browsers apply the prefix rules case-insensitively and drop a cookie that breaks
        # them without a word.
        {"name": "__HOST-id", "domain": "example.com"},
        {"name": "__host-id", "secure": False},
        {"name": "__hOsT-id", "path": "/app"},
        {"name": "__SECURE-id", "secure": False},
        {"name": "__secure-id", "secure": False},
        {"name": "a" * 65},
        {"name": "a" * 5000},
    ],
)
def test_cookie_settings_refuse_invalid_combinations(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"CookieSettings|needs") as raised:
        CookieSettings(**kwargs)  # type: ignore[arg-type]
    assert len(str(raised.value)) < 200  # a 5,000-character name is not echoed back


def test_a_cookie_name_of_64_characters_is_accepted() -> None:
    name = "__Host-" + "a" * 57
    assert CookieSettings(name=name).set_cookie("v", None).startswith(name.encode() + b"=v;")


def test_cookie_settings_allow_a_scoped_cookie_without_the_prefix() -> None:
    settings = CookieSettings(name="sid", path="/app", domain="example.com", same_site="none")
    assert settings.set_cookie("v", None) == (
        b"sid=v; Path=/app; Domain=example.com; Secure; HttpOnly; SameSite=None"
    )


async def test_get_session_without_the_middleware_is_a_loud_error() -> None:
    class Bare:
        scope: dict[str, object] = {"type": "http", "headers": []}

    with pytest.raises(RuntimeError, match="SessionMiddleware"):
        await get_session(Bare())


def test_the_module_imports_without_any_web_framework() -> None:
    code = (
        "import sys\n"
        "for name in ('starlette', 'fastapi', 'litestar'):\n"
        "    sys.modules[name] = None\n"
        "import inspect, typed_session_sql.asgi as asgi\n"
        "print(inspect.signature(asgi.get_session))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "(request: '_HasScope') -> 'Session[Any]'"


class _GatedBackend(MemoryBackend):
    """A memory backend whose reads wait for ``gate`` (and fail while ``failing`` is set):
    a second task asks for the session while the first one's read is under way."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.reads = 0
        self.failing = False

    async def read(self, id_hash: bytes) -> Record | None:
        self.reads += 1
        await self.gate.wait()
        if self.failing:
            self.failing = False  # the next read succeeds
            raise StoreUnavailableError("connection refused")
        return await super().read(id_hash)


async def _two_uses_while_reading(
    backend: _GatedBackend, clock: FakeClock
) -> tuple[list[Session[Cart] | BaseException], int]:
    store = SessionStore(Cart, backend, clock=clock)
    session = store.new()
    session.data.items.append("apple")
    saved = await store.save(session)
    assert isinstance(saved, SetCookie)
    seen: list[Session[Cart] | BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def use() -> None:
            try:
                seen.append(await get_session(_Request(scope)))
            except StoreUnavailableError as error:
                seen.append(error)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(use)
            tasks.start_soon(use)
            await anyio.wait_all_tasks_blocked()  # both wait: one on the read, one on it
            backend.gate.set()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = SessionMiddleware(app, store=store)
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/", headers={"cookie": f"__Host-id={saved.value}"})
    return seen, response.status_code


async def test_concurrent_first_uses_of_the_session_load_it_once(clock: FakeClock) -> None:
    backend = _GatedBackend()
    seen, status = await _two_uses_while_reading(backend, clock)
    assert status == 204
    assert backend.reads == 1
    assert len(seen) == 2
    assert seen[0] is seen[1]
    assert isinstance(seen[0], Session)
    assert seen[0].data.items == ["apple"]


async def test_when_the_first_use_fails_to_load_the_waiting_one_loads_itself(
    clock: FakeClock,
) -> None:
    backend = _GatedBackend()
    backend.failing = True
    seen, _ = await _two_uses_while_reading(backend, clock)
    assert backend.reads == 2  # the failed read, then the waiter's own
    assert isinstance(seen[0], StoreUnavailableError)
    assert isinstance(seen[1], Session)
    assert seen[1].data.items == ["apple"]


@dataclass
class _Request:
    scope: Any
