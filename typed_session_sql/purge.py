"""Expired-session cleanup: one purge pass, and a scheduler that runs passes for ever.

A *pass* deletes the rows whose expiry is at or before the store's clock at the start of
the pass, in batches. Each batch is one backend call (one short statement on SQL backends,
with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so no lock is held for long, live traffic
keeps flowing between batches, and a cancelled pass leaves nothing half done. The pass ends
with the first batch that comes back short. By default the pass paces itself
(`typed_session_sql.pacing`): each batch's size and the pause after it follow from what the
batches before cost, so that live traffic hardly notices the purge.

Only one purger works at a time across every instance of the application, under the
backend's purge lock (`Backend.purge_lock`, which every backend has and a
`ForwardingBackend` keeps): on PostgreSQL a pass first opens a transaction on a
connection of its own, takes an advisory lock in it (``pg_try_advisory_xact_lock``) and
holds both until the pass ends; on MySQL and MariaDB it holds a ``GET_LOCK`` named for
the database and table. A purger that cannot take it skips the pass at once instead of
queueing behind the other one, so N instances never pile up on the same rows. SQLite is a
single-host database whose writers are already serialised by its file lock, so its lock
is always free, as is the memory backend's.

`PurgeScheduler` runs passes in the background (e.g.
in an ASGI lifespan); `typed_session_sql.backend.stats_of` tells what a table holds.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import anyio
import anyio.lowlevel

from typed_session_sql import telemetry
from typed_session_sql.backend import Backend, from_backend
from typed_session_sql.errors import describe_error
from typed_session_sql.events import EventHook, EventKind, emit
from typed_session_sql.pacing import DEFAULT_PACING, Pacer, PurgePacing

__all__ = ["UNPACED_BATCH_SIZE", "BatchHook", "PurgeProgress", "PurgeResult", "purge_pass"]


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
    cutoff: datetime | None = None
    """The expiry at or before which the pass deleted (the store's clock at its start)."""

    @property
    def rate(self) -> float:
        """Rows removed per second."""
        return self.removed / self.seconds if self.seconds > 0 else 0.0


BatchHook = Callable[[PurgeProgress], None]
Sleep = Callable[[float], Awaitable[None]]


UNPACED_BATCH_SIZE = 1000
"""The batch size of an unpaced pass that is given none."""


async def purge_pass(
    backend: Backend,
    cutoff: datetime,
    batch_size: int | None = None,
    *,
    on_event: EventHook | None = None,
    on_batch: BatchHook | None = None,
    exclusive: bool = True,
    pause: float | None = None,
    pacing: PurgePacing | None = DEFAULT_PACING,
    sleep: Sleep = anyio.sleep,
    clock: Callable[[], float] = time.perf_counter,
) -> PurgeResult:
    """Run one purge pass over ``backend``: delete the rows expired at ``cutoff`` (the
    store's clock at the start of the pass; one cutoff for the whole pass, so a pass always
    ends). See the module docstring. Events go to ``on_event``.

    By default the pass is paced (`typed_session_sql.pacing`): it sizes each batch and the
    pause after it from what the batches before cost, so live traffic hardly notices it
    while an idle database is purged nearly flat out. ``pacing`` sets the policy; ``None``
    runs the batches back to back, ``UNPACED_BATCH_SIZE`` rows each, as an explicit
    ``batch_size`` and ``pause`` (either one; the other then defaults to 1000 rows or no
    pause) also do.

    ``on_batch`` is called after every batch (for progress output). With ``exclusive``
    (the default) the pass takes the backend's cross-instance purge lock and returns a
    skipped result if another purger holds it. ``pause`` seconds are waited (with
    ``sleep``) between two batches, leaving the database to live traffic meanwhile, at the
    cost of a longer pass. ``clock`` (monotonic seconds) times the batches. Emits
    ``PURGED`` per batch, then ``PURGE_FINISHED``, ``PURGE_SKIPPED`` or ``PURGE_FAILED``.

    Raises `StoreUnavailableError` (or the backend's error) if a batch fails;
    the batches before it stay done.
    """
    if batch_size is not None and batch_size <= 0:
        raise ValueError("batch_size must be positive")
    if pause is not None and not pause >= 0:
        raise ValueError("pause must not be negative")
    if pacing is None or batch_size is not None or pause is not None:
        # Explicit settings run the pass as before pacing existed: fixed size and pause.
        pacer = Pacer(
            DEFAULT_PACING,
            batch_size=UNPACED_BATCH_SIZE if batch_size is None else batch_size,
            pause=0.0 if pause is None else pause,
        )
    else:
        pacer = Pacer(pacing)
    started = clock()
    total = batches = 0
    try:
        with telemetry.operation("purge", backend) as measured:
            async with backend.purge_lock() if exclusive else _unlocked() as acquired:
                if not acquired:
                    emit(on_event, EventKind.PURGE_SKIPPED, "another purger holds the lock")
                    measured.outcome = "skipped"
                    return PurgeResult(0, 0, clock() - started, skipped=True, cutoff=cutoff)
                while True:
                    asked = pacer.batch_size
                    batch_started = clock()
                    with telemetry.operation("purge_batch", backend), from_backend():
                        removed = await backend.purge(cutoff, asked)
                    batch_seconds = clock() - batch_started
                    telemetry.purged(removed)
                    batches += 1
                    total += removed
                    if removed:
                        emit(on_event, EventKind.PURGED, count=removed)
                    if on_batch is not None:
                        on_batch(PurgeProgress(batches, removed, total, clock() - started))
                    if removed < asked:
                        break
                    wait = pacer.after_batch(removed, batch_seconds)
                    if wait > 0:
                        await sleep(wait)
                    else:
                        # A checkpoint: even a backend that never awaits (memory) lets other
                        # tasks run and a cancellation land between two batches.
                        await anyio.lowlevel.checkpoint()
    except Exception as error:
        emit(
            on_event,
            EventKind.PURGE_FAILED,
            f"{describe_error(error)} after {total} rows in {batches} batch(es)",
            count=total,
        )
        raise
    seconds = clock() - started
    emit(
        on_event,
        EventKind.PURGE_FINISHED,
        f"{total} rows in {batches} batch(es), {seconds:.3f} s",
        count=total,
    )
    return PurgeResult(total, batches, seconds, cutoff=cutoff)


@asynccontextmanager
async def _unlocked() -> AsyncIterator[bool]:
    yield True
