"""A small shop on typed sessions: sign in with a name, fill a cart, see the session, sign out.

Everything here uses the public API, the way an application would:

- the session data is a typed dataclass, ``Visit``; handlers get ``Session[Visit]``;
- sign-in is ``Session.sign_in``: the library keeps who signed in (never read from the
  data) and rotates the session id, so an id planted before sign-in is worthless after it
  (session fixation);
- the session page lists the user's sessions and signs out the others
  (``SessionStore.sessions_of``, ``revoke_all(keep=...)``);
- cart changes go through ``Session.modify``, so two tabs adding at once both count;
- every POST form carries a CSRF token kept in the session (SameSite=Lax on the cookie is
  only defence in depth), compared in constant time;
- the database is migrated on start, and expired sessions are purged in the background.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from typed_session_sql import PurgeScheduler, Session, SessionStore, SqlBackend
from typed_session_sql.asgi import SessionMiddleware, get_session
from typed_session_sql.demo import pages

PRODUCTS = {"apple": "Apple", "pear": "Pear", "plum": "Plum", "fig": "Fig"}
MAX_NAME_LENGTH = 40
MAX_QUANTITY = 99


@dataclass
class CartLine:
    product: str
    quantity: int


@dataclass
class Visit:
    """What the session holds for one visitor. Who signed in is not here: the library keeps
    it (``Session.principal``), out of reach of anything that writes the data."""

    cart: list[CartLine] = field(default_factory=list)
    csrf_token: str = ""


def create_app(url: str | None = None) -> Starlette:
    """The demo app on the database at ``url`` (default: ``$TYPED_SESSION_SQL_URL``, else the
    SQLite file ``./sessions.db``), migrated when the app starts."""
    backend = SqlBackend.from_url(url)
    store = SessionStore(Visit, backend)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.migrate()  # the packaged Alembic migrations, over the app's engine
        async with PurgeScheduler(store, every=timedelta(minutes=5)):
            yield
        await backend.dispose()

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/sign-in", sign_in, methods=["POST"]),
            Route("/cart", add_to_cart, methods=["POST"]),
            Route("/session", show_session),
            Route("/sign-out", sign_out, methods=["POST"]),
            Route("/sign-out-others", sign_out_others, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, store=store)],
        lifespan=lifespan,
    )
    app.state.store = store
    return app


# -- pages ------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    session: Session[Visit] = await get_session(request)
    token = csrf_token(session)
    if session.principal is None:
        return HTMLResponse(pages.sign_in_page(token))
    return HTMLResponse(
        pages.cart_page(session.principal, _cart_rows(session.data), PRODUCTS, token)
    )


async def show_session(request: Request) -> Response:
    session: Session[Visit] = await get_session(request)
    user = session.principal
    others: list[pages.SessionRow] = []
    if user is not None:
        store: SessionStore[Visit] = request.app.state.store
        others = [
            pages.SessionRow(info.created_at, info.authenticated_at, info.handle == session.handle)
            for info in await store.sessions_of(user)
        ]
    return HTMLResponse(
        pages.session_page(
            user=user,
            stored=not session.is_new,
            created_at=session.created_at,
            expires_at=session.expires_at,
            version=session.version,
            sessions=others,
            csrf_token=session.data.csrf_token if user is not None else "",
        )
    )


# -- forms (POST, then redirect) ----------------------------------------------------------


async def sign_in(request: Request) -> Response:
    session, form = await checked_form(request)
    if form is None:
        return forbidden()
    name = form.get("name", "").strip()
    if not 0 < len(name) <= MAX_NAME_LENGTH:
        token = csrf_token(session)
        return HTMLResponse(pages.sign_in_page(token, error="Please enter a name."), 400)
    session.sign_in(name)  # a new id too: the pre-sign-in id is dead from now on
    session.data.csrf_token = secrets.token_urlsafe(32)
    return see_other("/")


async def add_to_cart(request: Request) -> Response:
    session, form = await checked_form(request)
    if form is None or session.principal is None:
        return forbidden()
    product = form.get("product", "")
    quantity = int(form["quantity"]) if form.get("quantity", "").isdigit() else 0
    if product in PRODUCTS and 0 < quantity <= MAX_QUANTITY:
        session.modify(lambda visit: add_line(visit, product, quantity))
    return see_other("/")


async def sign_out(request: Request) -> Response:
    session, form = await checked_form(request)
    if form is None:
        return forbidden()
    session.delete()
    return see_other("/")


async def sign_out_others(request: Request) -> Response:
    session, form = await checked_form(request)
    if form is None or session.principal is None:
        return forbidden()
    store: SessionStore[Visit] = request.app.state.store
    await store.revoke_all(session.principal, keep=session)
    return see_other("/session")


def add_line(visit: Visit, product: str, quantity: int) -> None:
    for line in visit.cart:
        if line.product == product:
            line.quantity = min(line.quantity + quantity, MAX_QUANTITY)
            return
    visit.cart.append(CartLine(product, quantity))


# -- helpers ----------------------------------------------------------------------------


def csrf_token(session: Session[Visit]) -> str:
    """The session's CSRF token, made on first use (which stores the session)."""
    if not session.data.csrf_token:
        session.data.csrf_token = secrets.token_urlsafe(32)
    return session.data.csrf_token


async def checked_form(request: Request) -> tuple[Session[Visit], dict[str, str] | None]:
    """The session and the submitted form, or None for the form if its CSRF token is wrong."""
    session: Session[Visit] = await get_session(request)
    body = (await request.body()).decode("utf-8", errors="replace")
    form = {key: values[0] for key, values in parse_qs(body).items()}
    expected = session.data.csrf_token
    sent = form.get("csrf_token", "")
    if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        return session, None
    return session, form


def _cart_rows(visit: Visit) -> list[tuple[str, int]]:
    return [(PRODUCTS.get(line.product, line.product), line.quantity) for line in visit.cart]


def see_other(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def forbidden() -> Response:
    return HTMLResponse(pages.forbidden_page(), status_code=403)
