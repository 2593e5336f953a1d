"""CSRF protection bound to the session, in Starlette, FastAPI and Litestar alike."""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.cookie_jar import CookieJar
from tests.csrf_apps import CSRF_APPS
from typed_session_sql import EventKind, MemoryBackend, SessionEvent, SessionStore
from typed_session_sql import csrf as csrf_module
from typed_session_sql.asgi import CookieSettings, CsrfSettings, SessionMiddleware, csrf_token

pytestmark = pytest.mark.anyio

UNSAFE = ["POST", "PUT", "PATCH", "DELETE"]
BOUNDARY = "tss-boundary-7MA4YWxk"
TOKEN = re.compile(r"[A-Za-z0-9_-]{86}")


class Browser(CookieJar):
    """One browser, with the app's token route at hand."""

    async def token(self) -> str:
        response = await self.go("GET", "/token")
        assert response.status_code == 200
        assert TOKEN.fullmatch(response.text)
        return response.text

    async def signed_in(self) -> str:
        """Signs in (with a token of the visitor's); returns a token of the new session."""
        response = await self.go("POST", "/login", {"x-csrf-token": await self.token()})
        assert response.status_code == 200
        return response.text


@dataclass
class Site:
    client: httpx.AsyncClient
    backend: MemoryBackend
    events: list[SessionEvent] = field(default_factory=list)

    def browser(self) -> Browser:
        return Browser(self.client)

    def failures(self) -> list[str]:
        return [event.detail for event in self.events if event.kind is EventKind.CSRF_FAILED]


@pytest.fixture(params=sorted(CSRF_APPS))
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def make_site(framework: str, settings: CsrfSettings) -> AsyncIterator[Site]:
    backend = MemoryBackend()
    events: list[SessionEvent] = []
    store: SessionStore[dict[str, Any]] = SessionStore(dict, backend, on_event=events.append)
    app = CSRF_APPS[framework](store, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        yield Site(client, backend, events)


@pytest.fixture
async def site(framework: str) -> AsyncIterator[Site]:
    async for made in make_site(framework, CsrfSettings()):
        yield made


def multipart(parts: Iterable[tuple[str, bytes]]) -> bytes:
    body = b""
    for name, value in parts:
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"'
        if name == "upload":
            head += '; filename="csrf_token"\r\nContent-Type: application/octet-stream'
        body += head.encode() + b"\r\n\r\n" + value + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def chunks(body: bytes, size: int) -> Iterable[bytes]:
    """The body in pieces, each its own ASGI message: the token may straddle two."""
    return [body[start : start + size] for start in range(0, len(body), size)]


async def streamed(body: bytes, size: int) -> AsyncIterator[bytes]:
    for piece in chunks(body, size):
        yield piece


FORM = "application/x-www-form-urlencoded"


def refused(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 403
    assert response.text == f"Forbidden: the CSRF check failed ({reason}).\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


# -- every unsafe method needs the token ---------------------------------------------------


@pytest.mark.parametrize("method", UNSAFE)
async def test_every_unsafe_method_needs_the_token(site: Site, method: str) -> None:
    browser = site.browser()
    token = await browser.token()
    refused(await browser.go(method, "/echo", content=b"payload"), "no CSRF token")
    assert site.failures() == ["no CSRF token"]
    response = await browser.go(method, "/echo", {"x-csrf-token": token}, content=b"payload")
    assert response.status_code == 200
    assert response.content == b"payload"  # the app reads the body: nothing was taken from it
    assert (await browser.go("GET", "/echo")).status_code == 200  # safe: no token needed
    assert site.failures() == ["no CSRF token"]


async def test_without_the_cookie_a_request_is_refused_before_its_body_is_read(
    site: Site,
) -> None:
    read = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        read = True
        yield b"csrf_token=x"

    browser = site.browser()
    response = await browser.go("POST", "/echo", {"content-type": FORM}, content=body())
    refused(response, "no CSRF cookie")
    assert not read
    assert site.failures() == ["no CSRF cookie"]


@pytest.mark.parametrize("sent", ["", "x" * 86, "A" * 85, "not a token at all", "~" * 86])
async def test_a_wrong_or_malformed_token_is_refused(site: Site, sent: str) -> None:
    browser = site.browser()
    await browser.token()
    refused(await browser.go("POST", "/echo", {"x-csrf-token": sent}), "wrong CSRF token")
    assert site.failures() == ["wrong CSRF token"]


async def test_tokens_are_masked_afresh_each_time_and_all_stay_valid(site: Site) -> None:
    browser = site.browser()
    tokens = {await browser.token() for _ in range(3)}
    assert len(tokens) == 3  # BREACH: no constant secret in the page
    for token in tokens:
        response = await browser.go("POST", "/echo", {"x-csrf-token": token}, content=b"ok")
        assert response.status_code == 200


# -- a form field: urlencoded and multipart, body replayed unchanged -------------------------


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20], ids=["1-byte", "7-byte", "whole"])
@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
async def test_the_form_field_is_found_and_the_body_replayed_unchanged(
    site: Site, kind: str, chunk: int
) -> None:
    browser = site.browser()
    token = await browser.token()
    if kind == "urlencoded":
        body = f"name=Ada+L%C3%B6&csrf_token={token}&note=a%26b".encode()
        content_type = FORM
    else:
        body = multipart([("name", b"Ada"), ("csrf_token", token.encode()), ("upload", b"x")])
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
    headers = {"content-type": content_type}
    response = await browser.go("POST", "/echo", headers, content=streamed(body, chunk))
    assert response.status_code == 200, response.text
    assert response.content == body


