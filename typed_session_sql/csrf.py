"""CSRF protection bound to the session: ``SessionMiddleware(..., csrf=True)`` and
``await csrf_token(request)``.

How it works. The browser holds a CSRF cookie with a random secret ``S`` and a tag: the
HMAC of ``S`` keyed by the session id the browser holds (by the empty key for a visitor
with no session). A page gets ``S`` masked with fresh random bytes each time it asks
(``csrf_token``), as Django does against BREACH. A request with an unsafe method must
present a token that unmasks to ``S``, and the cookie's tag must match the session cookie
the request carries. A request the browser marks as sent from another site
(``Sec-Fetch-Site: cross-site``) is refused at once. So:

- a forged cross-site request cannot carry the token: its author can read neither the page
  nor the HttpOnly cookie;
- a token, or a cookie and token pair, taken from another browser is refused: its tag is
  keyed by that browser's session id, which nobody else knows;
- a sign-in (any new id) invalidates every token issued before it: the old tag no longer
  matches, and the next token is drawn from a fresh ``S``;
- nothing is stored on the server: a visitor who only looks at pages costs no row, and no
  new secret has to be configured or shared between processes. The key is the session id,
  a 256-bit secret that already reaches the server on every request.

The tag is written when the response starts, once the session's final id is known, so a
page rendered in the same response as a sign-in carries a token that works after it.

Tokens come from the ``X-CSRF-Token`` header or, for HTML forms, a ``csrf_token`` field of
an ``application/x-www-form-urlencoded`` or ``multipart/form-data`` body. The body is read
only until the field is found (at most ``max_scan_bytes``), then replayed to the app
message by message, unchanged, followed by the rest. Put the field first in the form: an
upload after it is never buffered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from typed_session_sql.cookies import CookieSettings, Headers
from typed_session_sql.events import EventHook, EventKind, emit
from typed_session_sql.session import PendingCreate, PendingUpdate, Session

__all__ = ["CsrfFailure", "CsrfSettings", "csrf_token", "default_csrf_failure_response"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

SCOPE_KEY = "typed_session_sql.csrf"
"""Where the middleware keeps the request's CSRF state in the ASGI scope."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""The methods RFC 9110 calls safe; every other one needs a token."""

logger = logging.getLogger("typed_session_sql")

_SECRET_BYTES = 32
_B64 = r"[A-Za-z0-9_-]"
_COOKIE = re.compile(rf"({_B64}{{43}})\.({_B64}{{43}})")  # secret.tag, 32 bytes each
_TOKEN = re.compile(rf"{_B64}{{86}}")  # mask + masked secret, 64 bytes
_TAG_CONTEXT = b"typed-session-sql csrf cookie tag v1:"
_FORM = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"


class CsrfFailure(str):
    """Why a request failed the CSRF check: a short fixed phrase, safe to show and log (it
    never contains a token, cookie or id)."""

    __slots__ = ()


FailureResponse = Callable[[Scope, CsrfFailure], ASGIApp]
"""Makes the 403 response sent instead of calling the app."""


def default_csrf_failure_response(scope: Scope, failure: CsrfFailure) -> ASGIApp:
    """A short plain-text 403 that says why, in words that give nothing away."""
    body = f"Forbidden: the CSRF check failed ({failure}).\n".encode()

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return respond


@dataclass(frozen=True, slots=True)
class CsrfSettings:
    """How ``SessionMiddleware(..., csrf=...)`` checks requests; ``csrf=True`` takes these
    defaults. Checked when made: bad values raise ValueError."""

    header: str = "X-CSRF-Token"
    """The request header a script sends the token in (``fetch``, htmx, an SPA)."""

    field: str = "csrf_token"
    """The form field an HTML form sends the token in."""

    cookie_name: str | None = None
    """The CSRF cookie's name. None: ``csrf`` with the session cookie's prefix (``__Host-csrf``
    for the default ``__Host-id``). Its other attributes are the session cookie's, except that
    it is always a browser-session cookie: after a browser restart, a page gets a new one."""

    max_scan_bytes: int = 65536
    """How much of a form body is read looking for the field. A form whose field is not in
    its first ``max_scan_bytes`` is refused (403): put the field first in the form, or
    send the header."""

    failure_response: FailureResponse = default_csrf_failure_response
    """Makes the 403 response to a request that fails the check (the app is not called)."""

    def __post_init__(self) -> None:
        if not self.header or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", self.header):
            raise ValueError(f"CsrfSettings.header {self.header!r} is not a valid header name")
        if not self.field:
            raise ValueError("CsrfSettings.field must not be empty")
        if self.max_scan_bytes < 1024:
            raise ValueError("CsrfSettings.max_scan_bytes must be at least 1024")


