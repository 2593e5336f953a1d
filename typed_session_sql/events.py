"""Lifecycle events the application can observe, to count, rate-limit or alert.

No event carries a cookie value or an id hash.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("typed_session_sql")


class EventKind(enum.StrEnum):
    CREATED = "created"
    LOADED = "loaded"
    RENEWED = "renewed"
    ROTATED = "rotated"
    DELETED = "deleted"
    EXPIRED = "expired"
    """A cookie named a session whose expiry had passed (purged or not)."""
    MALFORMED_COOKIE = "malformed_cookie"
    UNKNOWN_ID = "unknown_id"
    CONFLICT = "conflict"
    """A save met a concurrent write; ``detail`` says whether it was replayed or raised."""
    UNDECODABLE = "undecodable"
    """A stored session no longer decodes into the data type; it loads as None."""
    DUPLICATE_COOKIE = "duplicate_cookie"
    """The request carried the session cookie twice (a cookie-tossing sign); no session used."""
    REVOKED = "revoked"
    """Sessions of a principal were revoked: ``count`` of them; ``detail`` is "one", "all"
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


_LEVELS = {
    EventKind.MALFORMED_COOKIE: logging.INFO,
    EventKind.UNKNOWN_ID: logging.INFO,
    EventKind.DUPLICATE_COOKIE: logging.WARNING,
    EventKind.CONFLICT: logging.INFO,
    EventKind.REVOKED: logging.INFO,
    EventKind.UNDECODABLE: logging.WARNING,
    EventKind.PURGE_FINISHED: logging.INFO,
    EventKind.PURGE_FAILED: logging.INFO,  # the caller gets the error; the scheduler warns
    EventKind.STORE_UNAVAILABLE: logging.WARNING,
    EventKind.TABLE_MISSING: logging.ERROR,
}


@dataclass(frozen=True, slots=True)
class SessionEvent:
    kind: EventKind
    detail: str = ""
    count: int = 1


EventHook = Callable[[SessionEvent], None]


def emit(hook: EventHook | None, kind: EventKind, detail: str = "", count: int = 1) -> None:
    """Log the event on ``typed_session_sql`` and pass it to the application's hook.

    A failing hook is logged and swallowed: observing sessions must never break a request.
    """
    level = _LEVELS.get(kind, logging.DEBUG)
    if logger.isEnabledFor(level):  # every load emits: format nothing nobody reads
        logger.log(level, "session %s%s", kind.value, f": {detail}" if detail else "")
    if hook is not None:
        try:
            hook(SessionEvent(kind, detail, count))
        except Exception:
            logger.exception("session event hook failed on %s", kind.value)
