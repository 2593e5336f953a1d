"""The storage protocol: what a backend must do (`Backend`, the purge lock included),
what it may do (`ReportsStats`, found with `stats_of`), and
`ForwardingBackend`, the base of decorators that keep both.

A backend sees only hashed ids (32 bytes), opaque encoded data, versions and aware UTC
timestamps. It never sees a cookie value, never decodes data and never reads a clock:
every ``now`` comes from the store's injected clock. Each method is one atomic operation
(one statement on SQL backends), so a failure never leaves a partial write.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

from typed_session_sql.errors import SessionError, StoreUnavailableError, describe_error

R = TypeVar("R")
P = ParamSpec("P")
D = TypeVar("D")

__all__ = [
    "MAX_PRINCIPAL_LENGTH",
    "Backend",
    "ForwardingBackend",
    "PrincipalRow",
    "Record",
    "ReportsStats",
    "SignIn",
    "TableStats",
    "UnreadableRecordError",
    "Update",
    "UpdateOutcome",
    "check_principal",
    "from_backend",
    "stats_of",
]

MAX_PRINCIPAL_LENGTH = 255
"""The longest principal a session takes (an e-mail address fits; so does any UUID)."""


def check_principal(principal: object) -> str:
    """``principal`` if every backend can store it and find it again; else TypeError (not a
    string) or ValueError (empty, too long, with a NUL, or not encodable as UTF-8).

    PostgreSQL refuses NUL in text and lone surrogates in UTF-8; SQLite would store them. A
    principal is refused up front instead, identically on every backend.
    """
    if not isinstance(principal, str):
        raise TypeError(f"principal must be a str, not {type(principal).__name__}")
    if not principal:
        raise ValueError("principal must be a non-empty string")
    if len(principal) > MAX_PRINCIPAL_LENGTH:
        raise ValueError(f"principal is longer than {MAX_PRINCIPAL_LENGTH} characters")
    if "\x00" in principal:
        raise ValueError("principal contains a NUL character, which databases cannot store")
    try:
        principal.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("principal is not valid Unicode (a lone surrogate)") from None
    return principal


class UnreadableRecordError(ValueError):
    """A stored row's columns cannot be read back (say, a timestamp out of range).

    `Backend.read` raises it; the store treats the session as undecodable (it loads as
    None, with an ``undecodable`` event). Listings skip such rows instead.
    """


@dataclass(frozen=True, slots=True)
class Record:
    """One stored session as the backend returns it."""

    data: bytes
    version: int
    created_at: datetime
    expires_at: datetime | None
    principal: str | None = None
    """Who signed in on this session (set only by ``Session.sign_in``); None if nobody."""
    authenticated_at: datetime | None = None
    """When that sign-in happened."""
    expiry_pinned: bool = False
    """The application set ``expires_at`` (``expire_in``, ``set_expiry``, ``do_not_expire``):
    a cap that renewal never moves; only the application can change it again."""


@dataclass(frozen=True, slots=True)
class SignIn:
    """A sign-in an update writes along with the data: the new principal and its moment."""

    principal: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Update:
    """A conditional update of one row, as `Backend.update` takes it."""

    id_hash: bytes
    """The row to update."""
    expected_version: int
    """Write only if the stored version is still this one; it becomes this + 1."""
    data: bytes
    expires_at: datetime | None
    new_id_hash: bytes | None = None
    """Move the row to this id in the same atomic step (rotation): the old id is dead at once."""
    sign_in: SignIn | None = None
    """Set the principal and ``authenticated_at`` too; without it they stay as stored."""
    expiry_pinned: bool = False
    """Whether ``expires_at`` is the application's own (see `Record.expiry_pinned`)."""