class Csrf:
    """The middleware's side: checks unsafe requests, and sets the CSRF cookie when a
    token was given out. Made by ``SessionMiddleware``; not a public class."""

    def __init__(
        self, settings: CsrfSettings, session_cookie: CookieSettings, on_event: EventHook | None
    ) -> None:
        name = settings.cookie_name
        if name is None:
            prefix = re.match(r"__(host|secure)-", session_cookie.name, re.IGNORECASE)
            name = (prefix.group(0) if prefix else "") + "csrf"
        if name == session_cookie.name:
            raise ValueError(f"the CSRF cookie cannot share the session cookie's name {name!r}")
        # The session cookie's attributes: both go to the same place, or neither works.
        self.cookie = replace(session_cookie, name=name, persistent=False, http_only=True)
        self.session_cookie = session_cookie
        self.settings = settings
        self.header = settings.header.lower().encode("latin-1")
        self.field = settings.field.encode()
        self.on_event = on_event

    # -- the check, before the app runs -------------------------------------------------

    async def check(
        self, scope: Scope, receive: Receive, send: Send, session: Callable[[], Session[Any] | None]
    ) -> Receive | None:
        """Install the request's CSRF state; for an unsafe method, check the token. Returns
        the ``receive`` the app must use (replaying what was read), or None once a 403 has
        been sent."""
        if SCOPE_KEY in scope:  # each would bind its own cookie to its own session
            raise RuntimeError("two SessionMiddleware with csrf enabled wrap this app; keep one")
        headers: Headers = scope["headers"]
        bound_to, _ = self.session_cookie.find(headers)
        state = _State(bound_to, self._verified_secret(headers, bound_to), session)
        scope[SCOPE_KEY] = state
        if scope["method"] in SAFE_METHODS:
            return receive
        failure, replay = await self._failure(state, headers, receive)
        if failure is None:
            return replay
        emit(self.on_event, EventKind.CSRF_FAILED, failure)
        await self.settings.failure_response(scope, CsrfFailure(failure))(scope, replay, send)
        return None

    async def _failure(
        self, state: _State, headers: Headers, receive: Receive
    ) -> tuple[str | None, Receive]:
        """Why the request fails the check (None: it passes), and its replaying receive."""
        if (b"sec-fetch-site", b"cross-site") in headers:
            return "sent from another site", receive  # the browser says so: no body read
        if state.secret is None:
            value, count = self.cookie.find(headers)
            if count != 1 or value is None or not _COOKIE.fullmatch(value):
                return "no CSRF cookie", receive
            return "CSRF cookie of another session", receive
        token, replay = await self._token(headers, receive)
        if token is None and replay.overflowed:
            limit = self.settings.max_scan_bytes
            return f"no CSRF token in the first {limit} bytes of the form", replay
        if token is None:
            return "no CSRF token", replay
        if not _token_matches(token, state.secret):
            return "wrong CSRF token", replay
        return None, replay

    def _verified_secret(self, headers: Headers, bound_to: str | None) -> bytes | None:
        """The secret of the request's CSRF cookie if its tag matches the session cookie."""
        value, count = self.cookie.find(headers)
        match = _COOKIE.fullmatch(value) if value is not None and count == 1 else None
        if match is None:
            return None
        secret = _decode(match.group(1))
        if not hmac.compare_digest(_decode(match.group(2)), _tag(secret, bound_to)):
            return None
        return secret

    async def _token(self, headers: Headers, receive: Receive) -> tuple[bytes | None, _Replay]:
        sent = [value for key, value in headers if key == self.header]
        if sent:  # the header wins; two of them are no token
            return (sent[0] if len(sent) == 1 else None), _Replay(receive)
        media_type, params = _content_type(headers)
        if media_type == _FORM:
            find: _FieldFinder = _urlencoded_field
        elif media_type == _MULTIPART and params.get("boundary"):
            boundary = params["boundary"].encode("latin-1")

            def find(data: bytes, name: bytes, complete: bool) -> tuple[bytes | None, bool]:
                return _multipart_field(data, boundary, name, complete)
        else:
            return None, _Replay(receive)
        return await _scan(receive, find, self.field, self.settings.max_scan_bytes)

    # -- the cookie, when the response starts -------------------------------------------

    def finish(self, scope: Scope, message: Message) -> None:
        """Add the CSRF cookie to the response's start ``message`` if a token was given out
        with a new secret; by now the session cookie the browser will hold is known."""
        state = scope.get(SCOPE_KEY)
        if not isinstance(state, _State) or not state.given:
            return
        headers: Headers = list(message.get("headers", []))
        bound_to = _set_cookie_value(headers, self.session_cookie.name, state.bound_to)
        if state.fresh is not None:
            value = f"{_encode(state.fresh)}.{_encode(_tag(state.fresh, bound_to))}"
            headers.append((b"set-cookie", self.cookie.set_cookie(value, None)))
            message["headers"] = headers
        elif bound_to != state.bound_to:
            # The page got a token of the old secret, then the session changed id: the
            # token is dead on arrival. Keeping the secret would keep older tokens alive.
            logger.warning(
                "a CSRF token was given out before the session changed its id (sign_in, "
                "regenerate, delete) in the same request; ask for it after the change"
            )


