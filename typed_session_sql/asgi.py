"""Sessions for any ASGI app: a pure ASGI middleware. Handlers get the session with
``store.session`` or ``get_session`` (both in `typed_session_sql.scope`, exported here too).

Read top to bottom, an HTTP request goes like this. The middleware puts a lazy slot in the
scope and calls the app. Nothing is read until the handler awaits ``store.session`` (or
``get_session``): only then is the ``Cookie`` header searched (exact byte match on the name,
two matches mean no session) and the store asked, and only if there was a cookie. When the
app starts its response, the middleware saves the session (unless the status is 5xx), adds
the ``Set-Cookie`` the save asks for, ``Cache-Control: no-store`` with it, and
``Vary: Cookie``, and only then lets the response start. A save that loses a race or a
store that fails replaces the response with a short 409, 503 or 500 that carries no session
cookie: the browser may already hold a newer one from the request that won. Once that
error response is out, the request is finished.

A WebSocket connection gets its session the same way, from the handshake's cookie, but
read-only (nothing can carry a new cookie to the browser over the connection), and only
when the handshake's ``Origin`` is the app's own or an allowed one: browsers send the
cookie with a handshake any site starts (cross-site WebSocket hijacking;
`typed_session_sql.websocket_origins`).

With ``request_session=True`` the session's data, a dict, is also ``scope["session"]``,
which is what ``request.session`` reads in Starlette (and so Authlib, sqladmin and
starlette-admin). Those libraries sign in by writing to it, not by ``sign_in``, so a
stored session whose content changes gets a new id, and ``clear()`` ends the session
(`typed_session_sql.request_session`).

No framework is imported here: Starlette, FastAPI and Litestar apps all work through the
scope alone. Store failures are logged once, by the store, where they happen; only the
errors the store does not report are logged here.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio

from typed_session_sql.cookie_commands import CookieCommand, DeleteCookie, SetCookie
from typed_session_sql.cookies import CookieSettings, Headers
from typed_session_sql.csrf import (
    Csrf,
    CsrfFailure,
    CsrfSettings,
    csrf_token,
    default_csrf_failure_response,
)
from typed_session_sql.errors import (
    SessionConflictError,
    SessionError,
    SessionTableMissingError,
    StoreUnavailableError,
    describe_error,
)
from typed_session_sql.events import EventKind, emit
from typed_session_sql.request_session import Bridge, is_dict_type
from typed_session_sql.scope import SCOPE_KEY, SessionAccessor, get_session
from typed_session_sql.session import Session
from typed_session_sql.websocket_origins import allowed_origins, refused_origin

if TYPE_CHECKING:
    from typed_session_sql.store import SessionStore

__all__ = [
    "CookieSettings",
    "CsrfFailure",
    "CsrfSettings",
    "SessionAccessor",
    "SessionMiddleware",
    "csrf_token",
    "default_csrf_failure_response",
    "default_error_response",
    "get_session",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: frameworks type the scope differently (Starlette a MutableMapping,
# Litestar TypedDicts), and the middleware must wrap any of them.
ASGIApp = Callable[..., Awaitable[None]]
ErrorResponse = Callable[[Scope, SessionError], ASGIApp]
"""Makes the response that replaces the app's when the session cannot be saved or loaded."""

logger = logging.getLogger("typed_session_sql")

_NO_EXPIRY_MAX_AGE = 400 * 24 * 3600  # 400 days: the cap browsers apply (RFC 6265bis)
_TRY_AGAIN_LATER = 1013  # WebSocket close code: the store is down, as a 503 says for HTTP