async def test_an_upload_after_the_field_is_passed_through_not_buffered(site: Site) -> None:
    browser = site.browser()
    upload = bytes(range(256)) * 1024  # 256 KiB, four times max_scan_bytes
    body = multipart([("csrf_token", (await browser.token()).encode()), ("upload", upload)])
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    response = await browser.go("POST", "/echo", headers, content=streamed(body, 4096))
    assert response.status_code == 200
    assert response.content == body


@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
async def test_a_field_past_max_scan_bytes_is_refused(site: Site, kind: str) -> None:
    browser = site.browser()
    token = await browser.token()
    filler = b"y" * 70000
    if kind == "urlencoded":
        body, content_type = b"note=" + filler + f"&csrf_token={token}".encode(), FORM
    else:
        body = multipart([("upload", filler), ("csrf_token", token.encode())])
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
    headers = {"content-type": content_type}
    response = await browser.go("POST", "/echo", headers, content=streamed(body, 8192))
    refused(response, "no CSRF token in the first 65536 bytes of the form")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"csrf_token": "x"}'),
        (FORM, b"csrf_tokenx=1&other=2"),
        (f"multipart/form-data; boundary={BOUNDARY}", b"not multipart"),
        ("multipart/form-data", b"no boundary"),
    ],
    ids=["json", "other-field", "malformed-multipart", "no-boundary"],
)
async def test_no_field_no_token(site: Site, content_type: str, body: bytes) -> None:
    browser = site.browser()
    await browser.token()
    response = await browser.go("POST", "/echo", {"content-type": content_type}, content=body)
    refused(response, "no CSRF token")


# -- bound to the session --------------------------------------------------------------------


async def test_a_token_or_a_cookie_and_token_pair_of_another_session_is_refused(
    site: Site,
) -> None:
    ada, bob = site.browser(), site.browser()
    ada_token, bob_token = await ada.signed_in(), await bob.signed_in()
    assert (await bob.go("POST", "/echo", {"x-csrf-token": bob_token})).status_code == 200
    refused(await bob.go("POST", "/echo", {"x-csrf-token": ada_token}), "wrong CSRF token")
    # The whole pair: Ada's CSRF cookie and token, sent with Bob's session cookie.
    bob.cookies["__Host-csrf"] = ada.cookies["__Host-csrf"]
    response = await bob.go("POST", "/echo", {"x-csrf-token": ada_token})
    refused(response, "CSRF cookie of another session")
    assert site.failures() == ["wrong CSRF token", "CSRF cookie of another session"]


async def test_a_sign_in_invalidates_the_tokens_issued_before_it(site: Site) -> None:
    browser = site.browser()
    before = await browser.token()
    response = await browser.go("POST", "/login", {"x-csrf-token": before})
    after = response.text  # asked for after sign_in, in the same request
    assert response.status_code == 200
    refused(await browser.go("POST", "/echo", {"x-csrf-token": before}), "wrong CSRF token")
    assert (await browser.go("POST", "/echo", {"x-csrf-token": after})).status_code == 200
    assert (await browser.go("POST", "/echo", {"x-csrf-token": await browser.token()})).is_success