class _State:
    """One request's CSRF state: what the cookie held, and the secret given out."""

    __slots__ = ("bound_to", "fresh", "given", "secret", "session")

    def __init__(
        self,
        bound_to: str | None,
        secret: bytes | None,
        session: Callable[[], Session[Any] | None],
    ) -> None:
        self.bound_to = bound_to  # the session cookie value the request carried
        self.secret = secret  # the verified secret of the request's CSRF cookie
        self.session = session
        self.fresh: bytes | None = None  # a secret drawn for this response
        self.given = False

    def token(self) -> str:
        secret = self.fresh
        if secret is None:
            secret = self.secret
            if secret is None or _changes_id(self.session()):
                secret = self.fresh = secrets.token_bytes(_SECRET_BYTES)
        self.given = True
        mask = secrets.token_bytes(_SECRET_BYTES)
        return _encode(mask + bytes(a ^ b for a, b in zip(mask, secret, strict=True)))


class _HasScope(Protocol):
    @property
    def scope(self) -> Mapping[str, Any]: ...


async def csrf_token(request: _HasScope) -> str:
    """The token to put in a page: a hidden ``csrf_token`` field of a form, or a value a
    script sends as the ``X-CSRF-Token`` header. Each call masks it afresh (BREACH); all
    are valid until the session changes id (sign-in, regenerate, sign-out).

    Ask for it after a sign-in in the same request, not before: the token then belongs to
    the new session.

    Raises RuntimeError if no ``SessionMiddleware(..., csrf=True)`` wraps the request.
    """
    state = request.scope.get(SCOPE_KEY)
    if not isinstance(state, _State):
        raise RuntimeError(
            "no CSRF protection for this request: wrap the app in SessionMiddleware(..., csrf=True)"
        )
    return state.token()


def _changes_id(session: Session[Any] | None) -> bool:
    """Whether saving ``session`` gives the browser a new session cookie, or none."""
    if session is None:
        return False  # never loaded: nothing about it can change
    if session.is_deleted:
        return True
    pending = session._pending_write()
    return isinstance(pending, PendingCreate) or (
        isinstance(pending, PendingUpdate) and pending.rotate
    )


def _tag(secret: bytes, session_value: str | None) -> bytes:
    key = b"" if session_value is None else session_value.encode("latin-1")
    return hmac.new(key, _TAG_CONTEXT + secret, hashlib.sha256).digest()


