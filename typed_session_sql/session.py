"""One session: its typed data, its state, and what the store must write to save it.

A session is in one of six states (the Rust crate's), `SessionState`: new-unchanged,
new-changed, unchanged, changed, deleted, new-deleted. The state alone decides what a save
writes (`Session._pending_write`, for the store only); unchanged sessions cost no write. A
data change is detected however it was made, by comparing the encoded data with what was
loaded, so an in-place mutation of nested data (``session.data.items.append(4)``) counts too.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from typed_session_sql.backend import (
    Record,
    SignIn,
    Update,
    check_principal,
    fast_constructor,
    make_record,
    make_update,
)
from typed_session_sql.codec import Codec, DecodeError
from typed_session_sql.errors import SessionError
from typed_session_sql.expiry import ExpiryPolicy, later_by

T = TypeVar("T")


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; naive datetimes are refused, never guessed."""
    if moment.tzinfo is UTC:  # the store's own clock's: nothing to convert (the common case)
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got naive {moment!r}")
    return moment.astimezone(UTC)


class SessionState(enum.Enum):
    """Where a session is in its life; what a save writes follows from it alone."""

    NEW_UNCHANGED = "new-unchanged"
    """Not stored, and nothing worth storing: a save writes nothing."""
    NEW_CHANGED = "new-changed"
    """Not stored, with data (or a sign-in) worth storing: a save inserts it."""
    UNCHANGED = "unchanged"
    """Stored and untouched: a save writes nothing, or renews the expiry (a touch)."""
    CHANGED = "changed"
    """Stored and changed (data, id, expiry or sign-in): a save updates it, conditionally on
    the version it was loaded at."""
    DELETED = "deleted"
    """Stored and deleted: a save deletes the row."""
    NEW_DELETED = "new-deleted"
    """Deleted with nothing (any more) stored: a save writes nothing."""


# Tuples, not sets: a plain Enum's hash is a Python method, and every load and save asks;
# a tuple finds a member by identity in C.
_NEW = (SessionState.NEW_UNCHANGED, SessionState.NEW_CHANGED, SessionState.NEW_DELETED)
_CHANGED = (SessionState.NEW_CHANGED, SessionState.CHANGED)


# -- what a save must write ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingCreate:
    """Insert this session as a new row (version 1) under a fresh id."""

    record: Record


@dataclass(frozen=True, slots=True)
class PendingUpdate:
    """Update the row conditionally on the version it was loaded at."""

    update: Update
    """The change; ``new_id_hash`` is left to the store, which draws fresh ids."""
    rotate: bool
    """Move the row to a fresh id in the same statement."""
    replayable: bool
    """Every data change went through ``modify``: after a lost race the store may reload
    the row and `Session._rebase` onto it instead of raising."""
    expiry_moved: bool
    """The expiry changed (explicitly or by renewal): the client's cookie must follow."""
    cookie_value: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PendingTouch:
    """Only a renewal is due: move the expiry later if the row is still at ``version``."""

    id_hash: bytes
    version: int
    expires_at: datetime
    cookie_value: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PendingDelete:
    """Delete the row (sign-out)."""

    id_hash: bytes


PendingWrite = PendingCreate | PendingUpdate | PendingTouch | PendingDelete | None
"""What the next save must write; None for nothing."""

# What every save makes, made fast (`fast_constructor`): the same objects.
_make_pending_create = fast_constructor(PendingCreate)
_make_pending_update = fast_constructor(PendingUpdate)
_make_pending_touch = fast_constructor(PendingTouch)