async def test_a_sign_out_invalidates_the_tokens_of_the_session(site: Site) -> None:
    browser = site.browser()
    signed_in = await browser.signed_in()
    response = await browser.go("POST", "/logout", {"x-csrf-token": signed_in})
    assert response.status_code == 200
    assert "__Host-id" not in browser.cookies
    refused(await browser.go("POST", "/echo", {"x-csrf-token": signed_in}), "wrong CSRF token")
    visitor_token = response.text
    assert (await browser.go("POST", "/echo", {"x-csrf-token": visitor_token})).is_success


async def test_a_visitor_gets_a_token_bound_to_the_browser_without_a_row(site: Site) -> None:
    one, other = site.browser(), site.browser()
    token = await one.token()
    assert site.backend.rows == {}  # a cookie, not a row
    assert list(one.cookies) == ["__Host-csrf"]
    assert (await one.go("POST", "/echo", {"x-csrf-token": token})).status_code == 200
    await other.token()
    refused(await other.go("POST", "/echo", {"x-csrf-token": token}), "wrong CSRF token")
    assert site.backend.rows == {}


async def test_a_visitor_token_is_refused_once_the_browser_holds_a_session(site: Site) -> None:
    browser = site.browser()
    token = await browser.token()
    await browser.signed_in()
    response = await browser.go("POST", "/echo", {"x-csrf-token": token})
    refused(response, "wrong CSRF token")


async def test_the_csrf_cookie_follows_the_session_cookie(site: Site) -> None:
    browser = site.browser()
    response = await browser.go("GET", "/token")
    (header,) = response.headers.get_list("set-cookie")
    assert re.fullmatch(
        r"__Host-csrf=[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}; Path=/; Secure; HttpOnly; SameSite=Lax",
        header,
    )
    again = await browser.go("GET", "/token")
    assert again.headers.get_list("set-cookie") == []  # the browser holds a good one


# -- configuration ----------------------------------------------------------------------------


