"""The session store: loads and saves typed sessions through a backend.

The save protocol, after Django's: a new session is *created* (an insert that never
overwrites); a stored one is *updated* conditionally on the version it was loaded at, so
a concurrent write is detected instead of lost and a deleted session is never brought
back; a renewal alone is a *touch* of the expiry that never conflicts; an unchanged
session costs nothing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio

from typed_session_sql import ids
from typed_session_sql.backend import (
    Backend,
    Listed,
    Record,
    SignIn,
    UnreadableRecordError,
    Update,
    UpdateOutcome,
)
from typed_session_sql.codec import Codec, DecodeError, codec_for
from typed_session_sql.commands import DeleteCookie, DoNothing, SaveResult, SetCookie
from typed_session_sql.errors import (
    IdCollisionError,
    SessionConflictError,
    SessionDeletedError,
    SessionTableMissingError,
    SessionTooLargeError,
    StoreUnavailableError,
    describe_error,
)
from typed_session_sql.events import EventHook, EventKind, emit
from typed_session_sql.expiry import ExpiryPolicy
from typed_session_sql.purge import BatchHook, purge_pass
from typed_session_sql.session import Session, as_utc

if TYPE_CHECKING:
    from typed_session_sql.asgi import SessionAccessor

T = TypeVar("T")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session of a principal, for a "your sessions" page. No cookie value in it.

    ``handle`` names the session for :meth:`SessionStore.revoke` and equals the current
    session's :attr:`Session.handle` for the session making the request; it is useless as
    a cookie.
    """

    handle: str
    created_at: datetime
    expires_at: datetime | None
    authenticated_at: datetime | None


