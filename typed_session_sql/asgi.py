"""Sessions for any ASGI app: a pure ASGI middleware, ``get_session`` and ``store.session``.

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
read-only: nothing can carry a new cookie to the browser over the connection.

With ``request_session=True`` the session's data, a dict, is also ``scope["session"]``,
which is what ``request.session`` reads in Starlette (and so Authlib, sqladmin and
starlette-admin).

No framework is imported here: Starlette, FastAPI and Litestar apps all work through the
scope alone. Store failures are logged once, by the store, where they happen; only the
errors the store does not report are logged here.
"""

from __future__ import annotations

import inspect
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, get_origin

import anyio

from typed_session_sql.commands import CookieCommand, DeleteCookie, SetCookie
from typed_session_sql.cookies import CookieSettings, Headers
from typed_session_sql.errors import (
    SessionConflictError,
    SessionError,
    SessionTableMissingError,
    StoreUnavailableError,
    describe_error,
)
from typed_session_sql.events import EventKind, emit
from typed_session_sql.session import Session

if TYPE_CHECKING:
    from typed_session_sql.store import SessionStore

__all__ = [
    "CookieSettings",
    "SessionAccessor",
    "SessionMiddleware",
    "default_error_response",
    "get_session",
]

T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: frameworks type the scope differently (Starlette a MutableMapping,
# Litestar TypedDicts), and the middleware must wrap any of them.
ASGIApp = Callable[..., Awaitable[None]]
ErrorResponse = Callable[[Scope, SessionError], ASGIApp]
"""Makes the response that replaces the app's when the session cannot be saved or loaded."""

SCOPE_KEY = "typed_session_sql.session"
"""Where the middleware keeps the connection's session slot in the ASGI scope."""

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
        "_lock",
        "closed",
        "cookie",
        "error",
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
    ) -> None:
        self.store = store
        self.cookie = cookie
        self.headers = headers
        self.outer = outer
        self.session: Session[Any] | None = None
        self.error: StoreUnavailableError | None = None
        self.had_cookie = False  # the request named a session, valid or not
        self.closed = False
        self._lock: anyio.Lock | None = None  # made on first use: most requests never ask

    async def get(self) -> Session[Any]:
        if self.closed:
            raise RuntimeError("the response has started: the session was already saved")
        if self.session is not None:
            return self.session
        if self._lock is None:  # no await since the check above: one task makes it
            self._lock = anyio.Lock()
        async with self._lock:  # concurrent first uses load once
            if self.session is None:
                self.session = await self._load()
            return self.session

    async def _load(self) -> Session[Any]:
        value, count = self.cookie.find(self.headers)
        self.had_cookie = count > 0
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
    """

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore[Any],
        cookie: CookieSettings | None = None,
        error_response: ErrorResponse = default_error_response,
        request_session: bool = False,
    ) -> None:
        if request_session and not _is_dict_type(store.data_type):
            raise TypeError(
                "request_session=True needs a store of dicts, e.g. SessionStore(dict, backend); "
                f"this store keeps {store.data_type!r}"
            )
        self.app = app
        self.store = store
        self.cookie = cookie if cookie is not None else CookieSettings()
        self.error_response = error_response
        self.request_session = request_session

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        slot = self._install(scope)
        answered = False  # the app's response was replaced by an error response

        async def send_with_session(message: Message) -> None:
            nonlocal answered
            if answered:
                return  # the rest of the app's response: dropped
            if message["type"] == "http.response.start":
                error = await self._commit(slot, scope, message)
                if error is not None:
                    answered = True
                    await self._send_error(scope, receive, send, error)
                    return
            await send(message)

        try:
            if self.request_session:
                scope["session"] = (await slot.get()).data
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
        slot = self._install(scope)
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

    def _install(self, scope: Scope) -> _Slot:
        slot = _Slot(self.store, self.cookie, scope["headers"], outer=scope.get(SCOPE_KEY))
        scope[SCOPE_KEY] = slot
        return slot

    async def _commit(self, slot: _Slot, scope: Scope, message: Message) -> SessionError | None:
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
            if self.request_session:
                _take_request_session(session, scope)
            try:
                result = await self.store.save(session)
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


def _is_dict_type(data_type: object) -> bool:
    origin = get_origin(data_type) or data_type
    return isinstance(origin, type) and issubclass(origin, dict)


def _take_request_session(session: Session[Any], scope: Scope) -> None:
    """Follow what the app did to ``scope["session"]``: a new dict replaces the data; none
    (Litestar's ``clear_session``) deletes the session. Mutations are seen by the save."""
    current = scope.get("session")
    if current is session.data or session.is_deleted:
        return
    if isinstance(current, dict):
        session.data = current
    else:
        session.delete()


# -- getting the session in a handler ----------------------------------------------------


class _HasScope(Protocol):
    @property
    def scope(self) -> Mapping[str, Any]: ...


def _slot_of(connection: _HasScope, store: SessionStore[Any] | None) -> _Slot:
    """The connection's slot: the innermost middleware's, or the one of ``store``."""
    slot = connection.scope.get(SCOPE_KEY)
    if not isinstance(slot, _Slot):
        raise RuntimeError(
            "no session for this request: wrap the app in SessionMiddleware "
            "(sessions are for HTTP requests and WebSocket connections)"
        )
    if store is None:
        return slot
    found: _Slot | None = slot
    while found is not None and found.store is not store:
        found = found.outer
    if found is None:
        raise RuntimeError(f"no SessionMiddleware with {store!r} wraps this request")
    return found


def _connection_signature() -> inspect.Signature | None:
    """``(request: HTTPConnection) -> Session``: FastAPI injects the request (or WebSocket)
    into a dependency by the parameter's annotation, so it must see Starlette's class. It is
    imported only when someone asks, never when this module is imported."""
    try:
        from starlette.requests import HTTPConnection
    except ImportError:
        return None
    parameter = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
    )
    return inspect.Signature([parameter], return_annotation=Session)


class SessionAccessor(Generic[T]):
    """``await store.session(request)``: the request's ``Session[T]``, loaded on first use.

    Made by :attr:`SessionStore.session`; typed by the store, so a wrong annotation is a
    type error. ``request`` is anything with an ASGI ``.scope`` (a Starlette or FastAPI
    ``Request`` or ``WebSocket``, a Litestar ``Request``). In FastAPI it is a dependency:
    ``Annotated[Session[Cart], Depends(store.session)]``.
    """

    __slots__ = ("store",)

    def __init__(self, store: SessionStore[T]) -> None:
        self.store = store

    async def __call__(self, request: _HasScope) -> Session[T]:
        return await _slot_of(request, self.store).get()

    @property
    def __signature__(self) -> inspect.Signature:
        return _connection_signature() or inspect.signature(self.__call__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionAccessor) and other.store is self.store

    def __hash__(self) -> int:
        return hash((SessionAccessor, id(self.store)))

    def __repr__(self) -> str:
        return f"{self.store!r}.session"


class _GetSession:
    """``await get_session(request)``: the request's session, loaded on first use, from the
    innermost :class:`SessionMiddleware`.

    Typed ``Session[Any]``: prefer ``store.session``, which knows the data type. This one
    is for code that has no store at hand. In FastAPI it is a dependency too.
    """

    async def __call__(self, request: _HasScope) -> Session[Any]:
        return await _slot_of(request, None).get()

    @property
    def __signature__(self) -> inspect.Signature:
        return _connection_signature() or inspect.signature(self.__call__)

    def __repr__(self) -> str:
        return "get_session"


get_session = _GetSession()
