"""Lifecycle events the application can observe, to count, rate-limit or alert.

No event carries a cookie value or an id hash.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["EventHook", "EventKind", "RevokeScope", "SessionEvent"]

logger = logging.getLogger("typed_session_sql")


class EventKind(enum.StrEnum):
    """What happened. Each member says which of `SessionEvent`'s fields it fills."""

    CREATED = "created"
    """A new session was stored."""
    LOADED = "loaded"
    """A cookie named a live session, and it loaded."""
    RENEWED = "renewed"
    """A renewal moved a session's expiry later (a touch)."""
    ROTATED = "rotated"
    """A session moved to a fresh id (``regenerate`` or ``sign_in``)."""
    DELETED = "deleted"
    """A session was deleted (sign-out)."""
    DELETE_MISSED = "delete_missed"
    """A sign-out found no row to delete: another request had deleted it, purge had removed
    it, or a concurrent sign-in or ``regenerate`` had moved it to a new id, under which it
    lives on. The save returns ``DeleteCookie(removed=False)``."""
    EXPIRED = "expired"
    """A cookie named a session whose expiry had passed (purged or not)."""
    MALFORMED_COOKIE = "malformed_cookie"
    """A cookie value that no id of this library can have; no backend call was made."""
    UNKNOWN_ID = "unknown_id"
    """A well-formed cookie named no stored session."""
    CONFLICT = "conflict"
    """A save met a concurrent write. ``retries`` is how many replays of ``modify``
    functions it took; ``detail`` is "replayed" (the save then succeeded), "raised"
    (`SessionConflictError`) or "deleted" (`SessionDeletedError`)."""
    UNDECODABLE = "undecodable"
    """A stored session no longer decodes into the data type (or its row cannot be read);
    it loads as None (``on_undecodable="drop"``). ``detail`` names the problem."""
    DATA_RESET = "data_reset"
    """A stored session no longer decoded; under ``on_undecodable="reset_data"`` it kept
    its id and sign-in and its data started afresh. ``detail`` names the problem."""
    DUPLICATE_COOKIE = "duplicate_cookie"
    """The request carried the session cookie twice (a cookie-tossing sign); no session used."""
    FOREIGN_ORIGIN = "foreign_origin"
    """A WebSocket handshake carried the session cookie from an ``Origin`` that is neither
    the app's own nor allowed (``websocket_origins``): the handler got a new anonymous
    session instead (cross-site WebSocket hijacking). ``detail`` quotes the Origin."""
    REVOKED = "revoked"
    """Sessions of a principal were revoked: ``count`` of them; ``scope`` is "one", "all"
    or "others" (all but the current one)."""
    PURGED = "purged"
    """A purge batch removed ``count`` expired rows."""
    PURGE_FINISHED = "purge_finished"
    """A purge pass ended: ``count`` rows in total; ``detail`` gives batches and duration."""
    PURGE_SKIPPED = "purge_skipped"
    """A purge pass did nothing: another purger (another instance) holds the purge lock."""
    PURGE_FAILED = "purge_failed"
    """A purge pass failed after ``count`` rows; ``detail`` names the error (no secrets)."""
    STORE_UNAVAILABLE = "store_unavailable"
    """A store operation failed because the backend did (down, refusing, failing); ``detail``
    names the error and its cause's first line (no parameters, ids or passwords)."""
    TABLE_MISSING = "table_missing"
    """A store operation found no session table: the database was never migrated."""
    CSRF_FAILED = "csrf_failed"
    """A request with an unsafe method failed the CSRF check and got a 403; ``detail`` says
    why (sent from another site, no cookie, a cookie of another session, no token, a wrong
    token)."""


_LEVELS = {
    EventKind.MALFORMED_COOKIE: logging.INFO,
    EventKind.UNKNOWN_ID: logging.INFO,
    EventKind.DUPLICATE_COOKIE: logging.WARNING,
    EventKind.FOREIGN_ORIGIN: logging.WARNING,
    EventKind.CONFLICT: logging.INFO,
    EventKind.DELETE_MISSED: logging.INFO,
    EventKind.REVOKED: logging.INFO,
    EventKind.UNDECODABLE: logging.WARNING,
    EventKind.DATA_RESET: logging.WARNING,
    EventKind.PURGE_FINISHED: logging.INFO,
    EventKind.PURGE_FAILED: logging.INFO,  # the caller gets the error; the scheduler warns
    EventKind.STORE_UNAVAILABLE: logging.WARNING,
    EventKind.TABLE_MISSING: logging.ERROR,
    EventKind.CSRF_FAILED: logging.INFO,  # expired forms, mostly; the hook counts attacks
}


RevokeScope = Literal["one", "all", "others"]


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """One thing that happened to a session, for counting, alerting or rate-limiting.

    Never carries a cookie value, an id hash or session data. Metrics read the typed
    fields; ``detail`` is for people.
    """

    kind: EventKind
    detail: str = ""
    """Human-readable context (an error's type and first line, a reason)."""
    count: int = 1
    """How many sessions or rows it concerns (revocations and purges; 1 otherwise)."""
    retries: int | None = None
    """``conflict``: how many times the save replayed ``modify`` functions."""
    scope: RevokeScope | None = None
    """``revoked``: one session, all of a principal's, or all but the current one."""


EventHook = Callable[[SessionEvent], None]


def emit(
    hook: EventHook | None,
    kind: EventKind,
    detail: str = "",
    count: int = 1,
    *,
    retries: int | None = None,
    scope: RevokeScope | None = None,
) -> None:
    """Log the event on ``typed_session_sql`` and pass it to the application's hook.

    A failing hook is logged and swallowed: observing sessions must never break a request.
    """
    level = _LEVELS.get(kind, logging.DEBUG)
    if logger.isEnabledFor(level):  # every load emits: format nothing nobody reads
        retried = "" if retries is None else f" (retries={retries})"
        logger.log(level, "session %s%s%s", kind.value, f": {detail}" if detail else "", retried)
    if hook is not None:
        try:
            hook(SessionEvent(kind, detail, count, retries, scope))
        except Exception:
            logger.exception("session event hook failed on %s", kind.value)
