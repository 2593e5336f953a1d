"""The session store: loads and saves typed sessions through a backend.

The save protocol, after Django's: a new session is *created* (an insert that never
overwrites); a stored one is *updated* conditionally on the version it was loaded at, so
a concurrent write is detected instead of lost and a deleted session is never brought
back; a renewal alone is a *touch* of the expiry that never conflicts; an unchanged
session costs nothing.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import anyio

from typed_session_sql import ids, telemetry
from typed_session_sql.backend import (
    Backend,
    PrincipalRow,
    Record,
    UnreadableRecordError,
    UpdateOutcome,
    check_principal,
    from_backend,
)
from typed_session_sql.codec import Codec, DecodeError, codec_for
from typed_session_sql.cookie_commands import CookieCommand, DeleteCookie, DoNothing, SetCookie
from typed_session_sql.errors import (
    IdCollisionError,
    SessionConflictError,
    SessionDeletedError,
    SessionError,
    SessionTableMissingError,
    SessionTooLargeError,
    StoreUnavailableError,
    describe_error,
)
from typed_session_sql.events import EventHook, EventKind, RevokeScope, emit
from typed_session_sql.expiry import ExpiryPolicy, later_by
from typed_session_sql.pacing import DEFAULT_PACING, PurgePacing
from typed_session_sql.purge import BatchHook, PurgeResult, Sleep, purge_pass
from typed_session_sql.scope import SessionAccessor
from typed_session_sql.session import (
    PendingCreate,
    PendingDelete,
    PendingTouch,
    PendingUpdate,
    Session,
    SessionState,
    as_utc,
)

T = TypeVar("T")

__all__ = ["OnUndecodable", "SessionInfo", "SessionStore"]

Clock = Callable[[], datetime]

OnUndecodable = Literal["drop", "reset_data"]

Here = Literal["sign_out", "keep", "rotate"]
"""What `SessionStore.sign_out_everywhere` does with the current session."""

MAX_LISTED = 10_000
"""The most sessions one `SessionStore.sessions_of` call returns."""

_HANDLE = re.compile(r"[0-9a-f]{64}")

_new_session = object.__new__

_DO_NOTHING = DoNothing()  # frozen and empty: one serves every save with nothing to write


utc_now: Clock = partial(datetime.now, UTC)
"""The default clock: ``datetime.now(UTC)``, with no Python frame of its own (every load
reads the clock)."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One live session of a principal, for a "your sessions" page. No cookie value in it.

    ``handle`` names the session for `SessionStore.revoke` and equals the current
    session's `Session.handle` for the session making the request; it is useless as
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
        backend: where sessions are kept: `SqlBackend` or `MemoryBackend`.
        expiry: idle and absolute bounds and renewal throttling.
        clock: returns the current aware datetime; the only clock the store and its backend
            use. Tests inject one.
        secret_key: optional pepper (>= 16 bytes, kept outside the database) that keys the
            blake3 hash of ids, so a database dump alone cannot even confirm a stolen cookie.
        max_id_collision_retries: fresh ids to try after a collision before
            `IdCollisionError`; None retries without bound.
        max_data_bytes: the largest encoded data a save accepts.
        max_conflict_retries: how often a save replays ``modify`` functions after losing a
            race before raising `SessionConflictError`. Each lost race means another
            writer won, so N concurrent modifiers of one session need at most N - 1.
        codec: how data is encoded; by default msgspec JSON, or pydantic for pydantic models.
        default_factory: makes the data of a fresh session; by default ``data_type()``.
        on_event: called with each `SessionEvent` (no secrets in them).
        on_undecodable: what loading a stored session whose data no longer decodes into
            ``data_type`` does. "drop" (the default): it loads as None, so the user starts
            anonymous (``undecodable`` event). "reset_data": it loads with the id, sign-in
            and expiry it had and fresh data from ``default_factory``, written on save like
            any change, version-checked (``data_reset`` event). A row whose columns cannot
            be read at all is dropped either way.

    Examples:
        A store of carts; a session is stored once it has something to keep, and the
        browser gets its id in a cookie:

        ```python
        import asyncio
        from dataclasses import dataclass, field
        from datetime import timedelta

        from typed_session_sql import ExpiryPolicy, MemoryBackend, SessionStore, SetCookie


        @dataclass
        class Cart:
            items: list[int] = field(default_factory=list)


        store = SessionStore(
            Cart,
            MemoryBackend(),  # SqlBackend.from_url("postgresql+asyncpg://...") in production
            expiry=ExpiryPolicy(idle=timedelta(minutes=30), absolute=timedelta(hours=12)),
        )


        async def main() -> None:
            session = store.new()
            session.sign_in("ada")
            cookie = await store.save(session)
            assert isinstance(cookie, SetCookie)  # send cookie.value to the browser

            again = await store.load(cookie.value)  # None: absent, unknown or expired
            assert again is not None and again.principal == "ada"

            assert len(await store.sessions_of("ada")) == 1  # a "your sessions" page
            assert await store.revoke_all("ada") == 1  # sign out everywhere
            assert await store.load(cookie.value) is None


        asyncio.run(main())
        ```

        In a web app, `SessionMiddleware` calls `load` and `save`; handlers take the
        request's session from `store.session`.
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
        on_undecodable: OnUndecodable = "drop",
    ) -> None:
        if on_undecodable not in ("drop", "reset_data"):
            raise ValueError(
                f"on_undecodable must be 'drop' or 'reset_data', not {on_undecodable!r}"
            )
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
        self.on_undecodable: OnUndecodable = on_undecodable
        self._unmeasured = _ReportingFailures(self, None)
        if on_undecodable == "reset_data":
            try:  # a reset that cannot make fresh data would fail a request instead
                self._default_factory()
            except Exception as error:
                raise TypeError(
                    f"on_undecodable='reset_data' needs fresh data, but {data_type!r}() failed;"
                    " pass default_factory="
                ) from error

    def now(self) -> datetime:
        """The store's clock, in UTC."""
        moment = self._clock()
        return moment if moment.tzinfo is UTC else as_utc(moment)  # as_utc's common case

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
            state=SessionState.NEW_UNCHANGED if data is None else SessionState.NEW_CHANGED,
        )

    async def load(self, cookie_value: str | None) -> Session[T] | None:
        """The session this cookie names, or None if absent, malformed, unknown, expired or
        undecodable. A malformed value never reaches the backend.

        Raises `StoreUnavailableError` if the backend fails.
        """
        if not cookie_value:
            return None
        if not ids.is_well_formed(cookie_value):
            emit(self.on_event, EventKind.MALFORMED_COOKIE, f"length {len(cookie_value)}")
            return None
        with self._reporting_failures("load"):
            id_hash = self._hash(cookie_value)
            try:
                with from_backend():
                    record = await self.backend.read(id_hash)
            except UnreadableRecordError as error:
                emit(self.on_event, EventKind.UNDECODABLE, describe_error(error))
                return None
            if record is None:
                emit(self.on_event, EventKind.UNKNOWN_ID)
                return None
            now = self.now()
            ahead = self._ahead_of_clock(record, now)
            if ahead is not None:
                emit(self.on_event, EventKind.UNDECODABLE, ahead)
                return None
            if not self._is_live(record, now):
                emit(self.on_event, EventKind.EXPIRED)
                return None
            state = SessionState.UNCHANGED
            try:
                data = self.codec.decode(record.data)
            except DecodeError as error:
                if self.on_undecodable == "drop":
                    emit(self.on_event, EventKind.UNDECODABLE, describe_error(error))
                    return None
                emit(self.on_event, EventKind.DATA_RESET, describe_error(error))
                data, state = self._default_factory(), SessionState.CHANGED
            emit(self.on_event, EventKind.LOADED)
            renewal = (
                None
                if record.expiry_pinned  # the application's cap: only it moves it
                else self.expiry.renewal_due(record.created_at, record.expires_at, now)
            )
            # Session(...) itself, without the class call's dict of 15 keywords (a type
            # call passes keywords to __init__ as a dict; a method call does not).
            session: Session[T] = _new_session(Session)
            Session.__init__(
                session,
                data=data,
                snapshot=record.data,
                codec=self.codec,
                clock=self.now,
                policy=self.expiry,
                created_at=record.created_at,
                expires_at=renewal if renewal is not None else record.expires_at,
                state=state,
                cookie_value=cookie_value,
                id_hash=id_hash,
                version=record.version,
                renewal=renewal,
                principal=record.principal,
                authenticated_at=record.authenticated_at,
                expiry_pinned=record.expiry_pinned,
            )
            return session

    async def still_valid(self, session: Session[T]) -> bool:
        """Whether ``session`` is still stored under its id and live by the store's clock:
        False once it was signed out, revoked, rotated away (a sign-in elsewhere) or
        expired, and for a session never stored. One backend read, no write: for a
        long-lived connection (a WebSocket) to ask now and then whether to go on.

        Raises `StoreUnavailableError` if the backend fails.
        """
        if session.handle is None or session.is_deleted:
            return False
        with self._reporting_failures("still_valid"):
            try:
                with from_backend():
                    record = await self.backend.read(bytes.fromhex(session.handle))
            except UnreadableRecordError:
                return False
            now = self.now()
            return record is not None and self._is_trusted_and_live(record, now)

    def _ahead_of_clock(self, record: Record | PrincipalRow, now: datetime) -> str | None:
        """Why ``record`` cannot be trusted at ``now``: a timestamp further ahead than the
        policy's ``clock_skew`` (which would stretch the absolute bound or a sign-in's age
        by as much); None if it can."""
        skew = self.expiry.clock_skew
        limit = later_by(now, skew)
        authenticated = record.authenticated_at
        if record.created_at <= limit and (authenticated is None or authenticated <= limit):
            return None  # every load asks: answer the common case before naming anything
        for name, moment in (
            ("created_at", record.created_at),
            ("authenticated_at", record.authenticated_at),
        ):
            if moment is not None and moment > limit:
                ahead = (moment - now).total_seconds()
                return f"{name} is {ahead:.0f} s ahead of the store's clock (clock_skew: {skew})"
        return None

    def _is_trusted_and_live(self, record: Record | PrincipalRow, now: datetime) -> bool:
        """Live at ``now``, and stamped by no clock further ahead than ``clock_skew``."""
        return self._is_live(record, now) and self._ahead_of_clock(record, now) is None

    def _is_live(self, record: Record | PrincipalRow, now: datetime) -> bool:
        if record.expires_at is not None and record.expires_at <= now:
            return False
        # The policy's absolute bound holds even for rows written under a laxer policy.
        absolute = self.expiry.absolute
        return absolute is None or now < later_by(record.created_at, absolute)

    # -- saving -------------------------------------------------------------------------

    async def save(self, session: Session[T]) -> CookieCommand:
        """Write what the session says it needs, in one backend call, and say what to do
        with the cookie.

        Raises `SessionTooLargeError` and `EncodeError` (nothing written),
        `SessionConflictError` (a concurrent write won and the change could not be
        replayed; nothing written), `SessionDeletedError` (the session was deleted
        or rotated away meanwhile; nothing written), `IdCollisionError` and
        `StoreUnavailableError`.
        """
        pending = session._pending_write()
        if pending is None:
            return _DO_NOTHING  # no backend call: nothing to measure either
        with self._reporting_failures("delete" if isinstance(pending, PendingDelete) else "save"):
            match pending:
                case PendingCreate():
                    return await self._create(session, pending)
                case PendingUpdate():
                    try:
                        return await self._update(session, pending)
                    except SessionConflictError:  # every way a lost race ends in a refusal
                        telemetry.conflict("refused")
                        raise
                case PendingTouch():
                    return await self._touch(session, pending)
                case PendingDelete():
                    return await self._delete(session, pending)

    async def _delete(self, session: Session[T], pending: PendingDelete) -> CookieCommand:
        with from_backend():
            removed = await self.backend.delete(pending.id_hash)
        session._mark_removed()
        # The client's cookie goes either way (the user signed out here), but a miss is no
        # sign-out: a concurrent sign-in may have moved the session on to a new id.
        emit(self.on_event, EventKind.DELETED if removed else EventKind.DELETE_MISSED)
        return DeleteCookie(removed=removed)

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_data_bytes:
            raise SessionTooLargeError(len(data), self.max_data_bytes)

    def _fresh_ids(self) -> _FreshIds:
        return _FreshIds(self._hash, self.max_id_collision_retries)

    async def _create(self, session: Session[T], pending: PendingCreate) -> CookieCommand:
        record = pending.record
        self._check_size(record.data)
        fresh = self._fresh_ids()
        while True:
            cookie_value, id_hash = fresh.next()
            with from_backend():
                created = await self.backend.create(id_hash, record)
            if created:
                break
        session._mark_stored(1, record.data, identity=(cookie_value, id_hash))
        emit(self.on_event, EventKind.CREATED)
        return SetCookie(cookie_value, record.expires_at)

    async def _update(self, session: Session[T], pending: PendingUpdate) -> CookieCommand:
        self._check_size(pending.update.data)
        old_hash = pending.update.id_hash
        fresh = self._fresh_ids() if pending.rotate else None
        identity = fresh.next() if fresh is not None else None
        retries = 0
        while True:
            change = pending.update
            if identity is not None:
                change = replace(change, new_id_hash=identity[1])
            with from_backend():
                outcome = await self.backend.update(change)
            if outcome is UpdateOutcome.UPDATED:
                break
            if outcome is UpdateOutcome.ID_TAKEN:
                assert fresh is not None
                identity = fresh.next()
                continue
            # STALE: another request wrote (or deleted, or rotated) this session since it
            # was loaded. Replay on what it wrote, if every data change went through modify().
            if not pending.replayable or retries >= self.max_conflict_retries:
                await self._raise_conflict(old_hash, replayable=pending.replayable, retries=retries)
            retries += 1
            await anyio.sleep(_backoff(retries))
            record = await self._reread(old_hash, retries)
            if record is None or not self._is_live(record, self.now()):
                emit(self.on_event, EventKind.CONFLICT, "deleted", retries=retries)
                raise SessionDeletedError("the session was deleted or expired by another request")
            pending = session._rebase(record, self._decode_stored(record, retries))
            self._check_size(pending.update.data)
        if retries:
            emit(self.on_event, EventKind.CONFLICT, "replayed", retries=retries)
            telemetry.conflict("replayed")
        if identity is not None:
            emit(self.on_event, EventKind.ROTATED)
        session._mark_stored(change.expected_version + 1, change.data, identity=identity)
        if identity is not None:
            return SetCookie(identity[0], change.expires_at)
        if pending.expiry_moved:
            return SetCookie(pending.cookie_value, change.expires_at, value_changed=False)
        return DoNothing()

    async def _raise_conflict(self, id_hash: bytes, *, replayable: bool, retries: int) -> None:
        if not replayable and await self._reread(id_hash, retries) is None:
            emit(self.on_event, EventKind.CONFLICT, "deleted", retries=retries)
            raise SessionDeletedError("the session was deleted by another request")
        emit(self.on_event, EventKind.CONFLICT, "raised", retries=retries)
        raise SessionConflictError(
            "the session was changed by another request since it was loaded"
            + ("" if replayable else "; make every change with Session.modify() to replay it")
        )

    async def _reread(self, id_hash: bytes, retries: int) -> Record | None:
        """The row as a concurrent writer left it, after a lost race."""
        try:
            with from_backend():
                return await self.backend.read(id_hash)
        except UnreadableRecordError as error:
            emit(self.on_event, EventKind.UNDECODABLE, describe_error(error))
            emit(self.on_event, EventKind.CONFLICT, "raised", retries=retries)
            raise SessionConflictError("the concurrently stored session cannot be read") from None

    def _decode_stored(self, record: Record, retries: int) -> T:
        """The data a concurrent writer stored, to replay ``modify`` functions on."""
        try:
            return self.codec.decode(record.data)
        except DecodeError as error:
            if self.on_undecodable == "reset_data":
                emit(self.on_event, EventKind.DATA_RESET, describe_error(error))
                return self._default_factory()
            emit(self.on_event, EventKind.UNDECODABLE, describe_error(error))
            emit(self.on_event, EventKind.CONFLICT, "raised", retries=retries)
            raise SessionConflictError("the concurrently stored data no longer decodes") from None

    async def _touch(self, session: Session[T], pending: PendingTouch) -> CookieCommand:
        # A lost touch (row gone or rotated away, written since it was read, or a concurrent
        # renewal went further) is harmless, but then there is nothing to tell the client:
        # re-sending this value could overwrite a newer cookie another request just set.
        with from_backend():
            touched = await self.backend.touch(
                pending.id_hash, pending.version, pending.expires_at, self.now()
            )
        session._mark_stored(pending.version)
        if not touched:
            return DoNothing()
        emit(self.on_event, EventKind.RENEWED)
        return SetCookie(pending.cookie_value, pending.expires_at, value_changed=False)

    # -- a principal's sessions ---------------------------------------------------------

    async def sessions_of(self, principal: str, *, limit: int = 100) -> list[SessionInfo]:
        """The live sessions (by the store's clock) ``principal`` signed in on, newest first,
        at most ``limit`` (1 to 10,000) of them.

        One backend call. Raises TypeError or ValueError for a principal ``sign_in`` would
        refuse or a bad ``limit`` (before any backend call), and
        `StoreUnavailableError`.
        """
        check_principal(principal)
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise TypeError(f"limit must be an int, not {type(limit).__name__}")
        if not 1 <= limit <= MAX_LISTED:
            raise ValueError(f"limit must be between 1 and {MAX_LISTED}, got {limit}")
        with self._reporting_failures("list"):
            now = self.now()
            absolute = self.expiry.absolute
            with from_backend():
                listed = await self.backend.list_by_principal(
                    principal,
                    live_at=now,
                    created_after=None if absolute is None else later_by(now, -absolute),
                    limit=limit,
                )
            return [
                SessionInfo(row.id_hash.hex(), row.created_at, row.expires_at, row.authenticated_at)
                for row in listed
                if self._is_trusted_and_live(row, now)
            ]

    async def revoke(self, principal: str, handle: str) -> bool:
        """Delete the session ``handle`` names if it is one of ``principal``'s; return whether
        one was. A handle of another principal's session deletes nothing, so a user can only
        ever revoke their own. Anything but 64 lowercase hex characters is no handle: False,
        with no backend call. A bad principal raises as in `sessions_of`."""
        check_principal(principal)
        if not isinstance(handle, str) or not _HANDLE.fullmatch(handle):
            return False
        with self._reporting_failures("revoke"), from_backend():
            removed = await self.backend.delete_by_principal(principal, only=bytes.fromhex(handle))
            if removed:
                emit(self.on_event, EventKind.REVOKED, "one", removed, scope="one")
            return removed == 1

    async def revoke_all(self, principal: str, *, keep: Session[T] | None = None) -> int:
        """Delete every session of ``principal`` ("sign out everywhere"), except ``keep``
        ("everywhere else"; pass the current session); return how many went, in one
        backend call. A later save of a revoked session raises `SessionDeletedError`:
        it never brings the session back. A bad principal raises as in `sessions_of`."""
        check_principal(principal)
        if keep is not None and keep.principal != principal:
            raise ValueError("keep is not a session of that principal")
        kept = None if keep is None or keep.handle is None else bytes.fromhex(keep.handle)
        with self._reporting_failures("revoke_all"), from_backend():
            removed = await self.backend.delete_by_principal(principal, keep=kept)
            if removed:
                scope: RevokeScope = "others" if kept else "all"
                emit(self.on_event, EventKind.REVOKED, scope, removed, scope=scope)
            return removed

    async def sign_out_everywhere(self, session: Session[T], *, here: Here = "sign_out") -> int:
        """Revoke every session of the principal signed in on ``session`` (the current
        request's) in one backend call, and leave ``session`` as ``here`` says:

        - ``"sign_out"``: signed out as well; its row goes with the others, and the
          middleware's save deletes the browser's cookie without another statement.
        - ``"keep"``: "sign out everywhere else": it stays signed in, as it is.
        - ``"rotate"``: after a password change: it stays signed in, under a fresh id the
          response's save writes (one statement, version-checked like every save), so a
          copy of the old cookie is dead too.

        Return how many sessions went. Raises ValueError for a session nobody signed in
        on, `SessionError` for a deleted one, and `StoreUnavailableError`.
        """
        if here not in ("sign_out", "keep", "rotate"):
            raise ValueError(f"here must be 'sign_out', 'keep' or 'rotate', not {here!r}")
        if session.is_deleted:
            raise SessionError("the session was deleted; it cannot sign out everywhere")
        principal = session.principal
        if principal is None:
            raise ValueError("nobody signed in on this session: sign_in() first")
        if here != "sign_out":
            removed = await self.revoke_all(principal, keep=session)
            if here == "rotate":
                session.regenerate()
            return removed
        # A sign-in of this request is not stored yet: the row still has its old principal,
        # and only deleting it by its id removes it (one more statement, on save).
        signing_in = session.is_new or _signs_in(session)
        removed = await self.revoke_all(principal)
        if signing_in:
            session.delete()
        else:
            session._mark_removed()  # the row went with the others
        return removed

    # -- housekeeping -------------------------------------------------------------------

    async def purge_expired(
        self,
        batch_size: int | None = None,
        *,
        on_batch: BatchHook | None = None,
        pacing: PurgePacing | None = DEFAULT_PACING,
    ) -> int:
        """Delete expired sessions in batches; return how many went.

        Expiry is judged by the store's clock at the start of the pass; each batch is one
        short statement, and ``on_batch`` sees each one's progress. The pass is paced
        (`typed_session_sql.pacing`) unless ``pacing`` is None or ``batch_size`` is given
        (then ``batch_size`` rows per batch, back to back). Only one purger works at
        a time across instances (the backend's `purge_lock`; see `typed_session_sql.purge`): if
        another one is running, this returns 0 at once. Raises `StoreUnavailableError`.
        """
        result = await self.purge_expired_pass(batch_size, on_batch=on_batch, pacing=pacing)
        return result.removed

    async def purge_expired_pass(
        self,
        batch_size: int | None = None,
        *,
        on_batch: BatchHook | None = None,
        pause: float | None = None,
        pacing: PurgePacing | None = DEFAULT_PACING,
        sleep: Sleep = anyio.sleep,
    ) -> PurgeResult:
        """`purge_expired`, telling all the pass did: rows, batches, time, whether another
        purger held the lock, and the cutoff. ``pause`` (seconds between batches) and
        ``sleep`` are `purge_pass`'s.

        The one place a pass is assembled from a store (its clock, its events, its failure
        reporting): `PurgeScheduler` and the `purge` command run theirs through it, so a
        failing pass emits ``store_unavailable`` whichever of them ran it.
        """
        with self._reporting_failures(None):  # purge_pass measures its pass and batches
            return await purge_pass(
                self.backend,
                self.now(),
                batch_size,
                on_event=self.on_event,
                on_batch=on_batch,
                pause=pause,
                pacing=pacing,
                sleep=sleep,
            )

    async def clear(self) -> None:
        """Delete every session (everyone is signed out)."""
        with self._reporting_failures("clear"), from_backend():
            await self.backend.clear()

    def _reporting_failures(self, operation: str | None) -> _ReportingFailures:
        """Emit (and so log) every store failure once, where it happens, then let it go on;
        measure ``operation`` (a span and its duration, see `.telemetry`)."""
        measured = telemetry.measured(operation, self.backend) if operation else None
        if measured is None:  # telemetry off: the store's one reporter, which keeps no state
            return self._unmeasured
        return _ReportingFailures(self, measured)

    def __repr__(self) -> str:
        return f"SessionStore({self.data_type!r}, {self.backend!r}, expiry={self.expiry!r})"

    @property
    def session(self) -> SessionAccessor[T]:
        """The current request's session, typed by this store: ``await store.session(request)``
        in a handler, ``Depends(store.session)`` in FastAPI. Needs
        `SessionMiddleware` with this store around the app."""
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


