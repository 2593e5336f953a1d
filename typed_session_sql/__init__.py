"""Async, typed, server-side sessions stored in SQL."""

from typed_session_sql.backend import Backend, Record, UpdateOutcome
from typed_session_sql.backends.memory import MemoryBackend
from typed_session_sql.backends.sql import SqlBackend
from typed_session_sql.codec import Codec, MsgspecCodec, PydanticCodec
from typed_session_sql.commands import DeleteCookie, DoNothing, SaveResult, SetCookie
from typed_session_sql.errors import (
    IdCollisionError,
    SessionConflictError,
    SessionDeletedError,
    SessionError,
    SessionTooLargeError,
    StoreUnavailableError,
)
from typed_session_sql.events import EventKind, SessionEvent
from typed_session_sql.expiry import ExpiryPolicy
from typed_session_sql.purge import PurgeResult
from typed_session_sql.scheduler import PurgeScheduler
from typed_session_sql.session import Session
from typed_session_sql.store import SessionInfo, SessionStore

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Codec",
    "DeleteCookie",
    "DoNothing",
    "EventKind",
    "ExpiryPolicy",
    "IdCollisionError",
    "MemoryBackend",
    "MsgspecCodec",
    "PurgeResult",
    "PurgeScheduler",
    "PydanticCodec",
    "Record",
    "SaveResult",
    "Session",
    "SessionConflictError",
    "SessionDeletedError",
    "SessionError",
    "SessionEvent",
    "SessionInfo",
    "SessionStore",
    "SessionTooLargeError",
    "SetCookie",
    "SqlBackend",
    "StoreUnavailableError",
    "UpdateOutcome",
]
