"""Accepting a POSTed form safely: a capped body, counted fields, every value a string.

The CSRF check is not here: ``SessionMiddleware(..., csrf=...)`` made it before the app ran,
against the session (``typed_session_sql.csrf``). What is left is the form itself, and
the order of the checks is the point: a request that cannot pass (not a form, declared too
large) is refused before a byte of its body is read.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

MAX_FORM_BYTES = 2048
"""The largest form body accepted: the demo's forms are a few short fields."""
MAX_FORM_FIELDS = 4
"""The most fields a form may have (a name or a product and a quantity, and the token)."""


class FormRefused(Exception):
    """The request's form is not accepted; ``status`` says why (400, 413, 415)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_form(request: Request) -> dict[str, str]:
    """The POSTed form, without its ``csrf_token`` field; else `FormRefused`."""
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
    form.pop("csrf_token", None)  # checked by the middleware already
    return form
