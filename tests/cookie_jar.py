"""A browser's cookie jar over an httpx client, for tests that need several browsers at once."""

from __future__ import annotations

from typing import Any

import httpx


class CookieJar:
    """Sends the cookies it holds and applies each ``Set-Cookie`` in arrival order, the way
    a browser does (httpx's own jar is shared by every request of one client)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}

    def check(self, header: str) -> None:
        """Called with every ``Set-Cookie`` received: a subclass asserts what they share."""

    async def go(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        sent = dict(headers or {})
        if self.cookies:
            sent["cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        response = await self.client.request(method, path, headers=sent, **kwargs)
        self.client.cookies.clear()
        for header in response.headers.get_list("set-cookie"):
            self.check(header)
            name, _, value = header.split(";")[0].partition("=")
            if "Max-Age=0" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response