async def test_other_names_for_the_header_field_and_cookie(framework: str) -> None:
    settings = CsrfSettings(header="X-XSRF", field="_token", cookie_name="__Host-xsrf")
    async for site in make_site(framework, settings):
        browser = site.browser()
        token = await browser.token()
        assert list(browser.cookies) == ["__Host-xsrf"]
        assert (await browser.go("POST", "/echo", {"x-xsrf": token})).status_code == 200
        body = f"_token={token}".encode()
        response = await browser.go("POST", "/echo", {"content-type": FORM}, content=body)
        assert response.status_code == 200
        refused(await browser.go("POST", "/echo", {"x-csrf-token": token}), "no CSRF token")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (lambda: CsrfSettings(header="X Token"), "not a valid header name"),
        (lambda: CsrfSettings(field=""), "must not be empty"),
        (lambda: CsrfSettings(max_scan_bytes=100), "at least 1024"),
    ],
)
def test_bad_settings_are_refused(settings: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings()


async def nothing(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


def test_the_csrf_cookie_cannot_be_the_session_cookie() -> None:
    store: SessionStore[dict[str, Any]] = SessionStore(dict, MemoryBackend())
    with pytest.raises(ValueError, match="cannot share the session cookie's name"):
        SessionMiddleware(nothing, store, csrf=CsrfSettings(cookie_name="__Host-id"))


def test_the_csrf_cookie_name_takes_the_session_cookie_prefix() -> None:
    store: SessionStore[dict[str, Any]] = SessionStore(dict, MemoryBackend())
    for name, expected in [("__Host-id", "__Host-csrf"), ("__Secure-s", "__Secure-csrf")]:
        middleware = SessionMiddleware(nothing, store, CookieSettings(name), csrf=True)
        assert middleware.csrf is not None
        assert middleware.csrf.cookie.name == expected
    plain = CookieSettings("sid", secure=False, same_site="strict")
    middleware = SessionMiddleware(nothing, store, plain, csrf=True)
    assert middleware.csrf is not None
    assert middleware.csrf.cookie == CookieSettings("csrf", secure=False, same_site="strict")


async def test_csrf_token_without_csrf_protection_says_what_to_do() -> None:
    class Request:
        scope: dict[str, Any] = {}

    with pytest.raises(RuntimeError, match=re.escape("SessionMiddleware(..., csrf=True)")):
        await csrf_token(Request())


async def test_a_token_asked_for_before_the_session_changes_id_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store: SessionStore[dict[str, Any]] = SessionStore(dict, MemoryBackend())

    @dataclass
    class Request:
        scope: dict[str, Any]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope)
        await csrf_token(request)
        if scope["path"] == "/login":  # too late: the page has a token of the old session
            (await store.session(request)).sign_in("ada")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    transport = httpx.ASGITransport(app=SessionMiddleware(app, store, csrf=True))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        browser = Browser(client)
        await browser.go("GET", "/")
        with caplog.at_level(logging.WARNING, logger="typed_session_sql"):
            await browser.go("GET", "/login")
    assert "ask for it after the change" in caplog.text


async def test_a_request_the_browser_marks_cross_site_is_refused_before_its_body(
    site: Site,
) -> None:
    browser = site.browser()
    token = await browser.token()
    headers = {"x-csrf-token": token, "sec-fetch-site": "cross-site"}
    refused(await browser.go("POST", "/echo", headers), "sent from another site")
    for same in ("same-origin", "none"):
        headers["sec-fetch-site"] = same
        assert (await browser.go("POST", "/echo", headers)).status_code == 200


async def call(
    app: Any, method: str, headers: list[tuple[bytes, bytes]], body: Iterable[bytes] = ()
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request straight through the ASGI interface, its body in the given messages."""
    pieces = deque(body)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not pieces:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": pieces.popleft(), "more_body": bool(pieces)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/", "headers": headers}
    await app(scope, receive, send)
    start, *rest = sent
    return start["status"], start["headers"], b"".join(m.get("body", b"") for m in rest)


async def test_a_body_sent_a_byte_per_message_is_searched_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    searches = 0
    search = csrf_module._urlencoded_field

    def counted(data: bytes, name: bytes, complete: bool) -> tuple[bytes | None, bool]:
        nonlocal searches
        searches += 1
        return search(data, name, complete)

    monkeypatch.setattr(csrf_module, "_urlencoded_field", counted)

    @dataclass
    class Request:
        scope: dict[str, Any]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = await csrf_token(Request(scope))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body.encode()})

    store: SessionStore[dict[str, Any]] = SessionStore(dict, MemoryBackend())
    middleware = SessionMiddleware(app, store, csrf=True)
    _, headers, _ = await call(middleware, "GET", [])
    (cookie,) = [value.split(b";")[0] for key, value in headers if key == b"set-cookie"]
    form = [(b"cookie", cookie), (b"content-type", FORM.encode())]
    body = b"note=" + b"x" * 70000  # no token: searched to the limit, a byte at a time
    status, _, text = await call(middleware, "POST", form, [bytes([b]) for b in body])
    assert status == 403
    assert b"no CSRF token in the first 65536 bytes" in text
    assert searches <= 65536 // 1024 + 1


def test_a_test_client_on_https_keeps_the_csrf_cookie() -> None:
    """What docs/asgi.md tells test writers: over http://testserver the Secure cookie is
    never sent back; over https it is."""
    from fastapi.testclient import TestClient

    store: SessionStore[dict[str, Any]] = SessionStore(dict, MemoryBackend())
    app = CSRF_APPS["fastapi"](store, CsrfSettings())
    for base_url, status in [("http://testserver", 403), ("https://testserver", 200)]:
        with TestClient(app, base_url=base_url) as client:
            token = client.get("/token").text
            assert client.post("/echo", headers={"x-csrf-token": token}).status_code == status


async def test_two_csrf_middlewares_on_one_app_are_refused() -> None:
    store: SessionStore[dict[str, Any]] = SessionStore(dict, MemoryBackend())
    inner = SessionMiddleware(nothing, store, CookieSettings("__Host-inner"), csrf=True)
    outer = SessionMiddleware(inner, store, csrf=True)
    with pytest.raises(RuntimeError, match="two SessionMiddleware with csrf enabled"):
        await call(outer, "GET", [])


def test_csrf_takes_a_bool_or_settings_only() -> None:
    store: SessionStore[dict[str, Any]] = SessionStore(dict, MemoryBackend())
    with pytest.raises(TypeError, match="csrf must be True, False or a CsrfSettings"):
        SessionMiddleware(nothing, store, csrf="yes")  # type: ignore[arg-type]
    assert SessionMiddleware(nothing, store, csrf=False).csrf is None