def default_error_response(scope: Scope, error: SessionError) -> ASGIApp:
    """A short plain-text 409 (lost race or session deleted meanwhile), 503 (store down,
    with ``Retry-After``) or 500 (the session table is missing, or the session could not be
    saved: too large, unencodable, refused by the database)."""
    retry = False
    if isinstance(error, SessionConflictError):
        status, text = 409, "The session was changed by another request. Please try again."
    elif isinstance(error, SessionTableMissingError):
        # Not transient: it lasts until someone migrates, so no Retry-After. The store has
        # logged it at ERROR with the command that fixes it.
        status, text = 500, "Sessions are not available on this server."
    elif isinstance(error, StoreUnavailableError):
        status, retry = 503, True
        text = "Sessions are unavailable right now. Please try again shortly."
    else:
        status, text = 500, "The session could not be saved."
    body = (text + "\n").encode()

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if retry:
            headers.append((b"retry-after", b"5"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return respond


class _Slot:
    """One connection's session: loaded on first use, saved once when the response starts
    (never, for a WebSocket). ``outer`` is the slot of an enclosing middleware, if any."""

    __slots__ = (
        "_loaded",
        "_loading",
        "closed",
        "cookie",
        "error",
        "foreign",
        "had_cookie",
        "headers",
        "outer",
        "session",
        "store",
    )

    def __init__(
        self,
        store: SessionStore[Any],
        cookie: CookieSettings,
        headers: Headers,
        outer: _Slot | None,
        foreign: str | None = None,
    ) -> None:
        self.store = store
        self.cookie = cookie
        self.headers = headers
        self.outer = outer
        self.foreign = foreign  # a WebSocket's refused Origin: its cookie is not used
        self.session: Session[Any] | None = None
        self.error: StoreUnavailableError | None = None
        self.had_cookie = False  # the request named a session, valid or not
        self.closed = False
        self._loading = False  # a task is loading the session now
        self._loaded: anyio.Event | None = None  # what tasks asking meanwhile wait for

    async def get(self) -> Session[Any]:
        if self.closed:
            raise RuntimeError("the response has started: the session was already saved")
        # Concurrent first uses load once: the first loads, the others wait for it (and if
        # it fails, the next of them tries). No lock: an uncontended anyio.Lock costs a
        # pass through the event loop, and a request's first use is almost never contended.
        while self.session is None:
            if not self._loading:
                self._loading = True
                try:
                    self.session = await self._load()
                finally:
                    self._loading = False
                    loaded, self._loaded = self._loaded, None
                    if loaded is not None:
                        loaded.set()
                break
            if self._loaded is None:
                self._loaded = anyio.Event()
            await self._loaded.wait()
        return self.session

    async def _load(self) -> Session[Any]:
        value, count = self.cookie.find(self.headers)
        self.had_cookie = count > 0
        if self.foreign is not None:
            if count:  # another site's page may be riding on the user's cookie
                emit(self.store.on_event, EventKind.FOREIGN_ORIGIN, self.foreign)
            return self.store.new()
        if count > 1:
            emit(self.store.on_event, EventKind.DUPLICATE_COOKIE, f"{count} cookies")
        try:
            loaded = await self.store.load(value) if value else None
        except StoreUnavailableError as error:
            self.error = error  # so a 5xx the app makes of it becomes our 503 (or 500)
            raise
        return loaded if loaded is not None else self.store.new()


class SessionMiddleware:
    """Gives each HTTP request a lazily loaded session, saved before the response starts,
    and each WebSocket connection a read-only one.

    Args:
        app: the ASGI app to wrap.
        store: where sessions are loaded from and saved to.
        cookie: the cookie's name and attributes.
        error_response: makes the response sent instead of the app's when the session
            cannot be loaded or saved (409 on a lost race, 503 when the store is down, 500
            otherwise); it must not set the session cookie.
        request_session: also expose the session's data as ``scope["session"]``, the dict
            Starlette's ``request.session`` returns, for libraries written against
            Starlette's own sessions (Authlib, sqladmin, starlette-admin). The store's data
            type must be ``dict``. The session is then loaded before the app runs, when the
            request carries the cookie (``request.session`` cannot wait for the database).
            ``request.session.clear()`` ends the session (sign-out), as does emptying it.
        rotate_on_change: with ``request_session=True``, give a stored session whose data
            changed during the request a new id, as `Session.sign_in` does: those
            libraries sign in by writing to ``request.session``, so an id planted before
            would otherwise hold the signed-in session. Turn it off only if every sign-in
            also calls ``sign_in`` or ``regenerate``.
        websocket_origins: origins (``"https://app.example:8443"``) besides the
            handshake's own whose WebSockets get the cookie's session. Any other
            ``Origin``, ``null`` or none gets a new anonymous session (``foreign_origin``
            event): browsers send the cookie with a handshake any site starts.
        csrf: refuse (403) every request with an unsafe method (POST, PUT, PATCH, DELETE...)
            that lacks the token ``csrf_token(request)`` gives out for this session; True
            takes the defaults of ``CsrfSettings``. How it works: ``typed_session_sql.csrf``.

    Examples:
        A Starlette app counting each visitor's visits (FastAPI and Litestar take the
        middleware the same way: `app.add_middleware(SessionMiddleware, store=store)`,
        `DefineMiddleware(SessionMiddleware, store=store)`):

        ```python
        from dataclasses import dataclass

        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from typed_session_sql import MemoryBackend, SessionStore
        from typed_session_sql.asgi import SessionMiddleware


        @dataclass
        class Visits:
            count: int = 0


        store = SessionStore(Visits, MemoryBackend())  # SqlBackend.from_url(...) in production


        def one_more(visits: Visits) -> None:
            visits.count += 1


        async def home(request: Request) -> JSONResponse:
            session = await store.session(request)  # a Session[Visits], loaded on first use
            session.modify(one_more)
            return JSONResponse({"visits": session.data.count})


        app = Starlette(
            routes=[Route("/", home)],
            middleware=[Middleware(SessionMiddleware, store=store)],
        )
        ```

        Its cookie, `__Host-id`, is `Secure`: a browser (or a test client) sends it back
        over HTTPS, or to `localhost`:

        ```python
        from starlette.testclient import TestClient

        with TestClient(app, base_url="https://testserver") as client:
            assert client.get("/").json() == {"visits": 1}
            assert client.get("/").json() == {"visits": 2}
        ```
    """

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore[Any],
        cookie: CookieSettings | None = None,
        error_response: ErrorResponse = default_error_response,
        request_session: bool = False,
        rotate_on_change: bool = True,
        websocket_origins: Collection[str] = (),
        csrf: bool | CsrfSettings = False,
    ) -> None:
        if request_session and not is_dict_type(store.data_type):
            raise TypeError(
                "request_session=True needs a store of dicts, e.g. SessionStore(dict, backend); "
                f"this store keeps {store.data_type!r}"
            )
        self.app = app
        self.store = store
        self.cookie = cookie if cookie is not None else CookieSettings()
        self.error_response = error_response
        self.request_session = request_session
        self.rotate_on_change = rotate_on_change
        self.websocket_origins = allowed_origins(websocket_origins)
        if not isinstance(csrf, bool | CsrfSettings):
            raise TypeError(f"csrf must be True, False or a CsrfSettings, not {csrf!r}")
        settings = CsrfSettings() if csrf is True else csrf
        self.csrf = Csrf(settings, self.cookie, store.on_event) if settings else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        # An HTTP request, here rather than in a method of its own: one coroutine fewer.
        slot = _Slot(self.store, self.cookie, scope["headers"], scope.get(SCOPE_KEY))
        scope[SCOPE_KEY] = slot
        answered = False  # the app's response was replaced by an error response
        bridge: Bridge | None = None

        async def send_with_session(message: Message) -> None:
            nonlocal answered
            if answered:
                return  # the rest of the app's response: dropped
            if message["type"] == "http.response.start":
                if slot.session is None and slot.error is None:
                    slot.closed = True  # never asked for: nothing to save, no header to add
                else:
                    error = await self._commit(slot, bridge, scope, message)
                    if error is not None:
                        answered = True
                        await self._send_error(scope, receive, send, error)
                        return
                if self.csrf is not None:
                    self.csrf.finish(scope, message)
            await send(message)

        if self.csrf is not None:  # before the app, and before any session is loaded
            checked = await self.csrf.check(scope, receive, send, lambda: slot.session)
            if checked is None:
                return  # refused with a 403
            receive = checked
        try:
            if self.request_session:
                bridge = Bridge(await slot.get(), scope, self.store)
            await self.app(scope, receive, send_with_session)
        except SessionError as error:
            if answered:
                return  # a framework re-raised what we already answered: the request is done
            if slot.closed:
                raise  # the app's own response went out first: too late to answer
            # The handler let a session error through before responding: answer it here, so
            # no framework turns it into a traceback page.
            slot.closed = True
            await self._send_error(scope, receive, send, error)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        slot = self._install(scope, foreign=refused_origin(scope, self.websocket_origins))
        closed = refused = False  # websocket.close went out; the changes were refused

        def refuse_changes() -> None:
            nonlocal refused
            session = slot.session
            if not refused and session is not None and (session.is_changed or session.is_deleted):
                refused = True  # once: a framework closing the socket after it is no news
                raise RuntimeError(
                    "a session cannot be saved from a WebSocket: no cookie can reach the "
                    "browser over the connection, so the changes were discarded; change the "
                    "session in an HTTP request instead"
                )

        async def send_read_only(message: Message) -> None:
            nonlocal closed
            if message["type"] == "websocket.close":
                refuse_changes()  # raised in the handler's close: the traceback points there
                closed = True
                if slot.error is not None:  # the app gave up because the store did: say so
                    message = {**message, "code": _TRY_AGAIN_LATER}
            await send(message)

        try:
            if self.request_session:
                scope["session"] = (await slot.get()).data
            await self.app(scope, receive, send_read_only)
        except StoreUnavailableError:
            # Logged by the store. Close as "try again later" (a refused handshake before
            # accept) instead of handing the server a traceback.
            if not closed:
                await send({"type": "websocket.close", "code": _TRY_AGAIN_LATER})
            return
        finally:
            slot.closed = True
        refuse_changes()

    def _install(self, scope: Scope, foreign: str | None = None) -> _Slot:
        slot = _Slot(self.store, self.cookie, scope["headers"], scope.get(SCOPE_KEY), foreign)
        scope[SCOPE_KEY] = slot
        return slot

    async def _commit(
        self, slot: _Slot, bridge: Bridge | None, scope: Scope, message: Message
    ) -> SessionError | None:
        """Save the session and put its headers on ``message``; or return why it failed."""
        slot.closed = True
        session = slot.session
        status: int = message["status"]
        if slot.error is not None and status >= 500:
            return slot.error  # the app failed because the store did: say so, as a 503
        if session is None:
            return None
        headers: Headers = list(message.get("headers", []))
        _add_vary_cookie(headers)
        if status < 500:
            try:
                if bridge is None:
                    result = await self.store.save(session)
                else:
                    result = await self._save_request_session(slot, session, bridge)
            except SessionError as error:
                return error
            cookie = self._cookie_header(result)
            if cookie is not None and isinstance(result, SetCookie) and self.cookie.secure:
                _warn_once_if_dropped(scope)
            if cookie is None and session.is_deleted and slot.had_cookie:
                # Signing out of a session that had already expired or vanished: nothing to
                # delete in the store, but the client's stale cookie should still go.
                cookie = self.cookie.delete_cookie()
            if cookie is not None:
                headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                headers += [(b"set-cookie", cookie), (b"cache-control", b"no-store")]
        message["headers"] = headers
        return None

    async def _save_request_session(
        self, slot: _Slot, session: Session[Any], bridge: Bridge
    ) -> CookieCommand:
        """Save what the app did through ``request.session`` as the typed API would have."""
        bridge.follow_scope(session)
        if bridge.ends(session):
            # A sign-out, as Django's flush(): the stored session (and its sign-in) goes;
            # whatever the app put in after clear() starts a new one, under a new id.
            session.delete()
            ended = await self.store.save(session)
            if not session.data:
                return ended
            slot.session = fresh = self.store.new(dict(session.data))
            return await self.store.save(fresh)
        if self.rotate_on_change and bridge.changed(session):
            session.regenerate()  # a sign-in through request.session: see rotate_on_change
        return await self.store.save(session)

    def _cookie_header(self, result: CookieCommand) -> bytes | None:
        if isinstance(result, DeleteCookie):
            return self.cookie.delete_cookie()
        if not isinstance(result, SetCookie):
            return None
        if not result.value_changed and not self.cookie.persistent:
            return None  # the client holds this value already; re-sending it races a login
        max_age = None
        if self.cookie.persistent:
            max_age = _NO_EXPIRY_MAX_AGE
            if result.expires_at is not None:
                seconds = int((result.expires_at - self.store.now()).total_seconds())
                max_age = max(0, min(seconds, max_age))
        return self.cookie.set_cookie(result.value, max_age)

    async def _send_error(
        self, scope: Scope, receive: Receive, send: Send, error: SessionError
    ) -> None:
        # The store has already reported outages (WARNING), a missing table (ERROR) and lost
        # races (INFO) as events; what is left is news.
        if not isinstance(error, StoreUnavailableError | SessionConflictError):
            logger.error("session error answered with a 500: %s", describe_error(error))
        # No Set-Cookie at all: not even a deletion. A lost race's winner (a sign-in in
        # another tab) may have just given the browser a newer cookie; a dead id is harmless.
        extra: Headers = [(b"vary", b"Cookie"), (b"cache-control", b"no-store")]

        async def send_without_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"set-cookie"]
                message["headers"] = kept + extra
            await send(message)

        await self.error_response(scope, error)(scope, receive, send_without_cookies)


