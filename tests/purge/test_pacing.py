"""The purge's pacing: the batch sizes and pauses a paced pass chooses for given batch costs.

No database and no real time: the backend is the in-memory one behind `Costly`, which
moves a fake monotonic clock by what each batch is made to cost, and the pass's ``sleep``
only records the pauses (and moves the same clock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.purge_support import insert_rows, rows
from typed_session_sql import MemoryBackend, PurgeScheduler, SessionStore
from typed_session_sql.pacing import DEFAULT_PACING, Pacer, PurgePacing
from typed_session_sql.purge import UNPACED_BATCH_SIZE, purge_pass

pytestmark = pytest.mark.anyio

Cost = Callable[[int, int], float]
"""Seconds a batch costs, given its number (1-based) and the rows it removed."""


class Monotonic:
    """A fake ``time.perf_counter``."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Costly(RecordingBackend):
    """Purges in memory, moving ``monotonic`` by ``cost(batch, removed)`` per batch."""

    def __init__(self, inner: MemoryBackend, monotonic: Monotonic, cost: Cost) -> None:
        super().__init__(inner)
        self.monotonic, self.cost = monotonic, cost
        self.asked: list[int] = []
        self.costs: list[float] = []

    async def purge(self, now: datetime, batch_size: int) -> int:
        self.asked.append(batch_size)
        removed = await self.inner.purge(now, batch_size)
        self.costs.append(self.cost(len(self.asked), removed))
        self.monotonic.now += self.costs[-1]
        return removed


class Pauses:
    """A ``sleep`` that records each pause and moves the fake clock by it."""

    def __init__(self, monotonic: Monotonic) -> None:
        self.monotonic = monotonic
        self.seen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)
        self.monotonic.now += seconds


async def paced_pass(
    clock: FakeClock, expired: int, cost: Cost, **options: object
) -> tuple[Costly, Pauses, int]:
    memory = MemoryBackend()
    await insert_rows(memory, rows(clock.now, expired=expired))
    monotonic = Monotonic()
    backend = Costly(memory, monotonic, cost)
    pauses = Pauses(monotonic)
    result = await purge_pass(
        backend,
        clock(),
        sleep=pauses,
        clock=monotonic,
        **options,  # type: ignore[arg-type]
    )
    assert result.removed == expired
    assert not memory.rows
    return backend, pauses, result.batches


def per_row(seconds: float) -> Cost:
    return lambda batch, removed: removed * seconds


async def test_an_idle_database_gets_batches_sized_to_the_target_and_short_pauses(
    clock: FakeClock,
) -> None:
    # 10 µs a row: 2,000 rows make the 20 ms batch the pacing aims at.
    backend, pauses, _ = await paced_pass(clock, 8_500, per_row(10e-6))
    assert DEFAULT_PACING.first_batch_size == 1_000
    assert backend.asked == [1_000, 2_000, 2_000, 2_000, 2_000]
    # The duty cycle: 90% working, so a pause of a ninth of the batch before it.
    assert pauses.seen == pytest.approx([0.01 / 9, 0.02 / 9, 0.02 / 9, 0.02 / 9])


async def test_batch_size_moves_at_most_twofold_and_stays_within_bounds(clock: FakeClock) -> None:
    # Very cheap rows: the size doubles batch by batch up to the maximum.
    fast, _, _ = await paced_pass(clock, 40_000, per_row(1e-8))
    assert fast.asked[:5] == [1_000, 2_000, 4_000, 8_000, 10_000]
    # Very dear rows (1 ms each): halved batch by batch down to the minimum.
    slow, _, _ = await paced_pass(clock, 2_000, per_row(1e-3))
    assert slow.asked[:5] == [1_000, 500, 250, 125, 100]
    assert set(slow.asked[4:]) == {100}


async def test_a_contended_database_gets_growing_pauses_that_shrink_once_it_is_idle(
    clock: FakeClock,
) -> None:
    idle, busy = 10e-6, 40e-6  # live traffic makes each row cost four times as much

    def cost(batch: int, removed: int) -> float:
        return removed * (busy if 3 <= batch <= 6 else idle)

    backend, pauses, _ = await paced_pass(clock, 40_000, cost)
    # The pause is the duty cycle's (a ninth of the batch before it) times a factor that
    # doubles from batch 3 (the first contended one) with each contended batch; idle again,
    # the smoothed cost (half the newest batch, half the cost before) still looks contended
    # for two batches, then the factor shrinks fourfold (`recovery`) with every idle batch
    # back to 1.
    factors = [pause / cost * 9 for pause, cost in zip(pauses.seen, backend.costs, strict=False)]
    assert factors[:11] == pytest.approx([1, 1, 2, 4, 8, 16, 32, 64, 16, 4, 1])
    assert factors[11:] == pytest.approx([1] * len(factors[11:]))
    # The batches stay sized at the idle cost (the cheapest tenth of the batches so far):
    # 2,000 rows of 10 µs make 20 ms.
    assert backend.asked[0] == 1_000
    assert set(backend.asked[1:]) == {2_000}


async def test_one_lucky_batch_is_no_baseline(clock: FakeClock) -> None:
    def cost(batch: int, removed: int) -> float:
        return removed * (2e-6 if batch == 15 else 10e-6)  # batch 15 found its pages cached

    backend, pauses, _ = await paced_pass(clock, 60_000, cost)
    factors = [pause / cost * 9 for pause, cost in zip(pauses.seen, backend.costs, strict=False)]
    assert len(factors) > 20
    assert factors == pytest.approx([1] * len(factors))  # no batch after it looked contended


