"""The exceptions the library raises. Every one derives from :class:`SessionError`."""

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
    """A save found its session gone: another request deleted it (logout) or it expired.

    A deleted session is never brought back by a save; nothing was written. Clear the
    client's cookie.
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