class SessionStore(Generic[T]):
    """Typed sessions of ``data_type`` kept in ``backend``.

    Args:
        data_type: the session data's type (dataclass, msgspec Struct, TypedDict, pydantic
            model, or a builtin type).
        backend: where sessions are kept: :class:`SqlBackend` or :class:`MemoryBackend`.
        expiry: idle and absolute bounds and renewal throttling.
        clock: returns the current aware datetime; the only clock the store and its backend
            use. Tests inject one.
        secret_key: optional pepper (>= 16 bytes, kept outside the database) that keys the
            blake3 hash of ids, so a database dump alone cannot even confirm a stolen cookie.
        max_id_collision_retries: fresh ids to try after a collision before
            :class:`IdCollisionError`; None retries without bound.
        max_data_bytes: the largest encoded data a save accepts.
        max_conflict_retries: how often a save replays ``modify`` functions after losing a
            race before raising :class:`SessionConflictError`. Each lost race means another
            writer won, so N concurrent modifiers of one session need at most N - 1.
        codec: how data is encoded; by default msgspec JSON, or pydantic for pydantic models.
        default_factory: makes the data of a fresh session; by default ``data_type()``.
        on_event: called with each :class:`SessionEvent` (no secrets in them).
    """

    def __init__(
        self,
        data_type: type[T],
        backend: Backend,
        *,
        expiry: ExpiryPolicy | None = None,
        clock: Clock | None = None,
        secret_key: bytes | None = None,
        max_id_collision_retries: int | None = 3,
        max_data_bytes: int = 65536,
        max_conflict_retries: int = 64,
        codec: Codec[T] | None = None,
        default_factory: Callable[[], T] | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        if max_id_collision_retries is not None and max_id_collision_retries < 0:
            raise ValueError("max_id_collision_retries must be >= 0 or None")
        if max_data_bytes <= 0:
            raise ValueError("max_data_bytes must be positive")
        if max_conflict_retries < 0:
            raise ValueError("max_conflict_retries must be >= 0")
        self.data_type = data_type
        self.backend = backend
        self.expiry = expiry if expiry is not None else ExpiryPolicy()
        self._clock = clock if clock is not None else utc_now
        self._hash = ids.IdHasher(secret_key)
        self.max_id_collision_retries = max_id_collision_retries
        self.max_data_bytes = max_data_bytes
        self.max_conflict_retries = max_conflict_retries
        self.codec: Codec[T] = codec if codec is not None else codec_for(data_type)
        self._default_factory: Callable[[], T] = (
            default_factory if default_factory is not None else data_type
        )
        self.on_event = on_event

    def now(self) -> datetime:
        """The store's clock, in UTC."""
        return as_utc(self._clock())

    # -- creating and loading -----------------------------------------------------------

    def new(self, data: T | None = None) -> Session[T]:
        """A fresh session. Without ``data`` it is stored only once its data changes; with
        ``data`` it is stored on save even if untouched. No backend call."""
        now = self.now()
        value = self._default_factory() if data is None else data
        return Session(
            data=value,
            # A fresh session's data is compared with its own initial value, so a new session
            # whose data was never touched stays unstored.
            snapshot=self.codec.encode(value),
            codec=self.codec,
            clock=self.now,
            policy=self.expiry,
            created_at=now,
            expires_at=self.expiry.initial_expiry(now),
            assigned=data is not None,
        )

    async def load(self, cookie_value: str | None) -> Session[T] | None:
        """The session this cookie names, or None if absent, malformed, unknown, expired or
        undecodable. A malformed value never reaches the backend.

        Raises :class:`StoreUnavailableError` if the backend fails.
        """
        with self._reporting_failures():
            if not cookie_value:
                return None
            if not ids.is_well_formed(cookie_value):
                emit(self.on_event, EventKind.MALFORMED_COOKIE, f"length {len(cookie_value)}")
                return None
            id_hash = self._hash(cookie_value)
            try:
                record = await self.backend.read(id_hash)
            except UnreadableRecordError as error:
                emit(self.on_event, EventKind.UNDECODABLE, _short(error))
                return None
            if record is None:
                emit(self.on_event, EventKind.UNKNOWN_ID)
                return None
            now = self.now()
            if not self._is_live(record, now):
                emit(self.on_event, EventKind.EXPIRED)
                return None
            try:
                data = self.codec.decode(record.data)
            except DecodeError as error:
                emit(self.on_event, EventKind.UNDECODABLE, _short(error))
                return None
            emit(self.on_event, EventKind.LOADED)
            renewal = self.expiry.renewal_due(record.created_at, record.expires_at, now)
            return Session(
                data=data,
                snapshot=record.data,
                codec=self.codec,
                clock=self.now,
                policy=self.expiry,
                created_at=record.created_at,
                expires_at=renewal if renewal is not None else record.expires_at,
                cookie_value=cookie_value,
                id_hash=id_hash,
                version=record.version,
                renewal=renewal,
                principal=record.principal,
                authenticated_at=record.authenticated_at,
            )

    def _is_live(self, record: Record | Listed, now: datetime) -> bool:
        if record.expires_at is not None and record.expires_at <= now:
            return False
        # The policy's absolute bound holds even for rows written under a laxer policy.
        absolute = self.expiry.absolute
        return absolute is None or now < record.created_at + absolute

    # -- saving -------------------------------------------------------------------------

    async def save(self, session: Session[T]) -> SaveResult:
        """Write what changed, in one backend call, and say what to do with the cookie.

        Raises :class:`SessionTooLargeError` (nothing written), :class:`SessionConflictError`
        (a concurrent write won and the change could not be replayed; nothing written),
        :class:`SessionDeletedError` (the session was deleted meanwhile; nothing written),
        :class:`IdCollisionError` and :class:`StoreUnavailableError`.
        """
        with self._reporting_failures():
            if session._deleted:
                return await self._delete(session)
            data = self.codec.encode(session._data)
            data_changed = session._assigned or data != session._snapshot
            if session._id_hash is None:
                if not data_changed and not session._signing_in:
                    return (
                        DoNothing()
                    )  # an expiry-only change never makes a new session worth storing
                return await self._create(session, data)
            if data_changed or session._rotate or session._expiry_set or session._signing_in:
                return await self._update(session, data)
            if session._renewal is not None:
                return await self._touch(session, session._id_hash, session._renewal)
            return DoNothing()

    async def _delete(self, session: Session[T]) -> SaveResult:
        if session._id_hash is None:
            return DoNothing()
        await self.backend.delete(session._id_hash)
        session._id_hash = None
        session._cookie_value = None
        emit(self.on_event, EventKind.DELETED)
        return DeleteCookie()

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_data_bytes:
            raise SessionTooLargeError(len(data), self.max_data_bytes)

    def _fresh_ids(self) -> _FreshIds:
        return _FreshIds(self._hash, self.max_id_collision_retries)

    async def _create(self, session: Session[T], data: bytes) -> SaveResult:
        self._check_size(data)
        record = Record(
            data,
            1,
            session._created_at,
            session._expires_at,
            session._principal,
            session._authenticated_at,
        )
        fresh = self._fresh_ids()
        while True:
            cookie_value, id_hash = fresh.next()
            if await self.backend.create(id_hash, record):
                break
        session._cookie_value, session._id_hash = cookie_value, id_hash
        self._saved(session, data, version=1)
        emit(self.on_event, EventKind.CREATED)
        return SetCookie(cookie_value, session._expires_at)

    async def _update(self, session: Session[T], data: bytes) -> SaveResult:
        self._check_size(data)
        assert session._id_hash is not None
        assert session._version is not None
        old_hash, version = session._id_hash, session._version
        replayable = session._modifiers and session._replayable and data == session._last_modified
        fresh = self._fresh_ids() if session._rotate else None
        cookie_value, new_hash = fresh.next() if fresh is not None else (None, None)
        sign_in = None
        if session._signing_in:
            assert session._principal is not None
            assert session._authenticated_at is not None
            sign_in = SignIn(session._principal, session._authenticated_at)
        conflicts = 0
        while True:
            outcome = await self.backend.update(
                Update(old_hash, version, data, session._expires_at, new_hash, sign_in)
            )
            if outcome is UpdateOutcome.UPDATED:
                break
            if outcome is UpdateOutcome.ID_TAKEN:
                assert fresh is not None
                cookie_value, new_hash = fresh.next()
                continue
            # STALE: another request wrote (or deleted) this session since it was loaded.
            if not replayable or conflicts >= self.max_conflict_retries:
                await self._raise_conflict(old_hash, replayable=bool(replayable))
            conflicts += 1
            await anyio.sleep(_backoff(conflicts))
            record = await self.backend.read(old_hash)
            if record is None or not self._is_live(record, self.now()):
                emit(self.on_event, EventKind.CONFLICT, "deleted meanwhile")
                raise SessionDeletedError("the session was deleted or expired by another request")
            data, version = self._replay(session, record), record.version
            self._check_size(data)
        if conflicts:
            emit(self.on_event, EventKind.CONFLICT, f"replayed after {conflicts} lost race(s)")
        rotated = new_hash is not None
        if rotated:
            session._cookie_value, session._id_hash = cookie_value, new_hash
            emit(self.on_event, EventKind.ROTATED)
        expiry_moved = session._expiry_set or session._renewal is not None
        self._saved(session, data, version=version + 1)
        if rotated or expiry_moved:
            assert session._cookie_value is not None
            return SetCookie(session._cookie_value, session._expires_at, value_changed=rotated)
        return DoNothing()

    async def _raise_conflict(self, id_hash: bytes, *, replayable: bool) -> None:
        emit(self.on_event, EventKind.CONFLICT, "raised")
        if not replayable and await self.backend.read(id_hash) is None:
            raise SessionDeletedError("the session was deleted by another request")
        raise SessionConflictError(
            "the session was changed by another request since it was loaded"
            + ("" if replayable else "; make every change with Session.modify() to replay it")
        )

    def _replay(self, session: Session[T], record: Record) -> bytes:
        """Apply the session's ``modify`` functions to the stored data; return its encoding."""
        try:
            session._data = self.codec.decode(record.data)
        except DecodeError as error:
            emit(self.on_event, EventKind.UNDECODABLE, _short(error))
            raise SessionConflictError("the concurrently stored data no longer decodes") from error
        for fn in session._modifiers:
            session._apply(fn)
        session._created_at = record.created_at
        if not session._signing_in:  # a sign-in of this request is replayed as it was
            session._principal = record.principal
            session._authenticated_at = record.authenticated_at
        if not session._expiry_set:
            session._expires_at = _later(session._expires_at, record.expires_at)
        data = self.codec.encode(session._data)
        session._last_modified = data
        return data

    async def _touch(self, session: Session[T], id_hash: bytes, expires_at: datetime) -> SaveResult:
        # A lost touch (row gone or rotated away, written since it was read, or a concurrent
        # renewal went further) is harmless, but then there is nothing to tell the client:
        # re-sending this value could overwrite a newer cookie another request just set.
        assert session._version is not None
        touched = await self.backend.touch(id_hash, session._version, expires_at, self.now())
        session._renewal = None
        if not touched:
            return DoNothing()
        emit(self.on_event, EventKind.RENEWED)
        assert session._cookie_value is not None
        return SetCookie(session._cookie_value, expires_at, value_changed=False)

    def _saved(self, session: Session[T], data: bytes, *, version: int) -> None:
        session._snapshot = data
        session._version = version
        session._assigned = False
        session._rotate = False
        session._expiry_set = False
        session._renewal = None
        session._signing_in = False
        session._modifiers.clear()
        session._last_modified = None
        session._replayable = True

    # -- a principal's sessions ---------------------------------------------------------

    async def sessions_of(self, principal: str, *, limit: int = 100) -> list[SessionInfo]:
        """The live sessions (by the store's clock) ``principal`` signed in on, newest first,
        at most ``limit`` of them.

        One backend call. Raises :class:`StoreUnavailableError`.
        """
        with self._reporting_failures():
            now = self.now()
            absolute = self.expiry.absolute
            listed = await self.backend.list_by_principal(
                principal,
                live_at=now,
                created_after=None if absolute is None else now - absolute,
                limit=limit,
            )
            return [
                SessionInfo(row.id_hash.hex(), row.created_at, row.expires_at, row.authenticated_at)
                for row in listed
                if self._is_live(row, now)
            ]

    async def revoke(self, principal: str, handle: str) -> bool:
        """Delete the session ``handle`` names if it is one of ``principal``'s; return whether
        one was. A handle of another principal's session deletes nothing, so a user can only
        ever revoke their own. A malformed handle costs no backend call."""
        with self._reporting_failures():
            id_hash = _parse_handle(handle)
            if id_hash is None:
                return False
            removed = await self.backend.delete_by_principal(principal, only=id_hash)
            if removed:
                emit(self.on_event, EventKind.REVOKED, "one", removed)
            return removed == 1

    async def revoke_all(self, principal: str, *, keep: Session[T] | None = None) -> int:
        """Delete every session of ``principal`` ("sign out everywhere"), except ``keep``
        ("everywhere else"; pass the current session); return how many went, in one
        backend call. A later save of a revoked session raises :class:`SessionDeletedError`:
        it never brings the session back."""
        with self._reporting_failures():
            if keep is not None and keep.principal != principal:
                raise ValueError("keep is not a session of that principal")
            kept = keep._id_hash if keep is not None else None
            removed = await self.backend.delete_by_principal(principal, keep=kept)
            if removed:
                emit(self.on_event, EventKind.REVOKED, "others" if kept else "all", removed)
            return removed

    # -- housekeeping -------------------------------------------------------------------

    async def purge_expired(
        self, batch_size: int = 1000, *, on_batch: BatchHook | None = None
    ) -> int:
        """Delete expired sessions in batches of ``batch_size``; return how many went.

        Expiry is judged by the store's clock at the start of the pass; each batch is one
        short statement, and ``on_batch`` sees each one's progress. Only one purger works at
        a time across instances (on PostgreSQL; see :mod:`typed_session_sql.purge`): if
        another one is running, this returns 0 at once. Raises :class:`StoreUnavailableError`.
        """
        with self._reporting_failures():
            result = await purge_pass(
                self.backend, self.now(), batch_size, on_event=self.on_event, on_batch=on_batch
            )
            return result.removed

    async def clear(self) -> None:
        """Delete every session (everyone is signed out)."""
        with self._reporting_failures():
            await self.backend.clear()

    @contextmanager
    def _reporting_failures(self) -> Iterator[None]:
        """Emit (and so log) every store failure once, where it happens, then let it go on."""
        try:
            yield
        except SessionTableMissingError as error:
            emit(self.on_event, EventKind.TABLE_MISSING, describe_error(error))
            raise
        except StoreUnavailableError as error:
            emit(self.on_event, EventKind.STORE_UNAVAILABLE, describe_error(error))
            raise

    def __repr__(self) -> str:
        return f"SessionStore({self.data_type!r}, {self.backend!r}, expiry={self.expiry!r})"

    @property
    def session(self) -> SessionAccessor[T]:
        """The current request's session, typed by this store: ``await store.session(request)``
        in a handler, ``Depends(store.session)`` in FastAPI. Needs
        :class:`~typed_session_sql.asgi.SessionMiddleware` with this store around the app."""
        from typed_session_sql.asgi import SessionAccessor  # the web layer, loaded when used

        return SessionAccessor(self)


class _FreshIds:
    """Draws fresh ids, counting collisions against the configured bound."""

    __slots__ = ("_drawn", "_hash", "_retries")

    def __init__(self, hasher: ids.IdHasher, retries: int | None) -> None:
        self._hash, self._retries, self._drawn = hasher, retries, 0

    def next(self) -> tuple[str, bytes]:
        if self._retries is not None and self._drawn > self._retries:
            raise IdCollisionError(f"{self._drawn} fresh session ids in a row already existed")
        self._drawn += 1
        value = ids.new_cookie_value()
        return value, self._hash(value)


def _parse_handle(handle: str) -> bytes | None:
    if len(handle) != 2 * ids.HASH_BYTES:
        return None
    try:
        return bytes.fromhex(handle)
    except ValueError:
        return None


def _backoff(attempt: int) -> float:
    """Full jitter, exponential from 1 ms, capped at 50 ms: losers of a race spread out."""
    return random.uniform(0, min(0.05, 0.001 * 2**attempt))  # noqa: S311 - jitter, not secrets


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two expiries, where None means never."""
    return None if a is None or b is None else max(a, b)


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:200]