async def test_noise_does_not_ratchet_the_pause_up(clock: FakeClock) -> None:
    # Two batches of three cost twice as much. Were the pause to shrink by what it grows
    # by, it would double twice and halve once per three batches, up to max_pause.
    def cost(batch: int, removed: int) -> float:
        return removed * (20e-6 if batch % 3 != 1 else 10e-6)

    backend, pauses, _ = await paced_pass(clock, 100_000, cost)
    factors = [pause / cost * 9 for pause, cost in zip(pauses.seen, backend.costs, strict=False)]
    assert len(factors) > 30
    assert max(factors) == pytest.approx(4)  # 2 x 2, then back to 1 at once


async def test_pauses_stop_at_max_pause(clock: FakeClock) -> None:
    def cost(batch: int, removed: int) -> float:
        return removed * (10e-6 if batch == 1 else 100e-6)

    pacing = PurgePacing(max_pause=0.05)
    _, pauses, _ = await paced_pass(clock, 12_000, cost, pacing=pacing)
    assert max(pauses.seen) == pytest.approx(0.05)
    assert pauses.seen[-3:] == pytest.approx([0.05] * 3)


async def test_one_slow_batch_is_no_contention(clock: FakeClock) -> None:
    def cost(batch: int, removed: int) -> float:
        return removed * (12e-6 if batch == 3 else 10e-6)  # a hiccup of 20%

    _, pauses, _ = await paced_pass(clock, 10_000, cost)
    assert pauses.seen[2] == pytest.approx(2_000 * 12e-6 / 9)  # the duty cycle's pause


async def test_duty_cycle_one_pauses_only_under_contention(clock: FakeClock) -> None:
    def cost(batch: int, removed: int) -> float:
        return removed * (40e-6 if batch == 3 else 10e-6)

    pacing = replace(DEFAULT_PACING, duty_cycle=1.0)
    backend, pauses, _ = await paced_pass(clock, 10_000, cost, pacing=pacing)
    # No pause while idle (a pause of 0 is a checkpoint, not a sleep); batch 3 is contended:
    # half its duration, times the backoff's factor 2.
    assert backend.costs[2] == pytest.approx(2_000 * 40e-6)
    assert pauses.seen[0] == pytest.approx(backend.costs[2] / 2 * 2)
    assert len(pauses.seen) < len(backend.costs) - 2


@pytest.mark.parametrize(
    ("options", "sizes", "pauses"),
    [
        ({"pacing": None}, [1_000] * 4, []),
        ({"batch_size": 700}, [700] * 5, []),
        ({"pause": 0.25}, [1_000] * 4, [0.25] * 3),
        ({"batch_size": 1_500, "pause": 0.0}, [1_500] * 3, []),
    ],
)
async def test_explicit_settings_or_no_pacing_run_as_before_pacing(
    clock: FakeClock, options: dict[str, object], sizes: list[int], pauses: list[float]
) -> None:
    # Costs that a paced pass would answer with other sizes and growing pauses.
    backend, slept, _ = await paced_pass(clock, 3_000, lambda b, r: r * 1e-5 * b, **options)
    assert backend.asked == sizes
    assert slept.seen == pauses  # no pause of 0 is slept: a checkpoint instead
    assert UNPACED_BATCH_SIZE == 1_000


def test_the_cli_names_the_unpaced_batch_size_the_library_uses() -> None:
    from typed_session_sql.cli import purge as cli

    assert cli.UNPACED_BATCH_SIZE == UNPACED_BATCH_SIZE


async def test_purge_expired_and_the_scheduler_pace_by_default(clock: FakeClock) -> None:
    memory = MemoryBackend()
    await insert_rows(memory, rows(clock.now, expired=2_500))
    backend = Costly(memory, Monotonic(), per_row(0))
    store = SessionStore(dict, backend, clock=clock)
    assert await store.purge_expired() == 2_500
    assert backend.asked[0] == DEFAULT_PACING.first_batch_size
    await insert_rows(memory, rows(clock.now, expired=2_500))
    before = len(backend.asked)
    assert await store.purge_expired(pacing=replace(DEFAULT_PACING, first_batch_size=100)) > 0
    assert backend.asked[before:][:3] == [100, 200, 400]  # costs nothing: doubling
    scheduler = PurgeScheduler(store)
    assert (scheduler.pacing, scheduler.batch_size, scheduler.pause) == (DEFAULT_PACING, None, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_seconds", 0.0),
        ("min_batch_size", 0),
        ("max_batch_size", 10),  # below min_batch_size
        ("first_batch_size", 20_000),
        ("duty_cycle", 0.0),
        ("duty_cycle", 1.5),
        ("contention", 1.0),
        ("backoff", 0.5),
        ("recovery", 1.0),
        ("max_pause", -1.0),
        ("batch_seconds", float("nan")),
    ],
)
def test_a_pacing_out_of_range_is_refused_at_construction(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field.split("_")[-1]):
        replace(DEFAULT_PACING, **{field: value})  # type: ignore[arg-type]  # float or int


async def test_negative_pause_or_batch_size_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="pause"):
        await purge_pass(MemoryBackend(), clock(), pause=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        await purge_pass(MemoryBackend(), clock(), 0)


def test_a_pacer_with_fixed_size_still_paces_its_pauses() -> None:
    pacer = Pacer(DEFAULT_PACING, batch_size=300)
    assert pacer.after_batch(300, 0.009) == pytest.approx(0.001)
    assert pacer.batch_size == 300
    assert pacer.slowdown == 1.0
