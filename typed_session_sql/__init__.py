"""Async, typed, server-side sessions stored in SQL.

Everything an application, a custom backend or a custom codec needs is importable from
here: every type the ``Backend`` protocol and the ``Codec`` protocol mention included.
"""

from typed_session_sql.backend import (
    MAX_PRINCIPAL_LENGTH,
    Backend,
    PrincipalRow,
    Record,
    SignIn,
    UnreadableRecordError,
    Update,
    UpdateOutcome,
)
from typed_session_sql.backends.memory import MemoryBackend
from typed_session_sql.backends.sql import SqlBackend
from typed_session_sql.codec import Codec, DecodeError, EncodeError, MsgspecCodec, PydanticCodec
from typed_session_sql.commands import (
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
from typed_session_sql.events import EventHook, EventKind, RevokeScope, SessionEvent
from typed_session_sql.expiry import ExpiryPolicy
from typed_session_sql.purge import BatchHook, PurgeProgress, PurgeResult
from typed_session_sql.scheduler import PurgeScheduler
from typed_session_sql.session import Session, SessionState
from typed_session_sql.store import OnUndecodable, SessionInfo, SessionStore

__version__ = "0.1.0"

__all__ = [
    "MAX_PRINCIPAL_LENGTH",
    "Backend",
    "BatchHook",
    "Codec",
    "CookieCommand",
    "DataRejectedError",
    "DecodeError",
    "DeleteCookie",
    "DoNothing",
    "EncodeError",
    "EventHook",
    "EventKind",
    "EventLoopError",
    "ExpiryPolicy",
    "IdCollisionError",
    "MemoryBackend",
    "MsgspecCodec",
    "OnUndecodable",
    "PrincipalRow",
    "PurgeProgress",
    "PurgeResult",
    "PurgeScheduler",
    "PydanticCodec",
    "Record",
    "RevokeScope",
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
    "SignIn",
    "SqlBackend",
    "StoreUnavailableError",
    "UnreadableRecordError",
    "Update",
    "UpdateOutcome",
]
