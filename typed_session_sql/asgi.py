"""Sessions for any ASGI app: a pure ASGI middleware and ``get_session``.

Read top to bottom, a request goes like this. The middleware puts a lazy slot in the
scope and calls the app. Nothing is read until the handler awaits ``get_session``: only
then is the ``Cookie`` header searched (exact byte match on the name, two matches mean no
session) and the store asked, and only if there was a cookie. When the app starts its
response, the middleware saves the session (unless the status is 5xx), adds the
``Set-Cookie`` the save asks for, ``Cache-Control: no-store`` with it, and ``Vary: Cookie``,
and only then lets the response start. A save that loses a race or a store that is down
replaces the response with a short 409 or 503 that carries no session cookie.

No framework is imported here: Starlette, FastAPI and Litestar apps all work through the
scope alone.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio

from typed_session_sql.commands import DeleteCookie, SaveResult, SetCookie
from typed_session_sql.errors import (
    SessionConflictError,
    SessionDeletedError,
    SessionError,
    StoreUnavailableError,
)
from typed_session_sql.events import EventKind, emit
from typed_session_sql.session import Session

if TYPE_CHECKING:
    from typed_session_sql.store import SessionStore

__all__ = ["CookieSettings", "SessionMiddleware", "default_error_response", "get_session"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: frameworks type the scope differently (Starlette a MutableMapping,
# Litestar TypedDicts), and the middleware must wrap any of them.
ASGIApp = Callable[..., Awaitable[None]]
ErrorResponse = Callable[[Scope, SessionError], ASGIApp]
"""Makes the response that replaces the app's when the session cannot be saved or loaded."""

Headers = list[tuple[bytes, bytes]]

SCOPE_KEY = "typed_session_sql.session"
"""Where the middleware keeps the request's session slot in the ASGI scope."""

logger = logging.getLogger("typed_session_sql")

# RFC 6265 cookie-name is an RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Path and Domain attribute values: printable ASCII without ';'.
_ATTRIBUTE_VALUE = re.compile(r"[\x20-\x3a\x3c-\x7e]+")
_NO_EXPIRY_MAX_AGE = 400 * 24 * 3600  # 400 days: the cap browsers apply (RFC 6265bis)