def fast_constructor(cls: Callable[P, D]) -> Callable[P, D]:
    """``cls`` itself (the same signature, the same object made) for a frozen, slotted
    dataclass built on every load or save: a function written once for ``cls``, as
    dataclasses writes an ``__init__``, that sets each field through its slot's own setter.
    The class's ``__init__`` sets each through ``object.__setattr__``, which finds the
    field again, and calling the class hands its keywords over as a dict: together about
    twice the cost."""
    params = getattr(cls, "__dataclass_params__", None)
    # Only what the function can stand in for: the fields are all its __init__ does.
    if not isinstance(cls, type) or params is None or not params.frozen:
        raise TypeError(f"{cls!r} is not a frozen dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    names: dict[str, object] = {"_tss_new": object.__new__, "_tss_cls": cls}
    parameters, lines = [], ["_tss_made = _tss_new(_tss_cls)"]
    for index, each in enumerate(fields(cls)):
        if not each.init or each.kw_only or each.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{each.name} is not a plain positional field")
        if each.default is MISSING:
            parameters.append(each.name)
        else:
            names[f"_tss_default{index}"] = each.default
            parameters.append(f"{each.name}=_tss_default{index}")
        names[f"_tss_set{index}"] = cls.__dict__[each.name].__set__
        lines.append(f"_tss_set{index}(_tss_made, {each.name})")
    body = "".join(f"    {line}\n" for line in [*lines, "return _tss_made"])
    namespace: dict[str, Any] = {}
    exec(f"def {cls.__name__}({', '.join(parameters)}):\n{body}", names, namespace)  # noqa: S102
    made: Callable[P, D] = namespace[cls.__name__]
    return made


make_record = fast_constructor(Record)
"""``Record(...)``, on every load (`fast_constructor`)."""
make_update = fast_constructor(Update)
"""``Update(...)``, on every save that writes (`fast_constructor`)."""


@dataclass(frozen=True, slots=True)
class PrincipalRow:
    """One of a principal's sessions as `Backend.list_by_principal` returns it (the
    store turns it into a `SessionInfo`).

    No data: a listing never reads (or ships) session data it has no use for.
    """

    id_hash: bytes
    created_at: datetime
    expires_at: datetime | None
    authenticated_at: datetime | None


class UpdateOutcome(enum.Enum):
    """What a conditional update did."""

    UPDATED = "updated"
    """The row had the expected version; it now holds the new data and version + 1."""
    STALE = "stale"
    """No row with that id and version: a concurrent write bumped it, or the row is gone."""
    ID_TAKEN = "id_taken"
    """The new id (rotation) already exists; nothing was written. Retry with another id."""


class Backend(Protocol):
    """Storage for sessions, keyed by the blake3 hash of the session id.

    **Errors.** What a method may raise is part of the protocol, so that an outage reads
    the same (a 503 from the middleware, one ``store_unavailable`` event) whoever wrote
    the backend:

    - storage that cannot be reached or fails: `StoreUnavailableError`, with the
      driver's error chained as ``__cause__``;
    - storage whose schema is absent (never migrated):
      `SessionTableMissingError` (a
      `StoreUnavailableError` that lasts until someone migrates);
    - `read` on a row whose columns cannot be read back:
      `UnreadableRecordError`;
    - values the storage refuses: `DataRejectedError`;
    - nothing else. Error messages never quote ids, id hashes, data or passwords.

    The store translates at its boundary all the same (`from_backend`): anything
    else a backend lets escape, say its driver's ``ConnectionError``, becomes a
    `StoreUnavailableError` with that cause, so a forgotten ``except`` costs a
    vaguer message, never a 500.
    """

    async def create(self, id_hash: bytes, record: Record) -> bool:
        """Insert a new row. Return False, writing nothing, if ``id_hash`` already exists."""
        ...

    async def read(self, id_hash: bytes) -> Record | None:
        """Return the row for ``id_hash`` (expired or not; the store judges expiry), or None.

        Raises `UnreadableRecordError` if the row's columns cannot be read back."""
        ...

    async def update(self, change: Update) -> UpdateOutcome:
        """Apply ``change`` if the stored version is ``change.expected_version``.

        The version becomes ``expected_version + 1``. With ``new_id_hash`` the row moves to
        that id in the same atomic step (rotation). Never inserts: a deleted row stays deleted.
        """
        ...

    async def touch(
        self, id_hash: bytes, version: int, expires_at: datetime, now: datetime
    ) -> bool:
        """Move the expiry of a row still at ``version`` and live at ``now`` later, to
        ``expires_at``.

        Never earlier, never on a row whose expiry is None or pinned, never reviving an
        expired row, and never over a write made since the row was read at ``version`` (an
        explicit expiry change must win over a renewal). Leaves the version alone. Return whether a
        row changed."""
        ...

    async def delete(self, id_hash: bytes) -> bool:
        """Delete the row; return whether one existed."""
        ...

    async def list_by_principal(
        self, principal: str, *, live_at: datetime, created_after: datetime | None, limit: int
    ) -> list[PrincipalRow]:
        """The rows of ``principal`` live at ``live_at`` (expiry None or later) and, if
        ``created_after`` is given, created after it; newest first (``created_at``, then
        ``id_hash``, descending); at most ``limit``."""
        ...

    async def delete_by_principal(
        self, principal: str, *, only: bytes | None = None, keep: bytes | None = None
    ) -> int:
        """Delete the rows of ``principal``: all, just ``only``, or all but ``keep`` (at most
        one of the two is given). A row of another principal is never touched. Return how
        many were deleted."""
        ...

    async def purge(self, now: datetime, batch_size: int) -> int:
        """Delete at most ``batch_size`` rows whose expiry is at or before ``now``, as one short
        atomic step; return how many were deleted. Rows with no expiry are never purged."""
        ...

    async def clear(self) -> None:
        """Delete every session."""
        ...

    def purge_lock(self) -> AbstractAsyncContextManager[bool]:
        """The cross-instance purge lock: held while the ``async with`` block runs, which
        yields whether it was taken (False: another purger holds it, skip this pass).

        Required, so that no wrapper can lose it: a backend only one process uses (memory,
        SQLite) returns ``contextlib.nullcontext(True)``."""
        ...


@dataclass(frozen=True, slots=True)
class TableStats:
    """What a session table holds, as of one moment."""

    live: int
    """Rows not expired at that moment, never-expiring ones included."""
    never_expire: int
    expired: int
    """Rows a purge would remove."""
    oldest_expiry: datetime | None
    """The earliest expiry in the table (None if no row expires); in the past, it says how
    far behind cleanup is."""
    size_bytes: int | None
    """The table's size on disk, where the database can tell; see ``size_of``."""
    size_of: str


@runtime_checkable
class ReportsStats(Protocol):
    """A backend that can say what it holds (optional: counting may cost a scan)."""

    async def stats(self, now: datetime) -> TableStats:
        """The backend's rows as of ``now``."""
        ...


def stats_of(backend: Backend) -> ReportsStats | None:
    """``backend`` if it reports statistics, through any `ForwardingBackend`; else None."""
    if isinstance(backend, ForwardingBackend):
        return backend if stats_of(backend.inner) is not None else None
    return backend if isinstance(backend, ReportsStats) else None


class ForwardingBackend:
    """A backend that hands every call to ``inner``, through one hook, `_call`.

    The base of decorators (metrics, tracing, fault injection in tests): override
    `_call` and every operation passes through it, and the purge lock and statistics
    are still ``inner``'s, so wrapping never loses "one purger at a time".

    Examples:
        A decorator timing every operation of the backend it wraps:

        ```python
        import time

        from typed_session_sql import MemoryBackend, SessionStore
        from typed_session_sql.backend import ForwardingBackend

        timings: list[tuple[str, float]] = []


        class Timed(ForwardingBackend):
            async def _call(self, operation, call):
                started = time.perf_counter()
                try:
                    return await call()
                finally:
                    timings.append((operation, time.perf_counter() - started))


        store = SessionStore(dict, Timed(MemoryBackend()))  # SqlBackend.from_url(...) too
        ```
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    async def _call(self, operation: str, call: Callable[[], Awaitable[R]]) -> R:
        """Run ``call`` (the inner backend's ``operation``: "create", "read", "update",
        "touch", "delete", "list", "delete_by_principal", "purge", "clear" or "stats")."""
        return await call()

    async def create(self, id_hash: bytes, record: Record) -> bool:
        return await self._call("create", lambda: self.inner.create(id_hash, record))

    async def read(self, id_hash: bytes) -> Record | None:
        return await self._call("read", lambda: self.inner.read(id_hash))

    async def update(self, change: Update) -> UpdateOutcome:
        return await self._call("update", lambda: self.inner.update(change))

    async def touch(
        self, id_hash: bytes, version: int, expires_at: datetime, now: datetime
    ) -> bool:
        return await self._call(
            "touch", lambda: self.inner.touch(id_hash, version, expires_at, now)
        )

    async def delete(self, id_hash: bytes) -> bool:
        return await self._call("delete", lambda: self.inner.delete(id_hash))

    async def list_by_principal(
        self, principal: str, *, live_at: datetime, created_after: datetime | None, limit: int
    ) -> list[PrincipalRow]:
        return await self._call(
            "list",
            lambda: self.inner.list_by_principal(
                principal, live_at=live_at, created_after=created_after, limit=limit
            ),
        )

    async def delete_by_principal(
        self, principal: str, *, only: bytes | None = None, keep: bytes | None = None
    ) -> int:
        return await self._call(
            "delete_by_principal",
            lambda: self.inner.delete_by_principal(principal, only=only, keep=keep),
        )

    async def purge(self, now: datetime, batch_size: int) -> int:
        return await self._call("purge", lambda: self.inner.purge(now, batch_size))

    async def clear(self) -> None:
        await self._call("clear", self.inner.clear)

    def purge_lock(self) -> AbstractAsyncContextManager[bool]:
        # Not through the hook: it is a context manager, not a call, and it must be
        # inner's own lock for the guarantee to hold.
        return self.inner.purge_lock()

    async def stats(self, now: datetime) -> TableStats:
        """``inner``'s statistics (see `stats_of`); TypeError if it reports none."""
        inner = stats_of(self.inner)
        if inner is None:
            raise TypeError(f"{type(self.inner).__name__} reports no statistics")
        return await self._call("stats", lambda: inner.stats(now))

    @property
    def telemetry_attributes(self) -> Mapping[str, str]:
        """``inner``'s database attributes for spans (see `typed_session_sql.telemetry`)."""
        attributes: Mapping[str, str] = getattr(self.inner, "telemetry_attributes", {})
        return attributes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def from_backend() -> AbstractContextManager[None]:
    """Around one call of a backend: let the errors the `Backend` contract names through,
    and make anything else a `StoreUnavailableError` with it as the cause.

    The store wraps each backend call in it, and only that: the application's own code
    (``modify`` functions, hooks) runs outside, so its bugs are never taken for outages.
    """
    return _FROM_BACKEND


class _FromBackend:
    # A class, not @contextmanager: no generator per call on the request path
    # (0.2 µs instead of 1.6 µs per backend call).
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return  # done, or a cancellation: not ours to judge
        if isinstance(exc, SessionError | UnreadableRecordError):
            return
        raise StoreUnavailableError(f"the session backend failed: {describe_error(exc)}") from exc


_FROM_BACKEND = _FromBackend()