class _ReportingFailures:
    """`SessionStore._reporting_failures`: a class, not ``@contextmanager``, for it is
    around every load and save (no generator per call). Without ``measured`` it holds no
    state of its operation, so one serves every unmeasured operation of its store."""

    __slots__ = ("_measured", "_store")

    def __init__(self, store: SessionStore[Any], measured: AbstractContextManager[object] | None):
        self._store = store
        self._measured = measured

    def __enter__(self) -> None:
        if self._measured is not None:
            self._measured.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._measured is not None:
            self._measured.__exit__(exc_type, exc, traceback)
        if exc is None:
            return
        if isinstance(exc, SessionTableMissingError):
            emit(self._store.on_event, EventKind.TABLE_MISSING, describe_error(exc))
        elif isinstance(exc, StoreUnavailableError):
            emit(self._store.on_event, EventKind.STORE_UNAVAILABLE, describe_error(exc))


def _signs_in(session: Session[T]) -> bool:
    """Whether saving ``session`` stores a sign-in its row does not have yet."""
    pending = session._pending_write()
    return isinstance(pending, PendingUpdate) and pending.update.sign_in is not None


def _backoff(attempt: int) -> float:
    """Full jitter, exponential from 1 ms, capped at 50 ms: losers of a race spread out."""
    return random.uniform(0, min(0.05, 0.001 * 2**attempt))  # noqa: S311 - jitter, not secrets
