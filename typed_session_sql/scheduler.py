"""Purge passes in the background, for as long as an ``async with`` block runs.

Meant for an ASGI lifespan: each instance of the application may run one, and the
backend's purge lock (`typed_session_sql.backend.Backend.purge_lock`) lets only one
of them work at a time. The interval is jittered so a fleet restarted at once does not
purge at once; a failing database is logged and retried with backoff, never ending the
loop; leaving the block stops the scheduler promptly, mid-batch if need be (a batch is one
statement).

It also tells when the purge falls behind (`PurgeScheduler.behind`). A pass deletes what
expired between the previous pass's cutoff and its own, so if it takes longer than that
span, rows expire faster than it deletes them, and the next pass has more to do than this
one: the expired rows grow from pass to pass. That costs no query (two clock readings per
pass). After `BEHIND_AFTER` such passes in a row the scheduler logs one WARNING and sets
the ``typed_session.purge.behind`` gauge to 1; the first pass that keeps up again logs
that it caught up and sets it to 0, so a purge that falls behind anew warns anew.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio

from typed_session_sql import telemetry
from typed_session_sql.errors import describe_error
from typed_session_sql.events import logger
from typed_session_sql.pacing import DEFAULT_PACING, PurgePacing
from typed_session_sql.purge import BatchHook, PurgeResult, Sleep
from typed_session_sql.telemetry import measure_table

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from typed_session_sql.store import SessionStore

__all__ = ["BEHIND_AFTER", "PurgeScheduler"]

BEHIND_AFTER = 2
"""Passes in a row that took longer than the span they purged before the scheduler reports
that it falls behind (one slow pass may be a hiccup; two are a trend)."""


class PurgeScheduler:
    """Runs purge passes in the background while the ``async with`` block runs.

    Args:
        store: the store whose expired sessions to delete.
        every: the mean interval between the end of one pass and the start of the next.
        batch_size: rows per batch (one statement each); given, the passes are unpaced.
        jitter: each wait is ``every`` times a random factor in ``[1 - jitter, 1 + jitter]``
            (50-150% by default), so instances started together drift apart.
        first_delay: the wait before the first pass; by default a random part of ``every``
            (so a fleet restarted at once does not purge at once). ``timedelta(0)`` runs a
            pass at once.
        retry_after: the first wait after a failed pass; it doubles with every further
            failure in a row, up to ``every``, with the same jitter.
        on_pass: called with each pass's `PurgeResult` (for metrics).
        on_batch: called after each batch with its `PurgeProgress`.
        pause: a wait between two batches of a pass, leaving the database to live
            traffic; given, the passes are unpaced (``timedelta(0)`` and no ``batch_size``:
            1,000-row batches back to back).
        pacing: how the passes size their batches and pause between them (see
            `typed_session_sql.pacing`) when neither ``batch_size`` nor ``pause`` is given;
            None runs unpaced passes.
        measure_table: count the table after each pass (one more query) for the
            OpenTelemetry gauges of live and expired sessions and purge lag
            (`typed_session_sql.telemetry.measure_table`).
        sleep: how to wait a number of seconds; tests inject one that moves a fake clock.
        rng: returns floats in [0, 1) for the jitter.

    Passes never overlap: one task runs them one after the other. A failing pass is logged
    (on the ``typed_session_sql`` logger, without secrets) and retried after a backoff;
    the scheduler only stops when the block exits, which cancels a running batch at once
    (a batch is one statement, so nothing is half done).

    Examples:
        In the lifespan of the application (here Starlette's; FastAPI's and Litestar's are
        the same), so every instance runs one and they take turns:

        ```python
        from collections.abc import AsyncIterator
        from contextlib import asynccontextmanager
        from dataclasses import dataclass, field
        from datetime import timedelta

        from starlette.applications import Starlette

        from typed_session_sql import PurgeScheduler, SessionStore, SqlBackend


        @dataclass
        class Cart:
            items: list[int] = field(default_factory=list)


        backend = SqlBackend.from_url()  # $TYPED_SESSION_SQL_URL
        store = SessionStore(Cart, backend)


        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await backend.migrate()
            async with PurgeScheduler(store, every=timedelta(minutes=5)):
                yield  # serve requests; leaving the block stops the scheduler
            await backend.dispose()


        app = Starlette(lifespan=lifespan)
        ```

        Each pass's `PurgeResult` goes to `on_pass`, for metrics; `first_delay=timedelta(0)`
        runs the first pass at once:

        ```python
        import asyncio

        from typed_session_sql import PurgeResult


        async def main() -> None:
            await backend.migrate()
            passed = asyncio.Event()

            def on_pass(result: PurgeResult) -> None:
                print(f"purged {result.removed} sessions in {result.seconds:.3f} s")
                passed.set()

            async with PurgeScheduler(store, first_delay=timedelta(0), on_pass=on_pass):
                await passed.wait()
            await backend.dispose()


        asyncio.run(main())
        ```
    """

    def __init__(
        self,
        store: SessionStore[Any],
        every: timedelta = timedelta(minutes=5),
        batch_size: int | None = None,
        *,
        jitter: float = 0.5,
        first_delay: timedelta | None = None,
        retry_after: timedelta = timedelta(seconds=5),
        on_pass: Callable[[PurgeResult], None] | None = None,
        on_batch: BatchHook | None = None,
        pause: timedelta | None = None,
        pacing: PurgePacing | None = DEFAULT_PACING,
        sleep: Sleep = anyio.sleep,
        rng: Callable[[], float] = random.random,
        measure_table: bool = False,
    ) -> None:
        if every <= timedelta(0):
            raise ValueError("every must be positive")
        if batch_size is not None and batch_size <= 0:
            raise ValueError("batch_size must be positive")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if retry_after <= timedelta(0):
            raise ValueError("retry_after must be positive")
        if first_delay is not None and first_delay < timedelta(0):
            raise ValueError("first_delay must not be negative")
        if pause is not None and pause < timedelta(0):
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
        self.pacing = pacing
        self._sleep = sleep
        self._rng = rng
        self.measure_table = measure_table
        self._task_group: TaskGroup | None = None
        self.passes = 0
        """Passes that completed (skipped ones included)."""
        self.failures = 0
        """Passes that failed, in total."""
        self.removed = 0
        """Rows removed by all passes."""
        self.last_result: PurgeResult | None = None
        self.behind = False
        """Whether the purge falls behind: `BEHIND_AFTER` passes in a row took longer than
        the span of expiries each one purged (see the module docstring)."""
        self._slow_passes = 0  # passes in a row that took longer than the span they purged
        self._previous_cutoff: datetime | None = None

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
                store = self.store
                result = await store.purge_expired_pass(
                    self.batch_size,
                    on_batch=self.on_batch,
                    pause=None if self.pause is None else self.pause.total_seconds(),
                    pacing=self.pacing,
                    sleep=self._sleep,
                )
                if not result.skipped and result.cutoff is not None:
                    self._judge_pace(result.cutoff, store.now())
                if self.measure_table:
                    await measure_table(store.backend, store.now())
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

    def _judge_pace(self, cutoff: datetime, finished: datetime) -> None:
        """Note whether the pass that purged up to ``cutoff`` and ended at ``finished`` kept
        up with the expiries; report a change of `behind`."""
        previous, self._previous_cutoff = self._previous_cutoff, cutoff
        if previous is None:
            return  # the first pass purged a backlog of unknown age: nothing to judge by
        purged_span, took = cutoff - previous, finished - cutoff
        if took > purged_span:
            self._slow_passes += 1
        else:
            self._slow_passes = 0
        behind = self._slow_passes >= BEHIND_AFTER
        if behind and not self.behind:
            logger.warning(
                "the purge falls behind: its last %d passes each took longer than the span "
                "of expiries it purged (the last: %.1f s for %.1f s), so expired sessions "
                "pile up; give it more time (a faster pacing, pacing=None) or the database "
                "more room",
                self._slow_passes,
                took.total_seconds(),
                purged_span.total_seconds(),
            )
        elif self.behind and not behind:
            logger.info("the purge keeps up again")
        self.behind = behind
        telemetry.purge_behind(self.store.backend, behind)

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
