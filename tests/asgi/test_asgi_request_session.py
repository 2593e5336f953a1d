"""``request_session=True``: libraries written for Starlette's ``request.session`` work on the
store. Shown with Authlib's Starlette OAuth client, which keeps its ``state`` there between
the redirect to the provider and the callback.

A fake OAuth 2 provider (authorization code grant) runs in the same process; the browser
is an httpx client with a cookie jar that reaches both apps through ASGI transports, and
Authlib reaches the provider's token and user endpoints the same way. No network.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import httpx2
import pytest
from authlib.integrations.starlette_client import OAuth, OAuthError  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.backends import BACKEND_FACTORIES, RecordingBackend
from typed_session_sql import MemoryBackend, SessionStore
from typed_session_sql.asgi import SessionMiddleware

pytestmark = pytest.mark.anyio

APP = "https://app.test"
PROVIDER = "https://provider.test"
CLIENT_ID, CLIENT_SECRET = "shop", "shop-secret"
BASIC_CREDENTIALS = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()


def fake_provider() -> Starlette:
    """Approves every authorization at once, for the user ada."""
    codes: dict[str, str] = {}  # code -> redirect_uri it was issued for
    tokens: set[str] = set()

    async def authorize(request: Request) -> Response:
        query = request.query_params
        assert query["client_id"] == CLIENT_ID
        assert query["response_type"] == "code"
        code = secrets.token_urlsafe(16)
        codes[code] = query["redirect_uri"]
        back = urlencode({"code": code, "state": query["state"]})
        return RedirectResponse(f"{query['redirect_uri']}?{back}", status_code=302)

    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        if request.headers.get("authorization") != BASIC_CREDENTIALS:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if codes.pop(form["code"], None) != form["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access = secrets.token_urlsafe(16)
        tokens.add(access)
        return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": 3600})

    async def userinfo(request: Request) -> Response:
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in tokens:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({"sub": "ada", "name": "Ada Lovelace"})

    return Starlette(
        routes=[
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
            Route("/userinfo", userinfo),
        ]
    )


def shop(store: SessionStore[dict[str, Any]], provider: Starlette) -> Starlette:
    """An app that signs in with the provider; Authlib keeps its state in request.session."""
    oauth = OAuth()
    oauth.register(
        "fake",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        authorize_url=f"{PROVIDER}/authorize",
        access_token_url=f"{PROVIDER}/token",
        api_base_url=f"{PROVIDER}/",
        client_kwargs={"transport": httpx2.ASGITransport(app=provider)},
    )

    async def login(request: Request) -> Response:
        response: Response = await oauth.fake.authorize_redirect(request, f"{APP}/callback")
        return response

    async def callback(request: Request) -> Response:
        try:
            token = await oauth.fake.authorize_access_token(request)
        except OAuthError as error:
            return PlainTextResponse(f"sign-in failed: {error.error}", status_code=400)
        user = (await oauth.fake.get("userinfo", token=token)).json()
        session = await store.session(request)
        session.sign_in(user["sub"])  # a new id: the pre-sign-in one is dead
        request.session["name"] = user["name"]
        return RedirectResponse("/", status_code=303)

    async def home(request: Request) -> Response:
        session = await store.session(request)
        return PlainTextResponse(f"{session.principal} {request.session.get('name')}")

    async def plain(request: Request) -> Response:
        return PlainTextResponse("no session needed")

    return Starlette(
        routes=[
            Route("/", home),
            Route("/login", login),
            Route("/callback", callback),
            Route("/plain", plain),
        ],
        middleware=[Middleware(SessionMiddleware, store=store, request_session=True)],
    )


@dataclass
class Site:
    browser: httpx.AsyncClient
    store: SessionStore[dict[str, Any]]
    recorder: RecordingBackend


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
async def site(request: pytest.FixtureRequest) -> AsyncIterator[Site]:
    factory, _ = BACKEND_FACTORIES[request.param]
    async with factory() as backend:
        recorder = RecordingBackend(backend)
        store: SessionStore[dict[str, Any]] = SessionStore(dict, recorder)
        provider = fake_provider()
        mounts = {
            APP: httpx.ASGITransport(app=shop(store, provider)),
            PROVIDER: httpx.ASGITransport(app=provider),
        }
        async with httpx.AsyncClient(mounts=mounts, follow_redirects=True) as browser:
            yield Site(browser, store, recorder)


async def test_authlibs_redirect_flow_keeps_its_state_in_the_store(site: Site) -> None:
    response = await site.browser.get(f"{APP}/login")
    assert [str(hop.url).split("?")[0] for hop in response.history] == [
        f"{APP}/login",
        f"{PROVIDER}/authorize",
        f"{APP}/callback",
    ]
    assert response.text == "ada Ada Lovelace"
    # The state went into a stored session on the redirect, came back with the callback,
    # and was removed by Authlib; the sign-in rotated the id.
    assert site.recorder.kinds == ["create", "read", "update", "read"]
    (cookie,) = site.browser.cookies.jar
    session = await site.store.load(cookie.value)
    assert session is not None
    assert session.principal == "ada"
    assert session.data == {"name": "Ada Lovelace"}


async def test_a_callback_without_the_sessions_state_is_refused(site: Site) -> None:
    await site.browser.get(f"{APP}/login", follow_redirects=False)  # state stored
    forged = await site.browser.get(f"{APP}/callback?code=stolen&state=guessed")
    assert forged.status_code == 400
    assert forged.text == "sign-in failed: mismatching_state"
    assert (await site.browser.get(f"{APP}/")).text == "None None"


async def test_a_request_without_the_cookie_costs_nothing(site: Site) -> None:
    assert (await site.browser.get(f"{APP}/plain")).text == "no session needed"
    assert (await site.browser.get(f"{APP}/")).text == "None None"
    assert site.recorder.kinds == []
    assert not site.browser.cookies


# -- signing in and out through request.session -------------------------------------------


def admin_app(store: SessionStore[dict[str, Any]], **options: Any) -> Starlette:
    """Sign-in and sign-out as sqladmin, starlette-admin and Authlib apps write them, and the
    typed API next to them."""

    async def login(request: Request) -> Response:
        request.session.update({"token": "ada-token"})  # sqladmin's AuthenticationBackend
        return PlainTextResponse("signed in")

    async def visit(request: Request) -> Response:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return PlainTextResponse("visited")

    async def read(request: Request) -> Response:
        return JSONResponse(dict(request.session))

    async def typed_sign_in(request: Request) -> Response:
        session = await store.session(request)
        if request.query_params.get("fresh"):
            session.data = {}  # nothing of the anonymous session carries over
        session.sign_in("ada")
        return PlainTextResponse("signed in")

    async def logout(request: Request) -> Response:
        request.session.clear()  # sqladmin's logout
        if request.query_params.get("then"):
            request.session["user"] = request.query_params["then"]
        return PlainTextResponse("signed out")

    async def forget_token(request: Request) -> Response:
        request.session.pop("token", None)
        return PlainTextResponse("forgotten")

    return Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/visit", visit, methods=["POST"]),
            Route("/read", read),
            Route("/typed-sign-in", typed_sign_in, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/forget-token", forget_token, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, store=store, request_session=True, **options)],
    )


@dataclass
class Admin:
    browser: httpx.AsyncClient
    store: SessionStore[dict[str, Any]]
    recorder: RecordingBackend

    @property
    def cookie(self) -> str | None:
        return self.browser.cookies.get("__Host-id")

    async def post(self, path: str, **query: str) -> str | None:
        """POST ``path``; the cookie the browser holds afterwards."""
        assert (await self.browser.post(path, params=query)).status_code == 200
        return self.cookie


@asynccontextmanager
async def admin(**options: Any) -> AsyncIterator[Admin]:
    recorder = RecordingBackend(MemoryBackend())
    store: SessionStore[dict[str, Any]] = SessionStore(dict, recorder)
    transport = httpx.ASGITransport(app=admin_app(store, **options))
    async with httpx.AsyncClient(transport=transport, base_url=APP) as browser:
        yield Admin(browser, store, recorder)


async def test_an_sqladmin_login_moves_the_session_to_a_new_id() -> None:
    async with admin() as site:
        planted = await site.post("/visit")  # an id an attacker planted, or noted
        signed_in = await site.post("/login")
        assert signed_in not in (None, planted)
        assert await site.store.load(planted) is None
        assert (await site.browser.get("/read")).json() == {"visits": 1, "token": "ada-token"}


@pytest.mark.parametrize("rotate", [True, False])
async def test_a_change_rotates_the_id_unless_turned_off_and_a_read_never_does(
    rotate: bool,
) -> None:
    async with admin(rotate_on_change=rotate) as site:
        first = await site.post("/visit")
        second = await site.post("/visit")
        assert (first != second) is rotate
        assert (await site.store.load(first) is None) is rotate
        site.recorder.kinds.clear()
        response = await site.browser.get("/read")
        assert response.json() == {"visits": 2}
        assert "set-cookie" not in response.headers
        assert site.recorder.kinds == ["read"]


async def test_data_replaced_before_sign_in_is_what_is_saved() -> None:
    async with admin() as site:
        await site.post("/visit")
        cookie = await site.post("/typed-sign-in", fresh="1")
        session = await site.store.load(cookie)
        assert session is not None
        assert (session.principal, session.data) == ("ada", {})


async def test_clear_signs_out_a_session_that_holds_only_a_sign_in() -> None:
    async with admin() as site:
        signed_in = await site.post("/typed-sign-in")  # a principal, no data
        assert await site.post("/logout") is None  # the cookie was deleted
        assert await site.store.load(signed_in) is None


async def test_what_is_put_in_after_clear_starts_a_new_session() -> None:
    async with admin() as site:
        await site.post("/visit")
        signed_in = await site.post("/typed-sign-in")
        fresh = await site.post("/logout", then="bob")
        assert fresh not in (None, signed_in)
        assert await site.store.load(signed_in) is None
        session = await site.store.load(fresh)
        assert session is not None
        assert (session.principal, session.data) == (None, {"user": "bob"})


async def test_emptying_request_session_ends_the_session() -> None:
    # As with Starlette's own sessions: a session that had content and has none is gone.
    async with admin() as site:
        signed_in = await site.post("/login")
        assert await site.post("/forget-token") is None
        assert await site.store.load(signed_in) is None
