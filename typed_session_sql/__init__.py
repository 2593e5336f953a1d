"""Async, typed, server-side sessions stored in SQL.

The top level holds what an application writes day to day: the store and its sessions, the
backends it constructs, the expiry policy, what a save returns, the errors it catches, the
events it receives and the purge scheduler. A custom backend imports from
`typed_session_sql.backend`, a custom codec from `typed_session_sql.codec`.
"""

from __future__ import annotations

import importlib
import warnings

from typed_session_sql.backends.memory import MemoryBackend
from typed_session_sql.backends.sql import SqlBackend
from typed_session_sql.codec import Codec, EncodeError
from typed_session_sql.cookie_commands import (
    CookieCommand,
    DeleteCookie,
    DoNothing,
    SetCookie,
)
from typed_session_sql.errors import (
    DataRejectedError,
    EventLoopError,
    IdCollisionError,
    SessionConflictError,
    SessionDeletedError,
    SessionError,
    SessionTableMissingError,
    SessionTooLargeError,
    StoreUnavailableError,
)
from typed_session_sql.events import EventHook, EventKind, SessionEvent
from typed_session_sql.expiry import ExpiryPolicy
from typed_session_sql.purge import PurgeResult
from typed_session_sql.scheduler import PurgeScheduler
from typed_session_sql.session import Session, SessionState
from typed_session_sql.store import SessionInfo, SessionStore

__version__ = "0.1.0"

__all__ = [
    "Codec",
    "CookieCommand",
    "DataRejectedError",
    "DeleteCookie",
    "DoNothing",
    "EncodeError",
    "EventHook",
    "EventKind",
    "EventLoopError",
    "ExpiryPolicy",
    "IdCollisionError",
    "MemoryBackend",
    "PurgeResult",
    "PurgeScheduler",
    "Session",
    "SessionConflictError",
    "SessionDeletedError",
    "SessionError",
    "SessionEvent",
    "SessionInfo",
    "SessionState",
    "SessionStore",
    "SessionTableMissingError",
    "SessionTooLargeError",
    "SetCookie",
    "SqlBackend",
    "StoreUnavailableError",
]

# Names the top level exported before it kept to an application's daily vocabulary: each
# still imports from here, with a DeprecationWarning naming its home, so existing apps run.
_MOVED = {
    "MAX_PRINCIPAL_LENGTH": "typed_session_sql.backend",
    "Backend": "typed_session_sql.backend",
    "PrincipalRow": "typed_session_sql.backend",
    "Record": "typed_session_sql.backend",
    "SignIn": "typed_session_sql.backend",
    "UnreadableRecordError": "typed_session_sql.backend",
    "Update": "typed_session_sql.backend",
    "UpdateOutcome": "typed_session_sql.backend",
    "DecodeError": "typed_session_sql.codec",
    "MsgspecCodec": "typed_session_sql.codec",
    "PydanticCodec": "typed_session_sql.codec",
    "RevokeScope": "typed_session_sql.events",
    "BatchHook": "typed_session_sql.purge",
    "PurgeProgress": "typed_session_sql.purge",
    "OnUndecodable": "typed_session_sql.store",
}


def __getattr__(name: str) -> object:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"typed_session_sql.{name} moved: import it from {home}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(home), name)
