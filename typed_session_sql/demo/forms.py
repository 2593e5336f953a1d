"""Accepting a POSTed form safely: the CSRF check before the body, a capped body, counted
fields.

CSRF protection is a signed double-submit cookie. The browser holds a random nonce in an
HttpOnly ``__Host-csrf`` cookie; every form carries ``HMAC(secret, nonce)``. A forged
cross-site form cannot carry that token: its author can neither read the cookie nor compute
the HMAC without the server's secret, and the ``__Host-`` prefix stops a sibling subdomain
from planting a nonce of its own. Nothing is stored on the server, so a visitor who only
looks at pages costs no database row; the session is created when the visitor signs in.

The order of the checks is the point: a request that cannot pass (no nonce cookie, sent
from another site, not a form, too large) is refused before a byte of its body is read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from typed_session_sql.cookies import CookieSettings

MAX_FORM_BYTES = 2048
"""The largest form body accepted: the demo's forms are a few short fields."""
MAX_FORM_FIELDS = 4
"""The most fields a form may have (a name or a product and a quantity, and the token)."""

_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 random bytes, base64url


class FormRefused(Exception):
    """The request's form is not accepted; ``status`` says why (403, 400, 413, 415)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Csrf:
    """Signed double-submit CSRF tokens. ``secret`` must be the same in every process of
    the app, and kept out of the code (the demo makes one per run)."""

    cookie = CookieSettings(name="__Host-csrf")

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the CSRF secret must have at least 32 bytes")
        self._secret = secret

    def nonce(self, request: Request) -> str | None:
        """The request's well-formed nonce cookie (exact name, exactly one), or None."""
        value, _ = self.cookie.find(request.scope["headers"])
        return value if value is not None and _NONCE.fullmatch(value) else None

    def token(self, nonce: str) -> str:
        """The form token for ``nonce``."""
        digest = hmac.new(self._secret, nonce.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def page_nonce(self, request: Request) -> tuple[str, bool]:
        """The nonce to render a page's forms with, and whether it is new (then the
        response must carry it: :meth:`give`)."""
        nonce = self.nonce(request)
        return (nonce, False) if nonce is not None else (secrets.token_urlsafe(32), True)

    def give(self, response: Response, nonce: str | None = None) -> None:
        """Set the nonce cookie (a fresh one by default: on sign-in and sign-out, so a
        token seen before either is worthless after)."""
        value = nonce if nonce is not None else secrets.token_urlsafe(32)
        response.headers.append("set-cookie", self.cookie.set_cookie(value, None).decode())


async def read_form(request: Request, csrf: Csrf) -> dict[str, str]:
    """The POSTed form, once it passed the CSRF check; else :class:`FormRefused`."""
    nonce = csrf.nonce(request)
    if nonce is None or request.headers.get("sec-fetch-site") == "cross-site":
        raise FormRefused(403, "no CSRF cookie, or sent from another site")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise FormRefused(415, "not a form")
    declared = request.headers.get("content-length", "")
    if declared and (not declared.isascii() or not declared.isdigit()):
        raise FormRefused(400, "malformed Content-Length")
    if declared and int(declared) > MAX_FORM_BYTES:
        raise FormRefused(413, "form too large")
    body = bytearray()
    async for chunk in request.stream():  # counted as it comes: Content-Length may lie
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRefused(413, "form too large")
    if body.count(b"&") + 1 > MAX_FORM_FIELDS:
        raise FormRefused(413, "too many fields")
    try:
        text = bytes(body).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except ValueError as error:  # not UTF-8, before or after percent-decoding; no '='
        raise FormRefused(400, "malformed form") from error
    form = dict(pairs)
    if len(form) != len(pairs):
        raise FormRefused(400, "a field was sent twice")
    sent = form.pop("csrf_token", "")
    if not hmac.compare_digest(sent.encode(), csrf.token(nonce).encode()):
        raise FormRefused(403, "wrong CSRF token")
    return form
