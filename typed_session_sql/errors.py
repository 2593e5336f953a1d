"""The exceptions the library raises. Every one derives from `SessionError`."""

from __future__ import annotations


class SessionError(Exception):
    """Base class of every error this library raises."""


class SessionConflictError(SessionError):
    """A save lost a race: the stored session changed after it was loaded.

    Raised when a concurrent request wrote the same session first and this session's
    changes could not be replayed (they were not all made through ``Session.modify``, or
    the replay bound was exhausted). Nothing of this save was written.
    """


class SessionDeletedError(SessionConflictError):
    """A save found its session gone: another request deleted it (sign-out, revocation),
    moved it to a new id (a sign-in or ``regenerate`` that won the race), or it expired.

    A deleted session is never brought back by a save; nothing was written. Leave the
    client's cookie alone: the browser may already hold the winner's newer id, and the old
    one names nothing any more.
    """


class IdCollisionError(SessionError):
    """A fresh session id collided with an existing one more often than allowed."""


class SessionTooLargeError(SessionError):
    """The encoded session data exceeds ``max_data_bytes``; nothing was written."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"encoded session data is {size} bytes, the limit is {limit}")
        self.size = size
        self.limit = limit


class StoreUnavailableError(SessionError):
    """The backend could not be reached or failed; the cause is chained.

    Nothing was written partially: every backend operation is a single atomic statement.
    """


class SessionTableMissingError(StoreUnavailableError):
    """The session table does not exist: the database was never migrated.

    Not transient, unlike other `StoreUnavailableError`: it lasts until someone runs
    ``typed-session-sql migrate upgrade head`` (or ``await backend.migrate()``).
    """


class MigrationError(SessionError):
    """A migration of the session table cannot run as asked, and running it again will not
    help: an unknown revision, or a version record that disagrees with the database (the
    table exists but no record of this library's says so, as when the application's own
    Alembic history manages it; or the record names a table that is gone). The message
    says which, and what to do. Not an outage: the database answered.
    """


class DataRejectedError(SessionError):
    """The database refused a statement for the values in it (SQLSTATE class 22, or the
    driver's equivalent): a value it cannot store, not an outage. Nothing was written."""


class EventLoopError(SessionError, RuntimeError):
    """The backend was used from an event loop its engine's connections do not belong to,
    and it could not open connections of that loop's own: the engine is the application's
    (see `SqlBackend`). Nothing was sent."""


def describe_error(error: BaseException) -> str:
    """The error's type and the first line of its message (and of its cause's), short.

    SQLAlchemy and the drivers put the statement and its parameters on later lines; first
    lines name the failure without them, so this is safe to log.
    """
    text = f"{type(error).__name__}: {_first_line(error)}"
    cause = error.__cause__
    if cause is not None:
        described = f"{type(cause).__name__}: {_first_line(cause)}"
        if described not in text:  # the library's own errors already name their cause
            text += f" ({described})"
    return text


def _first_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return lines[0][:200] if lines else ""
