"""Security headers on every response of the demo, as a pure ASGI middleware.

- ``Content-Security-Policy``: nothing but the page's own stylesheet (allowed by its hash)
  and the empty icon; no script at all, forms post only to this site, no framing.
- ``X-Frame-Options: DENY`` for browsers that predate ``frame-ancestors``.
- ``Referrer-Policy: same-origin``: no URL of this site leaks to another.
- ``X-Content-Type-Options: nosniff``.
- ``Cache-Control: no-store``: every page shows session data or carries a CSRF token, so
  no cache, shared or not, may keep one. A response that sets it itself keeps its own.
"""

from __future__ import annotations

from typing import Any

from typed_session_sql.demo.pages import STYLE_HASH

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{STYLE_HASH}'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds `HEADERS` to every HTTP response that does not set them itself."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                headers += [(key, value) for key, value in HEADERS if key not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
