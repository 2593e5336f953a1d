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
from typed_session_sql import SessionStore
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