@dataclass(frozen=True, slots=True)
class CookieSettings:
    """How the session cookie is named and sent. Checked when made: settings that a browser
    would refuse, or that weaken the cookie's prefix, raise ValueError."""

    name: str = "__Host-id"
    """The cookie's name. Generic on purpose: it does not name the library. The ``__Host-``
    prefix makes browsers insist on Secure, Path=/ and no Domain, so a sibling subdomain
    cannot plant ("toss") a session cookie for this host."""

    secure: bool = True
    """Send only over HTTPS. Browsers treat http://localhost as secure, so local development
    works with the default."""

    http_only: bool = True
    """Hide the cookie from JavaScript, so an XSS bug cannot read the session id."""

    same_site: Literal["lax", "strict", "none"] = "lax"
    """Cross-site sending: "lax" (the default) withholds it from cross-site subrequests and
    POSTs; "none" requires ``secure``. Defence in depth only: the app still needs CSRF tokens."""

    path: str = "/"
    """The URL path the cookie is sent for; must be "/" with a ``__Host-`` name."""

    domain: str | None = None
    """None makes a host-only cookie (the safe default). A domain shares the cookie with its
    subdomains; not allowed with a ``__Host-`` name."""

    persistent: bool = False
    """False sends a browser-session cookie (no Max-Age: it goes when the browser closes).
    True sends Max-Age bounded by the session's expiry, and re-sends it when the expiry moves."""

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.name):
            raise ValueError(f"CookieSettings.name {self.name!r} is not a valid cookie name")
        if self.same_site not in ("lax", "strict", "none"):
            raise ValueError(
                f"CookieSettings.same_site must be lax, strict or none, not {self.same_site!r}"
            )
        if not self.path.startswith("/") or not _ATTRIBUTE_VALUE.fullmatch(self.path):
            raise ValueError(f"CookieSettings.path must be an absolute URL path, not {self.path!r}")
        if self.domain is not None and not _ATTRIBUTE_VALUE.fullmatch(self.domain):
            raise ValueError(f"CookieSettings.domain {self.domain!r} is not a valid domain")
        prefixed = self.name.startswith(("__Host-", "__Secure-"))
        if prefixed and not self.secure:
            raise ValueError(f"a cookie named {self.name!r} needs secure=True")
        if self.name.startswith("__Host-") and (self.domain is not None or self.path != "/"):
            raise ValueError(f"a cookie named {self.name!r} needs path='/' and no domain")
        if self.same_site == "none" and not self.secure:
            raise ValueError("same_site='none' needs secure=True")

    def _attributes(self) -> str:
        parts = [f"Path={self.path}"]
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        if self.secure:
            parts.append("Secure")
        if self.http_only:
            parts.append("HttpOnly")
        parts.append(f"SameSite={self.same_site.capitalize()}")
        return "; ".join(parts)

    def set_cookie(self, value: str, max_age: int | None) -> bytes:
        """The ``Set-Cookie`` header value that gives the client this session id."""
        age = "" if max_age is None else f"; Max-Age={max_age}"
        return f"{self.name}={value}{age}; {self._attributes()}".encode("latin-1")

    def delete_cookie(self) -> bytes:
        """The ``Set-Cookie`` header value that removes the cookie: same name and attributes,
        or a browser keeps a ``__Host-`` cookie."""
        expired = "Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        return f"{self.name}=; {expired}; {self._attributes()}".encode("latin-1")

    def find(self, headers: Headers) -> tuple[str | None, int]:
        """The cookie's value in the request's raw ``Cookie`` headers, and how many cookies
        bore its name. The name must match byte for byte: no percent-decoding, no Unicode
        trimming, no case folding; only the ASCII spaces around each pair are dropped."""
        wanted = self.name.encode("ascii")
        found: list[bytes] = []
        for header, value in headers:
            if header != b"cookie":
                continue
            for pair in value.split(b";"):
                name, equals, cookie_value = pair.strip(b" \t").partition(b"=")
                if equals and name == wanted:
                    found.append(cookie_value)
        if len(found) != 1:
            return None, len(found)
        return found[0].decode("latin-1"), 1