class Session(Generic[T]):
    """A session's typed data plus its lifecycle. Made by `SessionStore`, not directly.

    The methods under "the store's side" are how the store saves a session; an application
    never needs them.

    Examples:
        What a request handler does with its session, and what each save sends back:

        ```python
        import asyncio
        from dataclasses import dataclass, field

        from typed_session_sql import (
            DeleteCookie,
            DoNothing,
            MemoryBackend,
            SessionStore,
            SetCookie,
        )


        @dataclass
        class Cart:
            items: list[int] = field(default_factory=list)


        store = SessionStore(Cart, MemoryBackend())


        async def main() -> None:
            session = store.new()
            session.data.items.append(1)  # changes are seen, nested ones too
            assert session.is_new and session.is_changed
            cookie = await store.save(session)
            assert isinstance(cookie, SetCookie)

            session = await store.load(cookie.value)
            assert session is not None and session.data == Cart(items=[1])
            assert await store.save(session) == DoNothing()  # untouched: no statement

            session.modify(lambda cart: cart.items.append(2))  # replayed after a lost race
            session.sign_in("ada")  # a new id: the old cookie is dead after the save
            new_cookie = await store.save(session)
            assert isinstance(new_cookie, SetCookie)
            assert await store.load(cookie.value) is None

            session = await store.load(new_cookie.value)
            assert session is not None and session.principal == "ada"
            session.delete()  # sign-out
            assert await store.save(session) == DeleteCookie()


        asyncio.run(main())
        ```
    """

    __slots__ = (
        "_authenticated_at",
        "_clock",
        "_codec",
        "_cookie_value",
        "_created_at",
        "_data",
        "_expires_at",
        "_expiry_pinned",
        "_expiry_set",
        "_id_hash",
        "_known",
        "_modifiers",
        "_policy",
        "_principal",
        "_renewal",
        "_replayable",
        "_rotate",
        "_signing_in",
        "_snapshot",
        "_state",
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
        state: SessionState,
        cookie_value: str | None = None,
        id_hash: bytes | None = None,
        version: int | None = None,
        renewal: datetime | None = None,
        principal: str | None = None,
        authenticated_at: datetime | None = None,
        expiry_pinned: bool = False,
    ) -> None:
        if (state in _NEW) != (id_hash is None):
            raise ValueError(f"a {state.value} session {'has no' if id_hash else 'needs an'} id")
        self._state = state
        self._data = data
        self._snapshot = snapshot
        # The encoding of the data as the library last made it: what a change outside
        # modify() is detected against. It is the snapshot, except after a data reset.
        # A session loaded as CHANGED had its undecodable data reset: its fresh data is known.
        self._known = codec.encode(data) if state is SessionState.CHANGED else snapshot
        self._codec = codec
        self._clock = clock
        self._policy = policy
        self._created_at = created_at
        self._expires_at = expires_at
        self._cookie_value = cookie_value
        self._id_hash = id_hash
        self._version = version
        self._renewal = renewal
        self._principal = principal
        self._authenticated_at = authenticated_at
        self._signing_in = False
        self._rotate = False
        self._expiry_set = False
        self._expiry_pinned = expiry_pinned
        self._modifiers: list[Callable[[T], T | None]] = []
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
        self._replayable = False  # an assignment cannot be replayed on fresh data
        self._mark_changed()

    def modify(self, fn: Callable[[T], T | None]) -> None:
        """Apply ``fn`` to the data (it returns new data, or None after mutating in place).

        If every change of a session goes through ``modify``, a save that meets a concurrent
        write reloads the stored data, replays the functions in order and tries again,
        instead of raising `SessionConflictError`. ``fn`` may therefore run more than
        once, on fresh data each time: keep it free of other side effects.
        """
        self._check_alive()
        if not self._same_data(self._codec.encode(self._data), self._known):
            self._replayable = False  # something changed the data outside modify()
        self._apply(fn)
        self._modifiers.append(fn)
        self._known = self._codec.encode(self._data)

    def _apply(self, fn: Callable[[T], T | None]) -> None:
        result = fn(self._data)
        if result is not None:
            self._data = result

    def _same_data(self, encoded: bytes, reference: bytes) -> bool:
        """Whether the data, ``encoded`` now, is still what ``reference`` encodes.

        Equal bytes say so at once. Different bytes may still hold equal data when an
        encoding depends on more than the value (the order of a set's elements, of a
        dict's keys): then the values are compared. Unencodable or undecodable references
        (a reset row) are never the same.
        """
        if encoded == reference:
            return True
        try:
            return bool(self._codec.decode(reference) == self._data)
        except DecodeError:
            return False

    # -- state --------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The session's state now, counting in-place changes of its data."""
        return self._assess()[0]

    @property
    def is_new(self) -> bool:
        """Not stored (yet, or any more)."""
        return self._state in _NEW

    @property
    def is_changed(self) -> bool:
        """Whether a save will write more than a renewal: changed data, and for a stored
        session also a pending rotation or an explicit expiry change; and a pending
        `sign_in`, new or stored. A renewal alone does not count."""
        return self.state in _CHANGED

    @property
    def is_deleted(self) -> bool:
        return self._state in (SessionState.DELETED, SessionState.NEW_DELETED)

    @property
    def created_at(self) -> datetime:
        """When the session began; the absolute timeout counts from here."""
        return self._created_at

    @property
    def expires_at(self) -> datetime | None:
        """When the session expires (aware UTC), or None if it never does."""
        return self._expires_at

    @property
    def expiry_pinned(self) -> bool:
        """Whether the application set `expires_at` (`expire_in`,
        `set_expiry`, `do_not_expire`): then it is a cap that automatic renewal
        never extends, on this request or any later one, until the application sets another
        or calls `follow_policy`."""
        return self._expiry_pinned

    @property
    def version(self) -> int | None:
        """The stored version this session was loaded at or last saved as; None while new."""
        return self._version

    # -- authentication -----------------------------------------------------------------

    @property
    def principal(self) -> str | None:
        """Who signed in on this session (set only by `sign_in`, never inferred from the
        data); None for an anonymous session."""
        return self._principal

    @property
    def authenticated_at(self) -> datetime | None:
        """When `sign_in` last ran on this session (aware UTC); None if it never did."""
        return self._authenticated_at

    @property
    def handle(self) -> str | None:
        """A name for the stored session in listing and revocation UIs; None while new.

        It is the hex of the stored id hash, so it names the row without being its key's
        secret: presented as a cookie it matches nothing (the store hashes what it is
        given). It changes when the id rotates (on `sign_in`, `regenerate`).
        """
        return None if self._id_hash is None else self._id_hash.hex()

    def sign_in(self, principal: str) -> None:
        """Record that ``principal`` (a user id, not a secret) authenticated on this session.

        Sets `principal` and `authenticated_at` (now) and regenerates the id,
        so an id planted before sign-in (session fixation) is dead after it. The session is
        written on save even if its data is untouched, a new one included. The data is left
        as it is: clear it first if nothing of the anonymous session should carry over.

        Raises TypeError for a non-string, ValueError for a principal the databases cannot
        store: empty, longer than 255 characters, with a NUL or not encodable as UTF-8.
        """
        self._check_alive()
        self._principal = check_principal(principal)
        self._authenticated_at = self._clock()
        self._signing_in = True
        self.regenerate()
        self._mark_changed()

    def authenticated_within(self, max_age: timedelta) -> bool:
        """Whether someone signed in on this session at most ``max_age`` ago, by the store's
        clock: ask it before a sensitive action, and make the user sign in again if not.
        A sign-in stamped by another instance whose clock runs ahead counts as at most the
        policy's ``clock_skew`` younger (a session stamped further ahead does not load)."""
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
        if not self.is_new:  # a new session gets a fresh id anyway
            self._rotate = True
            self._mark_changed()

    def delete(self) -> None:
        """Delete the session on save (sign-out). Final: the session cannot be changed after."""
        self._state = SessionState.NEW_DELETED if self.is_new else SessionState.DELETED

    def expire_in(self, duration: timedelta) -> None:
        """Expire ``duration`` from now (never past the policy's absolute bound). The expiry
        is pinned: renewal never extends it (see `expiry_pinned`)."""
        self.set_expiry(later_by(self._clock(), duration))

    def set_expiry(self, moment: datetime) -> None:
        """Expire at ``moment`` (aware), capped at the policy's absolute bound. The expiry is
        pinned: renewal never extends it (see `expiry_pinned`)."""
        self._check_alive()
        self._set_expiry(as_utc(moment), pinned=True)

    def do_not_expire(self) -> None:
        """No expiry of its own: the session then lasts until the policy's absolute bound,
        or for ever under a policy without one."""
        self._check_alive()
        self._set_expiry(None, pinned=True)

    def follow_policy(self) -> None:
        """Undo `expire_in`, `set_expiry` and `do_not_expire`: the session
        expires by the store's policy again (its idle bound from now, capped at the absolute
        one) and is renewed automatically."""
        self._check_alive()
        self._set_expiry(self._policy.renewed_expiry(self._created_at, self._clock()), pinned=False)

    def _set_expiry(self, moment: datetime | None, *, pinned: bool) -> None:
        absolute = self._policy.absolute
        cap = None if absolute is None else later_by(self._created_at, absolute)
        if cap is not None and (moment is None or moment > cap):
            moment = cap
        self._expires_at = moment
        self._expiry_pinned = pinned
        self._expiry_set = True
        self._renewal = None
        if not self.is_new:  # an expiry alone never makes a new session worth storing
            self._mark_changed()

    def _mark_changed(self) -> None:
        if self._state is SessionState.UNCHANGED:
            self._state = SessionState.CHANGED
        elif self._state is SessionState.NEW_UNCHANGED:
            self._state = SessionState.NEW_CHANGED

    def _check_alive(self) -> None:
        if self.is_deleted:
            raise SessionError("the session was deleted; it cannot be changed any more")

    # -- the store's side ---------------------------------------------------------------

    def _assess(self) -> tuple[SessionState, bytes]:
        """The state now, counting in-place data changes, and the data's encoding
        (empty for a deleted session, whose data is never written)."""
        state = self._state
        if state in (SessionState.DELETED, SessionState.NEW_DELETED):
            return state, b""
        encoded = self._codec.encode(self._data)
        if encoded == self._snapshot:  # _same_data's first answer, the usual one
            return state, encoded
        if state is SessionState.UNCHANGED and not self._same_data(encoded, self._snapshot):
            state = SessionState.CHANGED
        elif state is SessionState.NEW_UNCHANGED and not self._same_data(encoded, self._snapshot):
            state = SessionState.NEW_CHANGED
        return state, encoded

    def _pending_write(self) -> PendingWrite:
        """What the next save must write: the one place that decides (``is_changed`` and
        ``state`` follow from the same assessment).

        Raises `EncodeError` if the data cannot be encoded.
        """
        state, encoded = self._assess()
        if state is SessionState.NEW_CHANGED:
            return _make_pending_create(
                make_record(
                    encoded,
                    1,
                    self._created_at,
                    self._expires_at,
                    self._principal,
                    self._authenticated_at,
                    self._expiry_pinned,
                )
            )
        if state is SessionState.CHANGED:
            return self._pending_update(encoded)
        if state is SessionState.DELETED:
            assert self._id_hash is not None
            return PendingDelete(self._id_hash)
        if state is SessionState.UNCHANGED and self._renewal is not None:
            assert self._id_hash is not None
            assert self._version is not None
            assert self._cookie_value is not None
            return _make_pending_touch(
                self._id_hash, self._version, self._renewal, self._cookie_value
            )
        return None

    def _pending_update(self, encoded: bytes) -> PendingUpdate:
        assert self._id_hash is not None
        assert self._version is not None
        assert self._cookie_value is not None
        sign_in = None
        if self._signing_in:
            assert self._principal is not None
            assert self._authenticated_at is not None
            sign_in = SignIn(self._principal, self._authenticated_at)
        return _make_pending_update(
            make_update(
                self._id_hash,
                self._version,
                encoded,
                self._expires_at,
                sign_in=sign_in,
                expiry_pinned=self._expiry_pinned,
            ),
            rotate=self._rotate,
            replayable=self._replayable and encoded == self._known,
            expiry_moved=self._expiry_set or self._renewal is not None,
            cookie_value=self._cookie_value,
        )

    def _rebase(self, stored: Record, data: T) -> PendingUpdate:
        """Replay this session's ``modify`` functions on ``data`` (freshly decoded from the
        ``stored`` row another request wrote) and return the update to try next.

        The stored row's ``created_at`` and, unless this session signs in, its principal
        carry over; so does its expiry unless this session set one: a pinned one as it is,
        else the later of the two.
        """
        self._data = data
        for fn in self._modifiers:
            self._apply(fn)
        self._created_at = stored.created_at
        if not self._signing_in:  # a sign-in of this request is replayed as it was
            self._principal = stored.principal
            self._authenticated_at = stored.authenticated_at
        if not self._expiry_set:
            if stored.expiry_pinned or self._expiry_pinned:
                # A pinned expiry is no renewal: the stored one (the other request's cap, or
                # its follow_policy()) holds as it is.
                self._expires_at, self._expiry_pinned = stored.expires_at, stored.expiry_pinned
            else:
                self._expires_at = _later(self._expires_at, stored.expires_at)
        self._version = stored.version
        encoded = self._codec.encode(self._data)
        self._known = encoded
        return self._pending_update(encoded)

    def _mark_stored(
        self, version: int, data: bytes | None = None, *, identity: tuple[str, bytes] | None = None
    ) -> None:
        """The store wrote this session as ``version`` holding ``data`` (None: as it was),
        under ``identity`` (cookie value, id hash) if its id changed. Nothing is pending
        any more."""
        if identity is not None:
            self._cookie_value, self._id_hash = identity
        if data is not None:
            self._snapshot = self._known = data
        self._version = version
        self._state = SessionState.UNCHANGED
        self._rotate = False
        self._expiry_set = False
        self._renewal = None
        self._signing_in = False
        self._modifiers.clear()
        self._replayable = True

    def _mark_removed(self) -> None:
        """The store deleted this session's row: nothing is stored any more."""
        self._state = SessionState.NEW_DELETED
        self._id_hash = None
        self._cookie_value = None

    def __repr__(self) -> str:
        signed_in = self._principal is not None  # who is no business of a log line
        try:
            state = self.state
        except SessionError:  # data that cannot be encoded still has a repr
            state = self._state
        return (
            f"<Session {state.value} version={self._version}"
            f" expires_at={self._expires_at} signed_in={signed_in}>"
        )

    __str__ = __repr__


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two expiries, where None means never."""
    return None if a is None or b is None else max(a, b)
