"""PurgeScheduler on the in-memory backend, under asyncio and trio, on a hand-driven clock.

No test waits for real time: the scheduler's sleep is a :class:`SteppedSleep` that returns
only when the test steps it; ``fail_after`` only guards against a hang.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import anyio
import pytest

from tests.clock import FakeClock
from tests.purge_support import Events, FlakyBackend, SteppedSleep, StuckBackend, insert_rows, rows
from typed_session_sql import MemoryBackend, PurgeResult, PurgeScheduler, SessionStore

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

EVERY = timedelta(minutes=5)


def make_store(
    clock: FakeClock, failures: int = 0
) -> tuple[SessionStore[dict[str, int]], MemoryBackend, FlakyBackend, Events]:
    memory = MemoryBackend()
    flaky = FlakyBackend(memory, failures)
    events = Events()
    return SessionStore(dict, flaky, clock=clock, on_event=events), memory, flaky, events


class Sequence:
    """An ``rng`` returning the given values in a loop."""

    def __init__(self, *values: float) -> None:
        self.values, self.i = values, 0

    def __call__(self) -> float:
        value = self.values[self.i % len(self.values)]
        self.i += 1
        return value


async def test_passes_run_on_a_jittered_interval_and_purge_what_expired(clock: FakeClock) -> None:
    store, memory, _, events = make_store(clock)
    await insert_rows(memory, rows(clock.now, expired=5, live=3, forever=2))
    sleep = SteppedSleep(clock)
    results: list[PurgeResult] = []
    rng = Sequence(0.25, 0.0, 0.999, 0.5)
    scheduler = PurgeScheduler(
        store, every=EVERY, batch_size=2, on_pass=results.append, sleep=sleep, rng=rng
    )
    with anyio.fail_after(5):
        async with scheduler:
            await sleep.step()  # first wait: a random part of the interval, then a pass
            assert [r.removed for r in results] == [5]
            assert results[0].batches == 3  # 2 + 2 + 1
            assert len(memory.rows) == 5
            await sleep.step()  # nothing expired meanwhile (the live rows last an hour)
            await sleep.step()
            clock.advance(timedelta(hours=1))
            await sleep.step()
    first, *waits = sleep.delays
    every = EVERY.total_seconds()
    assert first == pytest.approx(0.25 * every)
    # 50% .. 150% of the interval, drawn from the rng.
    assert waits == pytest.approx([0.5 * every, 1.499 * every, 1.0 * every, 0.75 * every])
    assert [r.removed for r in results] == [5, 0, 0, 3]
    assert len(memory.rows) == 2  # the never-expiring rows stay for ever
    assert (scheduler.passes, scheduler.removed, scheduler.failures) == (4, 8, 0)
    assert events.kinds().count("purge_finished") == 4
    assert sum(e.count for e in events.seen if e.kind == "purged") == 8


async def test_keeps_going_through_failures_and_purges_once_the_backend_is_back(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store, memory, flaky, events = make_store(clock, failures=4)
    await insert_rows(memory, rows(clock.now, expired=7, live=1))
    sleep = SteppedSleep(clock)
    scheduler = PurgeScheduler(
        store,
        every=timedelta(minutes=1),
        first_delay=timedelta(0),
        retry_after=timedelta(seconds=5),
        sleep=sleep,
        rng=lambda: 0.5,  # no jitter: the backoff shows as is
    )
    caplog.set_level(logging.WARNING, logger="typed_session_sql")
    with anyio.fail_after(5):
        async with scheduler:
            await sleep.asleep()
            for _ in range(4):
                await sleep.step()
            assert len(memory.rows) == 8  # still failing: nothing purged, still running
            await sleep.step()  # the backend is back
            assert len(memory.rows) == 1
    # first pass at once; backoff 5, 10, 20, 40 (capped at `every`), back to the interval
    assert sleep.delays == [0, 5, 10, 20, 40, 60]
    assert flaky.purge_calls == 4 + 1
    assert (scheduler.failures, scheduler.passes, scheduler.removed) == (4, 1, 7)
    assert events.kinds().count("purge_failed") == 4
    # The same events as store.purge_expired's failing pass: one pass, one assembly.
    assert events.kinds().count("store_unavailable") == 4
    failures = [r for r in caplog.records if "purge pass failed" in r.getMessage()]
    assert len(failures) == 4
    assert "StoreUnavailableError" in failures[0].getMessage()


async def test_backoff_never_exceeds_the_interval(clock: FakeClock) -> None:
    store, _, _, _ = make_store(clock, failures=10)
    sleep = SteppedSleep(clock)
    scheduler = PurgeScheduler(
        store, every=timedelta(seconds=30), first_delay=timedelta(0), sleep=sleep, rng=lambda: 0.5
    )
    with anyio.fail_after(5):
        async with scheduler:
            for _ in range(6):
                await sleep.step()
    assert sleep.delays == [0, 5, 10, 20, 30, 30, 30]


async def test_stop_during_a_batch_returns_promptly_and_leaves_rows_whole(
    clock: FakeClock,
) -> None:
    memory = MemoryBackend()
    await insert_rows(memory, rows(clock.now, expired=3))
    stuck = StuckBackend(memory)
    store = SessionStore(dict, stuck, clock=clock)
    with anyio.fail_after(5):
        async with PurgeScheduler(store, first_delay=timedelta(0)) as scheduler:
            await stuck.entered.wait()  # a batch statement is running (and never ends)
        # leaving the block cancelled it: we are here, and the scheduler is stopped
    assert (scheduler.passes, scheduler.failures) == (0, 0)
    assert len(memory.rows) == 3


async def test_passes_never_overlap_even_when_a_pass_outlasts_the_interval(
    clock: FakeClock,
) -> None:
    store, memory, flaky, _ = make_store(clock)
    flaky.checkpoints_per_batch = 20  # each batch yields to the loop many times
    sleep = SteppedSleep(clock)
    scheduler = PurgeScheduler(
        store, every=timedelta(seconds=1), batch_size=10, first_delay=timedelta(0), sleep=sleep
    )
    with anyio.fail_after(5):
        async with scheduler:
            for _ in range(5):
                await insert_rows(memory, rows(clock.now, expired=35))
                await sleep.step()
    assert flaky.max_in_flight == 1
    assert scheduler.passes == 5


async def test_an_error_in_the_block_propagates_and_stops_the_scheduler(clock: FakeClock) -> None:
    store, _, _, _ = make_store(clock)
    sleep = SteppedSleep(clock)
    scheduler = PurgeScheduler(store, sleep=sleep)

    async def fail_inside() -> None:
        async with scheduler:
            await sleep.asleep()
            raise KeyError("boom")

    with anyio.fail_after(5), pytest.raises(KeyError):  # as is, not in an exception group
        await fail_inside()
    # it can be entered again once stopped, but not twice at once
    with anyio.fail_after(5):
        async with scheduler:
            with pytest.raises(RuntimeError, match="already running"):
                await scheduler.__aenter__()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"every": timedelta(0)},
        {"batch_size": 0},
        {"jitter": 1.0},
        {"retry_after": timedelta(0)},
        {"first_delay": timedelta(seconds=-1)},
        {"pause": timedelta(seconds=-1)},
    ],
)
async def test_rejects_nonsense_settings(clock: FakeClock, kwargs: dict[str, object]) -> None:
    store, _, _, _ = make_store(clock)
    with pytest.raises(ValueError, match="must"):
        PurgeScheduler(store, **kwargs)  # type: ignore[arg-type]


async def test_pause_between_batches_but_not_after_the_last(clock: FakeClock) -> None:
    store, memory, _, _ = make_store(clock)
    await insert_rows(memory, rows(clock.now, expired=25))
    sleep = SteppedSleep(clock)
    scheduler = PurgeScheduler(
        store,
        every=EVERY,
        batch_size=10,
        first_delay=timedelta(0),
        pause=timedelta(milliseconds=250),
        sleep=sleep,
        rng=lambda: 0.5,
    )
    with anyio.fail_after(5):
        async with scheduler:
            await sleep.step()  # batch 1, then the pause
            assert len(memory.rows) == 15
            await sleep.step()  # batch 2, pause
            await sleep.step()  # batch 3 (short): the pass ends, the interval starts
            assert len(memory.rows) == 0
    assert sleep.delays == [0, 0.25, 0.25, EVERY.total_seconds()]
    assert scheduler.passes == 1
