"""Session ids: how they are drawn, recognised, and hashed before they reach storage.

The cookie value is 32 bytes from `secrets` (256 bits) as unpadded URL-safe base64:
43 characters. It means nothing (no time, counter or user in it). Storage only ever sees
its blake3 hash, keyed with the application's secret when one is given, so a database dump
holds no usable id, and a stored hash presented as a cookie matches nothing.
"""

from __future__ import annotations

import re
import secrets

from blake3 import blake3

ID_BYTES = 32
COOKIE_VALUE_LENGTH = 43  # len(base64url(32 bytes)) without padding
HASH_BYTES = 32

# 42 free characters, then one that carries only the last 4 bits (its low 2 bits are zero
# in canonical base64): accepting only canonical values keeps one id to one spelling.
_WELL_FORMED = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
_KEY_CONTEXT = "typed-session-sql 2026-11 session id hashing key"


def new_cookie_value() -> str:
    """Draw a fresh session id from the operating system's CSPRNG."""
    return secrets.token_urlsafe(ID_BYTES)


def is_well_formed(value: str) -> bool:
    """Whether ``value`` could be an id this library issued: length and alphabet only."""
    return len(value) == COOKIE_VALUE_LENGTH and _WELL_FORMED.fullmatch(value) is not None


class IdHasher:
    """blake3 of the cookie value, optionally keyed by a secret kept outside the database."""

    __slots__ = ("_key",)

    def __init__(self, secret_key: bytes | None = None) -> None:
        if secret_key is None:
            self._key: bytes | None = None
            return
        if not isinstance(secret_key, bytes) or len(secret_key) < 16:
            raise ValueError(
                "secret_key must be bytes of at least 16 bytes (32 random bytes advised)"
            )
        # A derived key lets the secret have any length and never reuses it raw.
        self._key = blake3(secret_key, derive_key_context=_KEY_CONTEXT).digest()

    def __call__(self, cookie_value: str) -> bytes:
        data = cookie_value.encode("ascii")
        hasher = blake3(data) if self._key is None else blake3(data, key=self._key)
        return hasher.digest()

    def __repr__(self) -> str:
        return f"IdHasher(keyed={self._key is not None})"
