"""Expired-session cleanup: one purge pass, and a scheduler that runs passes for ever.

A *pass* deletes the rows whose expiry is at or before the store's clock at the start of
the pass, in batches of ``batch_size`` rows. Each batch is one backend call (one short
statement on SQL backends, with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so no lock is
held for long, live traffic keeps flowing between batches, and a cancelled pass leaves
nothing half done. The pass ends with the first batch that comes back short.

Only one purger works at a time across every instance of the application: on PostgreSQL
a pass first takes a session-level advisory lock (``pg_try_advisory_lock``) on a
connection of its own and holds it until the pass ends. A purger that cannot take it
skips the pass at once instead of queueing behind the other one, so N instances never
pile up on the same rows. SQLite is a single-host database whose writers are already
serialised by its file lock, so no extra lock is taken there.

:class:`PurgeScheduler` runs passes in the background (e.g. in an ASGI lifespan), with
jitter on its interval, backoff after errors, and a prompt, clean stop.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.lowlevel
from blake3 import blake3

from typed_session_sql.backend import Backend
from typed_session_sql.errors import StoreUnavailableError
from typed_session_sql.events import EventKind, emit, logger

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from typed_session_sql.store import SessionStore

__all__ = ["PurgeProgress", "PurgeResult", "PurgeScheduler", "pass_lock", "purge_pass"]


@dataclass(frozen=True, slots=True)
class PurgeProgress:
    """Where a pass stands after one batch."""

    batch: int
    """How many batches have run in this pass, this one included (1-based)."""
    removed: int
    """Rows this batch removed."""
    total: int
    """Rows the pass has removed so far."""
    seconds: float
    """Time since the pass started."""

    @property
    def rate(self) -> float:
        """Rows removed per second so far."""
        return self.total / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """What one pass did."""

    removed: int
    batches: int
    seconds: float
    skipped: bool = False
    """True if another purger held the lock, so this pass did nothing."""

    @property
    def rate(self) -> float:
        """Rows removed per second."""
        return self.removed / self.seconds if self.seconds > 0 else 0.0


BatchHook = Callable[[PurgeProgress], None]
Sleep = Callable[[float], Awaitable[None]]


async def purge_pass(
    store: SessionStore[Any],
    batch_size: int = 1000,
    *,
    on_batch: BatchHook | None = None,
    exclusive: bool = True,
    pause: float = 0.0,
    sleep: Sleep = anyio.sleep,
) -> PurgeResult:
    """Run one purge pass over ``store``'s backend; see the module docstring.

    ``on_batch`` is called after every batch (for progress output). With ``exclusive``
    (the default) the pass takes the cross-instance purge lock where the backend has one
    and returns a skipped result if another purger holds it. ``pause`` seconds are waited
    (with ``sleep``) between two batches, leaving the database to live traffic meanwhile,
    at the cost of a longer pass. Emits ``PURGED`` per batch, then ``PURGE_FINISHED``,
    ``PURGE_SKIPPED`` or ``PURGE_FAILED``.

    Raises :class:`StoreUnavailableError` (or the backend's error) if a batch fails;
    the batches before it stay done.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    started = time.perf_counter()
    cutoff = store.now()  # one cutoff for the whole pass, so a pass always ends
    total = batches = 0
    try:
        async with pass_lock(store.backend) if exclusive else _unlocked() as acquired:
            if not acquired:
                emit(store.on_event, EventKind.PURGE_SKIPPED, "another purger holds the lock")
                return PurgeResult(0, 0, time.perf_counter() - started, skipped=True)
            while True:
                removed = await store.backend.purge(cutoff, batch_size)
                batches += 1
                total += removed
                if removed:
                    emit(store.on_event, EventKind.PURGED, count=removed)
                if on_batch is not None:
                    on_batch(PurgeProgress(batches, removed, total, time.perf_counter() - started))
                if removed < batch_size:
                    break
                if pause > 0:
                    await sleep(pause)
                else:
                    # A checkpoint: even a backend that never awaits (memory) lets other
                    # tasks run and a cancellation land between two batches.
                    await anyio.lowlevel.checkpoint()
    except Exception as error:
        emit(
            store.on_event,
            EventKind.PURGE_FAILED,
            f"{describe_error(error)} after {total} rows in {batches} batch(es)",
            count=total,
        )
        raise
    seconds = time.perf_counter() - started
    emit(
        store.on_event,
        EventKind.PURGE_FINISHED,
        f"{total} rows in {batches} batch(es), {seconds:.3f} s",
        count=total,
    )
    return PurgeResult(total, batches, seconds)


def describe_error(error: BaseException) -> str:
    """The error's type and the first line of its message (and of its cause's), short.

    SQLAlchemy puts the statement and its parameters on later lines; first lines name
    the failure without them. Session ids never reach a purge statement anyway.
    """
    text = f"{type(error).__name__}: {_first_line(error)}"
    cause = error.__cause__
    if cause is not None:
        text += f" ({type(cause).__name__}: {_first_line(cause)})"
    return text


def _first_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return lines[0][:200] if lines else ""


@asynccontextmanager
async def _unlocked() -> AsyncIterator[bool]:
    yield True


def lock_key(table_name: str) -> int:
    """The advisory-lock key (a signed 64-bit int) for purging ``table_name``."""
    digest = blake3(f"typed_session_sql purge {table_name}".encode()).digest(8)
    return int.from_bytes(digest, "big", signed=True)


@asynccontextmanager
async def pass_lock(backend: Backend) -> AsyncIterator[bool]:
    """Hold the cross-instance purge lock for ``backend``'s table; yield whether we got it.

    On PostgreSQL: ``pg_try_advisory_lock`` on a dedicated autocommit connection, so the
    lock lives exactly as long as the pass (a crashed purger's lock dies with its
    connection) and no transaction stays open meanwhile. Elsewhere (SQLite, memory): always
    yields True. Needs a session-pooling connection path: behind PgBouncer in transaction
    mode a session-level advisory lock is not reliable.
    """
    engine, table = getattr(backend, "engine", None), getattr(backend, "table", None)
    if engine is None or table is None or engine.dialect.name != "postgresql":
        yield True
        return
    from sqlalchemy import text  # only SQL backends get here

    key = lock_key(str(table.fullname))
    try:
        conn = await engine.connect()
    except Exception as error:
        raise StoreUnavailableError("could not take the purge lock") from error
    got = released = False
    try:
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            lock = text("SELECT pg_try_advisory_lock(:k)")
            got = bool((await conn.execute(lock, {"k": key})).scalar())
        except Exception as error:
            raise StoreUnavailableError("could not take the purge lock") from error
        released = not got
        yield got
    finally:
        with anyio.CancelScope(shield=True):
            if got:
                with anyio.move_on_after(10):
                    try:
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        released = True
                    except Exception:
                        logger.debug("could not release the purge lock", exc_info=True)
            if not released:
                # Never hand a connection that may hold the lock back to the pool (a failure
                # or a cancellation while taking it, or an unlock that failed): closing it
                # ends its database session, which releases the lock.
                await conn.invalidate()
            await conn.close()


class PurgeScheduler:
    """Runs purge passes in the background while the ``async with`` block runs.

    ::

        async with PurgeScheduler(store, every=timedelta(minutes=5)):
            ...  # serve requests

    Args:
        store: the store whose expired sessions to delete.
        every: the mean interval between the end of one pass and the start of the next.
        batch_size: rows per batch (one statement each).
        jitter: each wait is ``every`` times a random factor in ``[1 - jitter, 1 + jitter]``
            (50-150% by default), so instances started together drift apart.
        first_delay: the wait before the first pass; by default a random part of ``every``
            (so a fleet restarted at once does not purge at once). ``timedelta(0)`` runs a
            pass at once.
        retry_after: the first wait after a failed pass; it doubles with every further
            failure in a row, up to ``every``, with the same jitter.
        on_pass: called with each pass's :class:`PurgeResult` (for metrics).
        on_batch: called after each batch with its :class:`PurgeProgress`.
        pause: a wait between two batches of a pass, leaving the database to live
            traffic; 0 (the default) runs the batches back to back.
        sleep: how to wait a number of seconds; tests inject one that moves a fake clock.
        rng: returns floats in [0, 1) for the jitter.

    Passes never overlap: one task runs them one after the other. A failing pass is logged
    (on the ``typed_session_sql`` logger, without secrets) and retried after a backoff;
    the scheduler only stops when the block exits, which cancels a running batch at once
    (a batch is one statement, so nothing is half done).
    """

    def __init__(
        self,
        store: SessionStore[Any],
        every: timedelta = timedelta(minutes=5),
        batch_size: int = 1000,
        *,
        jitter: float = 0.5,
        first_delay: timedelta | None = None,
        retry_after: timedelta = timedelta(seconds=5),
        on_pass: Callable[[PurgeResult], None] | None = None,
        on_batch: BatchHook | None = None,
        pause: timedelta = timedelta(0),
        sleep: Sleep = anyio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if every <= timedelta(0):
            raise ValueError("every must be positive")
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if retry_after <= timedelta(0):
            raise ValueError("retry_after must be positive")
        if first_delay is not None and first_delay < timedelta(0):
            raise ValueError("first_delay must not be negative")
        if pause < timedelta(0):
            raise ValueError("pause must not be negative")
        self.store = store
        self.every = every
        self.batch_size = batch_size
        self.jitter = jitter
        self.first_delay = first_delay
        self.retry_after = retry_after
        self.on_pass = on_pass
        self.on_batch = on_batch
        self.pause = pause
        self._sleep = sleep
        self._rng = rng
        self._task_group: TaskGroup | None = None
        self.passes = 0
        """Passes that completed (skipped ones included)."""
        self.failures = 0
        """Passes that failed, in total."""
        self.removed = 0
        """Rows removed by all passes."""
        self.last_result: PurgeResult | None = None

    def _jittered(self, seconds: float) -> float:
        return seconds * (1 - self.jitter + 2 * self.jitter * self._rng())

    def _retry_delay(self, failures_in_a_row: int) -> float:
        every = self.every.total_seconds()
        base = self.retry_after.total_seconds() * 2 ** min(failures_in_a_row - 1, 32)
        return self._jittered(min(every, base))

    async def run(self) -> None:
        """Run passes until cancelled (what ``async with`` does in a background task)."""
        if self.first_delay is None:
            delay = self._rng() * self.every.total_seconds()
        else:
            delay = self.first_delay.total_seconds()
        failures_in_a_row = 0
        while True:
            await self._sleep(delay)
            try:
                result = await purge_pass(
                    self.store,
                    self.batch_size,
                    on_batch=self.on_batch,
                    pause=self.pause.total_seconds(),
                    sleep=self._sleep,
                )
            except Exception as error:
                failures_in_a_row += 1
                self.failures += 1
                delay = self._retry_delay(failures_in_a_row)
                logger.warning(
                    "purge pass failed (%s); retrying in %.1f s (%d failure(s) in a row)",
                    describe_error(error),
                    delay,
                    failures_in_a_row,
                )
                logger.debug("purge pass failure", exc_info=True)
                continue
            failures_in_a_row = 0
            self.passes += 1
            self.removed += result.removed
            self.last_result = result
            if self.on_pass is not None:
                try:
                    self.on_pass(result)
                except Exception:
                    logger.exception("purge on_pass hook failed")
            delay = self._jittered(self.every.total_seconds())

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("this PurgeScheduler is already running")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        task_group.start_soon(self.run, name="typed_session_sql purge scheduler")
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        task_group, self._task_group = self._task_group, None
        assert task_group is not None
        task_group.cancel_scope.cancel()
        # The block's own exception (if any) propagates as is, not inside an exception
        # group: the background task never raises, so it has nothing to add.
        await task_group.__aexit__(None, None, None)
        return None

    def __repr__(self) -> str:
        return f"PurgeScheduler(every={self.every!r}, batch_size={self.batch_size})"


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


async def table_stats(backend: Any, now: datetime) -> TableStats:
    """Count ``backend``'s rows (an :class:`SqlBackend`: it needs ``engine`` and ``table``).

    One aggregate statement for the counts; the size comes from ``pg_total_relation_size``
    (table, indexes and TOAST) on PostgreSQL and from the ``dbstat`` table on SQLite, or the
    whole database file where SQLite was built without it.
    """
    from sqlalchemy import case, func, select, text

    engine, table = backend.engine, backend.table
    c = table.c
    counts = select(
        func.count(),
        func.count(case((c.expires_at <= now, 1))),
        func.count(case((c.expires_at.is_(None), 1))),
        func.min(c.expires_at),
    ).select_from(table)
    size: int | None = None
    size_of = "unknown"
    async with engine.connect() as conn:
        total, expired, never, oldest = (await conn.execute(counts)).one()
        dialect = engine.dialect.name
        if dialect == "postgresql":
            name = engine.dialect.identifier_preparer.format_table(table)
            query = text("SELECT pg_total_relation_size(CAST(:t AS regclass))")
            size, size_of = (await conn.execute(query, {"t": name})).scalar(), "table + indexes"
        elif dialect == "sqlite":
            try:
                query = text(
                    "SELECT SUM(pgsize) FROM dbstat WHERE name = :t OR name IN "
                    "(SELECT name FROM sqlite_master WHERE tbl_name = :t)"
                )
                size, size_of = (
                    (await conn.execute(query, {"t": table.name})).scalar(),
                    "table + indexes",
                )
            except Exception:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
                pages = (await conn.execute(text("PRAGMA page_count"))).scalar()
                page_size = (await conn.execute(text("PRAGMA page_size"))).scalar()
                size, size_of = int(pages) * int(page_size), "whole database file"
    return TableStats(
        live=int(total) - int(expired),
        never_expire=int(never),
        expired=int(expired),
        oldest_expiry=oldest,
        size_bytes=int(size) if size is not None else None,
        size_of=size_of,
    )
