"""What `SessionStore.save` tells the caller to do with the cookie: a command."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SetCookie:
    """Send the session cookie with this value.

    ``value_changed`` is False when only the expiry moved (a renewal or an expiry change of a
    loaded session): the value is the one the client already holds, so send it again only if
    the cookie is persistent and its Max-Age must follow the new expiry.
    """

    value: str = field(repr=False)
    expires_at: datetime | None
    value_changed: bool = True

    def __str__(self) -> str:
        return repr(self)


@dataclass(frozen=True, slots=True)
class DeleteCookie:
    """Remove the session cookie from the client."""

    removed: bool = True
    """Whether the save deleted the stored session. False: there was no row to delete any
    more: another request had deleted it, purge had removed it, or a concurrent sign-in or
    ``regenerate`` had moved it to a new id, under which it lives on (a ``delete_missed``
    event says so)."""


@dataclass(frozen=True, slots=True)
class DoNothing:
    """Leave the cookie as it is: nothing about it changed."""


CookieCommand = SetCookie | DeleteCookie | DoNothing
"""What `SessionStore.save` returns: one of the three commands."""
