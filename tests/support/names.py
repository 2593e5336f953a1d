"""Names for what a test creates on a shared server (tables, databases, roles)."""

from __future__ import annotations

import secrets


def unique_name(prefix: str = "t") -> str:
    """A name no other test or run will pick (48 random bits), so runs can share a server."""
    return f"{prefix}_{secrets.token_hex(6)}"
