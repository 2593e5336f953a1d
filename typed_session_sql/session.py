"""One session: its typed data and everything the store needs to save it correctly.

A session is in one of six states (the Rust crate's): new-unchanged, new-changed,
unchanged, changed, deleted, new-deleted. Unchanged sessions cost no write. A change is
detected however it was made, by comparing the encoded data with what was loaded, so an
in-place mutation of nested data (``session.data.items.append(4)``) counts too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from typed_session_sql.backend import MAX_PRINCIPAL_LENGTH
from typed_session_sql.codec import Codec
from typed_session_sql.errors import SessionError
from typed_session_sql.expiry import ExpiryPolicy

T = TypeVar("T")


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; naive datetimes are refused, never guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got naive {moment!r}")
    return moment.astimezone(UTC)


class Session(Generic[T]):
    """A session's typed data plus its lifecycle. Made by :class:`SessionStore`, not directly."""

    __slots__ = (
        "_assigned",
        "_authenticated_at",
        "_clock",
        "_codec",
        "_cookie_value",
        "_created_at",
        "_data",
        "_deleted",
        "_expires_at",
        "_expiry_set",
        "_id_hash",
        "_last_modified",
        "_modifiers",
        "_policy",
        "_principal",
        "_renewal",
        "_replayable",
        "_rotate",
        "_signing_in",
        "_snapshot",
        "_version",
    )

    def __init__(
        self,
        *,
        data: T,
        snapshot: bytes,
        codec: Codec[T],
        clock: Callable[[], datetime],
        policy: ExpiryPolicy,
        created_at: datetime,
        expires_at: datetime | None,
        cookie_value: str | None = None,
        id_hash: bytes | None = None,
        version: int | None = None,
        assigned: bool = False,
        renewal: datetime | None = None,
        principal: str | None = None,
        authenticated_at: datetime | None = None,
    ) -> None:
        self._data = data
        self._snapshot = snapshot
        self._codec = codec
        self._clock = clock
        self._policy = policy
        self._created_at = created_at
        self._expires_at = expires_at
        self._cookie_value = cookie_value
        self._id_hash = id_hash
        self._version = version
        self._assigned = assigned
        self._renewal = renewal
        self._principal = principal
        self._authenticated_at = authenticated_at
        self._signing_in = False
        self._deleted = False
        self._rotate = False
        self._expiry_set = False
        self._modifiers: list[Callable[[T], T | None]] = []
        self._last_modified: bytes | None = None
        self._replayable = True

    # -- data ---------------------------------------------------------------------------

    @property
    def data(self) -> T:
        """The session's data. Mutate it in place or assign a new value: both are saved."""
        return self._data

    @data.setter
    def data(self, value: T) -> None:
        self._check_alive()
        self._data = value
        self._assigned = True
        self._replayable = False

    def modify(self, fn: Callable[[T], T | None]) -> None:
        """Apply ``fn`` to the data (it returns new data, or None after mutating in place).

        If every change of a session goes through ``modify``, a save that meets a concurrent
        write reloads the stored data, replays the functions in order and tries again,
        instead of raising :class:`SessionConflictError`. ``fn`` may therefore run more than
        once, on fresh data each time: keep it free of other side effects.
        """
        self._check_alive()
        before = self._codec.encode(self._data)
        if before != (self._last_modified if self._last_modified is not None else self._snapshot):
            self._replayable = False  # something changed the data outside modify()
        self._apply(fn)
        self._modifiers.append(fn)
        self._last_modified = self._codec.encode(self._data)

    def _apply(self, fn: Callable[[T], T | None]) -> None:
        result = fn(self._data)
        if result is not None:
            self._data = result

    # -- state --------------------------------------------------------------------------

    @property
    def is_new(self) -> bool:
        """Not stored yet (it may never be, if its data never changes)."""
        return self._id_hash is None

    @property
    def is_changed(self) -> bool:
        """Whether a save will write: changed data, and for a stored session also a pending
        rotation or an explicit expiry change; and a pending :meth:`sign_in`, new or stored.
        A renewal alone does not count."""
        if self._deleted:
            return False
        if self._signing_in or self._assigned or self._codec.encode(self._data) != self._snapshot:
            return True
        return not self.is_new and (self._rotate or self._expiry_set)

    @property
    def is_deleted(self) -> bool:
        return self._deleted

    @property
    def created_at(self) -> datetime:
        """When the session began; the absolute timeout counts from here."""
        return self._created_at

    @property
    def expires_at(self) -> datetime | None:
        """When the session expires (aware UTC), or None if it never does."""
        return self._expires_at

    @property
    def version(self) -> int | None:
        """The stored version this session was loaded at or last saved as; None while new."""
        return self._version

    # -- authentication -----------------------------------------------------------------

    @property
    def principal(self) -> str | None:
        """Who signed in on this session (set only by :meth:`sign_in`, never inferred from the
        data); None for an anonymous session."""
        return self._principal

    @property
    def authenticated_at(self) -> datetime | None:
        """When :meth:`sign_in` last ran on this session (aware UTC); None if it never did."""
        return self._authenticated_at

    @property
    def handle(self) -> str | None:
        """A name for the stored session in listing and revocation UIs; None while new.

        It is the hex of the stored id hash, so it names the row without being its key's
        secret: presented as a cookie it matches nothing (the store hashes what it is
        given). It changes when the id rotates (on :meth:`sign_in`, :meth:`regenerate`).
        """
        return None if self._id_hash is None else self._id_hash.hex()

    def sign_in(self, principal: str) -> None:
        """Record that ``principal`` (a user id, not a secret) authenticated on this session.

        Sets :attr:`principal` and :attr:`authenticated_at` (now) and regenerates the id,
        so an id planted before sign-in (session fixation) is dead after it. The session is
        written on save even if its data is untouched, a new one included. The data is left
        as it is: clear it first if nothing of the anonymous session should carry over.
        """
        self._check_alive()
        if not isinstance(principal, str) or not principal:
            raise ValueError("principal must be a non-empty string")
        if len(principal) > MAX_PRINCIPAL_LENGTH:
            raise ValueError(f"principal is longer than {MAX_PRINCIPAL_LENGTH} characters")
        self._principal = principal
        self._authenticated_at = self._clock()
        self._signing_in = True
        self.regenerate()

    def authenticated_within(self, max_age: timedelta) -> bool:
        """Whether someone signed in on this session at most ``max_age`` ago, by the store's
        clock: ask it before a sensitive action, and make the user sign in again if not."""
        if self._principal is None or self._authenticated_at is None:
            return False
        return self._clock() - self._authenticated_at <= max_age

    # -- lifecycle ----------------------------------------------------------------------

    def regenerate(self) -> None:
        """Give the session a new id when it is next saved; the old id is dead at once then.

        Data and ``created_at`` carry over. Call it on sign-in and on any privilege change,
        so an id planted before sign-in (session fixation) is worth nothing after it.
        """
        self._check_alive()
        if not self.is_new:
            self._rotate = True

    def delete(self) -> None:
        """Delete the session on save (sign-out). Final: the session cannot be changed after."""
        self._deleted = True

    def expire_in(self, duration: timedelta) -> None:
        """Expire ``duration`` from now (never past the policy's absolute bound)."""
        self.set_expiry(self._clock() + duration)

    def set_expiry(self, moment: datetime) -> None:
        """Expire at ``moment`` (aware), capped at the policy's absolute bound."""
        self._check_alive()
        self._set_expiry(as_utc(moment))

    def do_not_expire(self) -> None:
        """No expiry of its own: the session then lasts until the policy's absolute bound,
        or for ever under a policy without one."""
        self._check_alive()
        self._set_expiry(None)

    def _set_expiry(self, moment: datetime | None) -> None:
        cap = None if self._policy.absolute is None else self._created_at + self._policy.absolute
        if cap is not None and (moment is None or moment > cap):
            moment = cap
        self._expires_at = moment
        self._expiry_set = True
        self._renewal = None

    def _check_alive(self) -> None:
        if self._deleted:
            raise SessionError("the session was deleted; it cannot be changed any more")

    def __repr__(self) -> str:
        state = ("new-" if self.is_new else "") + (
            "deleted" if self._deleted else "changed" if self.is_changed else "unchanged"
        )
        signed_in = self._principal is not None
        return (
            f"<Session {state} version={self._version} expires_at={self._expires_at}"
            f" signed_in={signed_in}>"
        )

    __str__ = __repr__
