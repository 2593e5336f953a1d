"""Which WebSocket handshakes get the cookie's session: those whose ``Origin`` is the
handshake's own or one the app allows. Browsers send the cookie with a handshake any site
starts, so any other origin could ride on the user's session (cross-site WebSocket
hijacking); `SessionMiddleware` gives those a new anonymous
session instead.
"""

from __future__ import annotations

from collections.abc import Collection, MutableMapping
from typing import Any
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def allowed_origins(texts: Collection[str]) -> frozenset[Origin]:
    """The ``websocket_origins`` a middleware was given, checked: ValueError for anything
    that is not ``scheme://host[:port]``, TypeError for a lone string."""
    if isinstance(texts, str):  # a lone string would be taken letter by letter
        raise TypeError("websocket_origins must be a collection of origins, not a string")
    return frozenset(_allowed_origin(text) for text in texts)


def refused_origin(scope: MutableMapping[str, Any], allowed: frozenset[Origin]) -> str | None:
    """Why a WebSocket handshake's ``Origin`` is refused (the event's detail), or None
    if it is the handshake's own origin or an allowed one."""
    given = [value for key, value in scope["headers"] if key.lower() == b"origin"]
    if len(given) != 1:
        return f"{len(given)} Origin headers" if given else "no Origin header"
    text = given[0].decode("latin-1")
    origin = _origin_of(text)
    if origin is not None and (origin in allowed or origin == _own(scope)):
        return None
    return f"Origin {text[:100]!r} not allowed"  # cut: the header is the client's to fill


def _origin_of(text: str) -> Origin | None:
    """``scheme://host[:port]`` as (scheme, host, port), or None for anything else (``null``,
    a path, credentials, another scheme)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS[parts.scheme]


def _own(scope: MutableMapping[str, Any]) -> Origin | None:
    """The origin a WebSocket handshake was made to: ``https`` for ``wss``, ``http`` for
    ``ws``, and the ``Host`` it was sent to."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    hosts = [value for key, value in scope["headers"] if key.lower() == b"host"]
    return _origin_of(f"{scheme}://{hosts[0].decode('latin-1')}") if len(hosts) == 1 else None


def _allowed_origin(text: str) -> Origin:
    origin = _origin_of(text) if isinstance(text, str) else None
    if origin is None:
        raise ValueError(
            f"websocket_origins takes origins like 'https://app.example:8443', not {text!r}"
        )
    return origin
