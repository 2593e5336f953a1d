"""`FairSlots`, the held connections' semaphore, on its own: no database, no clock (a
waiter's turn comes when a slot is given back, not when time passes)."""

from __future__ import annotations

import asyncio

import pytest

from typed_session_sql.backends.sql.fair_slots import FairSlots

pytestmark = pytest.mark.anyio

LONG = 5.0  # never reached: every wait here ends by a hand-over or a cancellation (a bug
# that loses a hand-over fails the test with TimeoutError after it, rather than hang)


async def waiting(slots: FairSlots, order: list[str], name: str) -> asyncio.Task[None]:
    async def wait() -> None:
        await slots.take(LONG)
        order.append(name)

    task = asyncio.create_task(wait())
    await asyncio.sleep(0)  # let it join the line (one turn of the loop, not a wait for time)
    return task


async def test_slots_are_taken_up_to_the_limit() -> None:
    slots = FairSlots(lambda: 2)
    assert slots.take_now()
    assert slots.take_now()
    assert not slots.take_now()
    assert slots.taken == 2


async def test_a_slot_given_back_goes_to_the_longest_waiter() -> None:
    slots = FairSlots(lambda: 1)
    await slots.take(LONG)
    order: list[str] = []
    tasks = [await waiting(slots, order, name) for name in ("first", "second", "third")]
    for _ in tasks:
        slots.give_back()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["first", "second", "third"]
    assert slots.taken == 1  # each slot changed hands; the last holder still has it


async def test_growing_lets_newcomers_take_the_new_slots() -> None:
    limit = 1
    slots = FairSlots(lambda: limit)
    assert slots.take_now()
    assert not slots.take_now()
    limit = 3
    assert slots.take_now()
    assert slots.take_now()
    assert not slots.take_now()


async def test_shrinking_retires_slots_as_they_come_back() -> None:
    limit = 3
    slots = FairSlots(lambda: limit)
    for _ in range(3):
        await slots.take(LONG)
    order: list[str] = []
    task = await waiting(slots, order, "waiter")
    limit = 1
    slots.give_back()  # 3 taken, 1 allowed: retired
    slots.give_back()  # 2 taken, 1 allowed: retired
    await asyncio.sleep(0)
    assert order == []
    assert slots.taken == 1
    slots.give_back()  # 1 taken, 1 allowed: handed on
    await task
    assert order == ["waiter"]
    assert slots.taken == 1


@pytest.mark.parametrize("handed_over_first", [False, True])
async def test_a_cancelled_waiter_loses_its_place_and_no_slot(handed_over_first: bool) -> None:
    """Cancelled while in line, or after the slot was handed to it but before it ran: either
    way the slot goes on to the next in line, and none is lost or counted twice."""
    slots = FairSlots(lambda: 1)
    await slots.take(LONG)
    order: list[str] = []
    gone = await waiting(slots, order, "cancelled")
    stays = await waiting(slots, order, "next")
    if handed_over_first:
        slots.give_back()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    if not handed_over_first:
        slots.give_back()
    await stays
    assert order == ["next"]
    assert slots.taken == 1


async def test_a_wait_that_times_out_leaves_the_count_alone() -> None:
    slots = FairSlots(lambda: 1)
    await slots.take(LONG)
    with pytest.raises(TimeoutError):
        await slots.take(0)
    assert slots.taken == 1
    slots.give_back()
    assert slots.taken == 0


async def test_a_slot_given_up_goes_to_no_one() -> None:
    slots = FairSlots(lambda: 1)
    await slots.take(LONG)
    order: list[str] = []
    task = await waiting(slots, order, "waiter")
    slots.give_up()
    await asyncio.sleep(0)
    assert order == []
    assert slots.taken == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