def default_error_response(scope: Scope, error: SessionError) -> ASGIApp:
    """A short plain-text 409 (lost race or deleted session), 503 (store down) or 500."""
    if isinstance(error, SessionConflictError):
        status, text = 409, "The session was changed by another request. Please try again."
    elif isinstance(error, StoreUnavailableError):
        status, text = 503, "Sessions are unavailable right now. Please try again shortly."
    else:
        status, text = 500, "The session could not be saved."
    body = (text + "\n").encode()

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        if status == 503:
            headers.append((b"retry-after", b"5"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return respond


class _Slot:
    """One request's session: loaded on first use, saved once when the response starts."""

    __slots__ = ("_lock", "closed", "cookie", "error", "had_cookie", "headers", "session", "store")

    def __init__(self, store: SessionStore[Any], cookie: CookieSettings, headers: Headers) -> None:
        self.store = store
        self.cookie = cookie
        self.headers = headers
        self.session: Session[Any] | None = None
        self.error: SessionError | None = None
        self.had_cookie = False  # the request named a session, valid or not
        self.closed = False
        self._lock = anyio.Lock()

    async def get(self) -> Session[Any]:
        if self.closed:
            raise RuntimeError("the response has started: the session was already saved")
        async with self._lock:
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
            self.error = error
            raise
        return loaded if loaded is not None else self.store.new()


class SessionMiddleware:
    """Gives each HTTP request a lazily loaded session, saved before the response starts.

    Args:
        app: the ASGI app to wrap.
        store: where sessions are loaded from and saved to.
        cookie: the cookie's name and attributes.
        error_response: makes the response sent instead of the app's when the session
            cannot be saved (409 on a lost race, 503 when the store is down); it must not
            set the session cookie.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore[Any],
        cookie: CookieSettings | None = None,
        error_response: ErrorResponse = default_error_response,
    ) -> None:
        self.app = app
        self.store = store
        self.cookie = cookie if cookie is not None else CookieSettings()
        self.error_response = error_response

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        slot = _Slot(self.store, self.cookie, scope["headers"])
        scope[SCOPE_KEY] = slot
        replaced = False  # the app's response was swapped for an error response

        async def send_with_session(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the rest of the app's response: dropped
            if message["type"] == "http.response.start":
                error = await self._commit(slot, message)
                if error is not None:
                    replaced = True
                    await self._send_error(scope, receive, send, error)
                    return
            await send(message)

        try:
            await self.app(scope, receive, send_with_session)
        except SessionError as error:
            # The handler let a session error through before responding: answer it here, so
            # no framework turns it into a traceback page.
            if slot.closed:
                raise
            slot.closed = True
            await self._send_error(scope, receive, send, error)

    async def _commit(self, slot: _Slot, message: Message) -> SessionError | None:
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
                result = await self.store.save(session)
            except SessionError as error:
                return error
            cookie = self._cookie_header(result)
            if cookie is None and session.is_deleted and slot.had_cookie:
                # Signing out of a session that had already expired or vanished: nothing to
                # delete in the store, but the client's stale cookie should still go.
                cookie = self.cookie.delete_cookie()
            if cookie is not None:
                headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                headers += [(b"set-cookie", cookie), (b"cache-control", b"no-store")]
        message["headers"] = headers
        return None

    def _cookie_header(self, result: SaveResult) -> bytes | None:
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
        if not isinstance(error, StoreUnavailableError | SessionConflictError):
            logger.error("session error answered with a 500: %s", type(error).__name__)
        extra: Headers = [(b"vary", b"Cookie"), (b"cache-control", b"no-store")]
        if isinstance(error, SessionDeletedError):
            extra.append((b"set-cookie", self.cookie.delete_cookie()))  # signed out meanwhile

        async def send_with_extra(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"set-cookie"]
                message["headers"] = kept + extra
            await send(message)

        await self.error_response(scope, error)(scope, receive, send_with_extra)


def _add_vary_cookie(headers: Headers) -> None:
    for index, (key, value) in enumerate(headers):
        if key.lower() == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if not tokens & {b"cookie", b"*"}:
                headers[index] = (key, value + b", Cookie")
            return
    headers.append((b"vary", b"Cookie"))


class _HasScope(Protocol):
    @property
    def scope(self) -> Mapping[str, Any]: ...


class _GetSession:
    """``await get_session(request)``: the request's session, loaded on first use.

    ``request`` is anything with an ASGI ``.scope`` of an HTTP request: a Starlette or
    FastAPI ``Request``, a Litestar ``Request``. In FastAPI, use it as a dependency:
    ``session: Annotated[Session[Cart], Depends(get_session)]``.
    """

    async def __call__(self, request: _HasScope) -> Session[Any]:
        slot = request.scope.get(SCOPE_KEY)
        if not isinstance(slot, _Slot):
            raise RuntimeError(
                "no session for this request: wrap the app in SessionMiddleware "
                "(sessions are for HTTP requests only)"
            )
        return await slot.get()

    @property
    def __signature__(self) -> inspect.Signature:
        # FastAPI injects the request into a dependency by the parameter's annotation, so it
        # must see Starlette's class; it is imported only when someone asks, never at import.
        try:
            from starlette.requests import HTTPConnection
        except ImportError:
            return inspect.signature(self.__call__)
        parameter = inspect.Parameter(
            "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
        )
        return inspect.Signature([parameter], return_annotation=Session)

    def __repr__(self) -> str:
        return "get_session"


get_session = _GetSession()