# Test clients talk to "testserver" over plain HTTP: docs/testing.md covers that case.
_NO_WARNING_HOSTS = ("localhost", "testserver")
_warned_about_plain_http = False


def _warn_once_if_dropped(scope: Scope) -> None:
    """Log once per process that a Secure cookie went out over plain HTTP to a host other
    than localhost: the browser drops it, so sign-in "works" and nothing sticks. Behind a
    proxy that says how it was reached (``X-Forwarded-Proto``, ``Forwarded``), the proxy
    settings decide, not this."""
    global _warned_about_plain_http  # once per process, by design
    if _warned_about_plain_http or scope.get("scheme") != "http":
        return
    names = {name.lower() for name, _ in scope["headers"]}
    if names & {b"x-forwarded-proto", b"forwarded"}:
        return
    host = _request_host(scope)
    if host is None or _is_local(host):
        return
    _warned_about_plain_http = True
    logger.warning(
        "a Secure session cookie was set on a plain-HTTP request to %r: browsers drop it, so "
        "sessions will not stick; serve HTTPS there (behind a proxy, trust its "
        "X-Forwarded-Proto: uvicorn --proxy-headers), or see docs/asgi.md, "
        "'Sign-in does not stick' (logged once)",
        host,
    )


def _request_host(scope: Scope) -> str | None:
    """The host name the client used (the Host header, else the server's), without port."""
    host: str
    for name, value in scope["headers"]:
        if name.lower() == b"host":
            host = bytes(value).decode("latin-1")
            break
    else:
        server = scope.get("server")
        if not server:
            return None
        host = str(server[0])
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else None
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_local(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name in _NO_WARNING_HOSTS or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _add_vary_cookie(headers: Headers) -> None:
    for index, (key, value) in enumerate(headers):
        if key.lower() == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if not tokens & {b"cookie", b"*"}:
                headers[index] = (key, value + b", Cookie")
            return
    headers.append((b"vary", b"Cookie"))
