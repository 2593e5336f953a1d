"""A small shop on typed sessions: sign in with a name, fill a cart, see the session, sign out.

Everything here uses the public API, the way an application would:

- the session data is a typed dataclass, ``Visit``; handlers get ``Session[Visit]`` from
  ``store.session(request)``;
- sign-in is ``Session.sign_in``: the library keeps who signed in (never read from the
  data) and rotates the session id, so an id planted before sign-in is worthless after it
  (session fixation);
- looking at pages stores nothing: the session is created when the visitor signs in;
- the session page lists the user's sessions and signs out the others
  (``SessionStore.sessions_of``, ``revoke_all(keep=...)``);
- cart changes go through ``Session.modify``, so two tabs adding at once both count;
- every POST form carries a CSRF token from ``csrf_token(request)``, bound to the session
  and checked by ``SessionMiddleware(..., csrf=...)`` before the handler runs; bodies are
  capped and their fields counted (``forms.py``); every value is checked (quantities are
  ASCII digits in a range) and a bad one is a 400;
- security headers on every response (`.headers`);
- the database is migrated on start, and expired sessions are purged in the background.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from typed_session_sql import PurgeScheduler, Session, SessionStore, SqlBackend
from typed_session_sql.asgi import CsrfFailure, CsrfSettings, SessionMiddleware, csrf_token
from typed_session_sql.demo import pages
from typed_session_sql.demo.forms import MAX_FORM_BYTES, FormRefused, read_form
from typed_session_sql.demo.headers import SecurityHeaders

PRODUCTS = {"apple": "Apple", "pear": "Pear", "plum": "Plum", "fig": "Fig"}
MAX_NAME_LENGTH = 40
MAX_QUANTITY = 99
QUANTITY = re.compile(r"[0-9]{1,2}")  # ASCII digits only: str.isdigit() takes "²" and "٣"


@dataclass
class CartLine:
    product: str
    quantity: int


@dataclass
class Visit:
    """What the session holds for one visitor. Who signed in is not here: the library keeps
    it (``Session.principal``), out of reach of anything that writes the data."""

    cart: list[CartLine] = field(default_factory=list)


@dataclass
class Shop:
    """What the handlers share: the store."""

    store: SessionStore[Visit]


def form_expired(scope: object, failure: CsrfFailure) -> HTMLResponse:
    """The page a form that fails the CSRF check gets, instead of the plain-text 403."""
    return HTMLResponse(pages.forbidden_page(), status_code=403)


# The CSRF field comes first in every form, and no form is larger than this.
CSRF = CsrfSettings(failure_response=form_expired, max_scan_bytes=MAX_FORM_BYTES)


def create_app(url: str | None = None) -> Starlette:
    """The demo app on the database at ``url`` (default: ``$TYPED_SESSION_SQL_URL``, else the
    SQLite file ``./sessions.db``), migrated when the app starts."""
    backend = SqlBackend.from_url(url)
    store = SessionStore(Visit, backend)
    shop = Shop(store)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.migrate()  # the packaged Alembic migrations, over the app's engine
        async with PurgeScheduler(store, every=timedelta(minutes=5)):
            yield
        await backend.dispose()

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/session", show_session),
            Route("/sign-in", form_handler(sign_in), methods=["POST"]),
            Route("/cart", form_handler(add_to_cart), methods=["POST"]),
            Route("/sign-out", form_handler(sign_out), methods=["POST"]),
            Route("/sign-out-others", form_handler(sign_out_others), methods=["POST"]),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(SessionMiddleware, store=store, csrf=CSRF),
        ],
        lifespan=lifespan,
    )
    app.state.shop = shop
    return app


# -- pages ------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    shop: Shop = request.app.state.shop
    session = await shop.store.session(request)  # stored or not: looking stores nothing
    return await page(request, lambda token: home_page(session, token))


def home_page(session: Session[Visit], token: str, error: str | None = None) -> str:
    if session.principal is None:
        return pages.sign_in_page(token, error)
    rows = [(PRODUCTS.get(line.product, line.product), line.quantity) for line in session.data.cart]
    return pages.cart_page(session.principal, rows, PRODUCTS, token, error)


async def show_session(request: Request) -> Response:
    shop: Shop = request.app.state.shop
    session = await shop.store.session(request)
    others: list[pages.SessionRow] = []
    if session.principal is not None:
        others = [
            pages.SessionRow(info.created_at, info.authenticated_at, info.handle == session.handle)
            for info in await shop.store.sessions_of(session.principal)
        ]

    def render(token: str) -> str:
        return pages.session_page(
            user=session.principal,
            stored=not session.is_new,
            created_at=session.created_at,
            expires_at=session.expires_at,
            version=session.version,
            sessions=others,
            csrf_token=token,
        )

    return await page(request, render)


async def page(request: Request, render: Callable[[str], str], status: int = 200) -> Response:
    """An HTML page whose forms carry the CSRF token (the middleware gives the browser its
    CSRF cookie if it needs one: a cookie, not a database row)."""
    return HTMLResponse(render(await csrf_token(request)), status_code=status)


# -- forms (POST, then redirect) ----------------------------------------------------------

FormHandler = Callable[[Request, Shop, dict[str, str]], Awaitable[Response]]


def form_handler(handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
    """Runs ``handler`` with the form once `read_form` accepted it; answers
    400, 413 or 415 otherwise, without reading more of the body than it must. (The CSRF
    token was checked before: the middleware answered 403 to a request without it.)"""

    async def endpoint(request: Request) -> Response:
        shop: Shop = request.app.state.shop
        try:
            form = await read_form(request)
        except FormRefused as refused:
            return HTMLResponse(pages.refused_page(refused.reason), refused.status)
        return await handler(request, shop, form)

    return endpoint


async def sign_in(request: Request, shop: Shop, form: dict[str, str]) -> Response:
    session = await shop.store.session(request)
    name = form.get("name", "").strip()
    if not 0 < len(name) <= MAX_NAME_LENGTH or not name.isprintable():
        return await page(
            request, lambda token: pages.sign_in_page(token, "Please enter a name."), 400
        )
    if session.principal not in (None, name):
        session.data = Visit()  # someone else signs in on this browser: not their cart
    session.sign_in(name)  # a new id: the session id and CSRF tokens from before are dead
    return see_other("/")


async def add_to_cart(request: Request, shop: Shop, form: dict[str, str]) -> Response:
    session = await shop.store.session(request)
    if session.principal is None:
        return HTMLResponse(pages.forbidden_page(), status_code=403)
    product, quantity = form.get("product", ""), form.get("quantity", "")
    if product not in PRODUCTS or not QUANTITY.fullmatch(quantity):
        return await cart_error(request, session)
    count = int(quantity)
    if not 0 < count <= MAX_QUANTITY:
        return await cart_error(request, session)
    session.modify(lambda visit: add_line(visit, product, count))
    return see_other("/")


async def cart_error(request: Request, session: Session[Visit]) -> Response:
    error = f"Please choose a product and a quantity from 1 to {MAX_QUANTITY}."
    return await page(request, lambda token: home_page(session, token, error), 400)


async def sign_out(request: Request, shop: Shop, form: dict[str, str]) -> Response:
    session = await shop.store.session(request)
    session.delete()  # the CSRF tokens of the session die with it
    return see_other("/")


async def sign_out_others(request: Request, shop: Shop, form: dict[str, str]) -> Response:
    session = await shop.store.session(request)
    if session.principal is None:
        return HTMLResponse(pages.forbidden_page(), status_code=403)
    await shop.store.revoke_all(session.principal, keep=session)
    return see_other("/session")


def add_line(visit: Visit, product: str, quantity: int) -> None:
    for line in visit.cart:
        if line.product == product:
            line.quantity = min(line.quantity + quantity, MAX_QUANTITY)
            return
    visit.cart.append(CartLine(product, quantity))


def see_other(path: str) -> Response:
    """Redirect after a POST."""
    return RedirectResponse(path, status_code=303)
