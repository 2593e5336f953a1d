"""The session cookie: its settings, checked when made; its ``Set-Cookie`` headers; finding
it in a request's raw ``Cookie`` headers.

No framework's cookie parser is used: they percent-decode, trim Unicode spaces or keep the
last of two cookies of one name, each of which has let an attacker shadow a cookie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["MAX_NAME_LENGTH", "CookieSettings", "Headers"]

Headers = list[tuple[bytes, bytes]]

MAX_NAME_LENGTH = 64
"""The longest cookie name accepted. Browsers cap name plus value near 4,096 bytes; a
session cookie's name has no reason to take much of that."""

# RFC 6265 cookie-name is an RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Path and Domain attribute values: printable ASCII without ';'.
_ATTRIBUTE_VALUE = re.compile(r"[\x20-\x3a\x3c-\x7e]+")


@dataclass(frozen=True, slots=True)
class CookieSettings:
    """How the session cookie is named and sent. Checked when made: settings that a browser
    would refuse, or that weaken the cookie's prefix, raise ValueError."""

    name: str = "__Host-id"
    """The cookie's name. Generic on purpose: it does not name the library. The ``__Host-``
    prefix makes browsers insist on Secure, Path=/ and no Domain, so a sibling subdomain
    cannot plant ("toss") a session cookie for this host. At most 64 characters."""

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
            raise ValueError(f"CookieSettings.name {self.name[:80]!r} is not a valid cookie name")
        if len(self.name) > MAX_NAME_LENGTH:
            raise ValueError(
                f"CookieSettings.name is {len(self.name)} characters long; "
                f"the limit is {MAX_NAME_LENGTH}"
            )
        if self.same_site not in ("lax", "strict", "none"):
            raise ValueError(
                f"CookieSettings.same_site must be lax, strict or none, not {self.same_site!r}"
            )
        if not self.path.startswith("/") or not _ATTRIBUTE_VALUE.fullmatch(self.path):
            raise ValueError(f"CookieSettings.path must be an absolute URL path, not {self.path!r}")
        if self.domain is not None and not _ATTRIBUTE_VALUE.fullmatch(self.domain):
            raise ValueError(f"CookieSettings.domain {self.domain!r} is not a valid domain")
        # Browsers match the prefixes case-insensitively: "__HOST-id" gets the __Host- rules
        # too, and a cookie that breaks them is dropped without a word.
        folded = self.name.lower()
        if folded.startswith(("__host-", "__secure-")) and not self.secure:
            raise ValueError(f"a cookie named {self.name!r} needs secure=True")
        if folded.startswith("__host-") and (self.domain is not None or self.path != "/"):
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