def _token_matches(token: bytes, secret: bytes) -> bool:
    text = token.decode("latin-1")
    if not _TOKEN.fullmatch(text):
        return False
    raw = _decode(text)
    mask, masked = raw[:_SECRET_BYTES], raw[_SECRET_BYTES:]
    unmasked = bytes(a ^ b for a, b in zip(mask, masked, strict=True))
    return hmac.compare_digest(unmasked, secret)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _set_cookie_value(headers: Headers, name: str, before: str | None) -> str | None:
    """The session cookie value the browser holds after this response: the one it is sent,
    None if it is deleted, else the one it had."""
    prefix = name.encode("latin-1") + b"="
    for key, value in headers:
        if key.lower() == b"set-cookie" and value.startswith(prefix):
            sent = value[len(prefix) :].split(b";", 1)[0].decode("latin-1")
            return sent or None
    return before


def _content_type(headers: Headers) -> tuple[str, dict[str, str]]:
    for key, value in headers:
        if key == b"content-type":
            media_type, *rest = value.decode("latin-1").split(";")
            params = {}
            for param in rest:
                name, _, param_value = param.strip().partition("=")
                params[name.lower()] = param_value.strip().strip('"')
            return media_type.strip().lower(), params
    return "", {}


# -- finding the token in a form body ------------------------------------------------------

_FieldFinder = Callable[[bytes, bytes, bool], tuple[bytes | None, bool]]
"""``(body so far, field name, body complete) -> (value, stop reading)``."""


class _Replay:
    """A ``receive`` that hands the app the messages already read, then the rest."""

    def __init__(self, receive: Receive, messages: list[Message] | None = None) -> None:
        self._receive = receive
        self._messages = deque(messages or ())
        self.overflowed = False

    async def __call__(self) -> Message:
        if self._messages:
            return self._messages.popleft()
        return await self._receive()


_SCAN_STEP = 1024
"""Bytes to gather between two looks for the field: a body sent a byte per message would
otherwise be searched from its start once per byte."""


async def _scan(
    receive: Receive, find: _FieldFinder, name: bytes, limit: int
) -> tuple[bytes | None, _Replay]:
    messages: list[Message] = []
    body = bytearray()
    searched = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":  # the client went away
            return None, _Replay(receive, messages)
        body += message.get("body", b"")
        complete = not message.get("more_body", False) and len(body) <= limit
        if not complete and len(body) < min(searched + _SCAN_STEP, limit):
            continue
        searched = len(body)
        value, stop = find(bytes(body[:limit]), name, complete)
        if value is not None or stop or len(body) >= limit:
            replay = _Replay(receive, messages)
            replay.overflowed = value is None and not stop
            return value, replay


def _urlencoded_field(data: bytes, name: bytes, complete: bool) -> tuple[bytes | None, bool]:
    fields = data.split(b"&")
    if not complete:
        fields.pop()  # may be cut short
    for pair in fields:
        key, _, value = pair.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")) == name:
            return unquote_to_bytes(value.replace(b"+", b" ")), True
    return None, complete


_PART_NAME = re.compile(rb';\s*name="([^"]*)"', re.IGNORECASE)


def _multipart_field(
    data: bytes, boundary: bytes, name: bytes, complete: bool
) -> tuple[bytes | None, bool]:
    """Walk the parts in order until the one named ``name`` is whole (RFC 7578)."""
    delimiter = b"--" + boundary
    start = data.find(delimiter)
    if start < 0:
        return None, complete
    position = start + len(delimiter)
    while True:
        if len(data) < position + 2:
            return None, complete
        if data[position : position + 2] != b"\r\n":
            return None, True  # "--": the last part ended; anything else is malformed
        head_end = data.find(b"\r\n\r\n", position + 2)
        if head_end < 0:
            return None, complete
        part_end = data.find(b"\r\n" + delimiter, head_end + 4)
        if part_end < 0:
            return None, complete
        if _part_name(data[position + 2 : head_end]) == name:
            return data[head_end + 4 : part_end], True
        position = part_end + 2 + len(delimiter)


def _part_name(head: bytes) -> bytes | None:
    for line in head.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            match = _PART_NAME.search(value)
            return match.group(1) if match else None
    return None
