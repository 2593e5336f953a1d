"""`FairSlots`: a semaphore whose size may change while slots are taken, handing a slot
given back to the one who has waited longest.

The held connections (`.connections`) use it: the number of connections a backend may
use at once is its ``count``, but fewer while the server refuses more, so the size is
asked (``limit()``) whenever a slot is taken or given back rather than fixed.
`asyncio.Semaphore` has neither a size that changes nor a strict line (a waiter woken may
lose its slot to a newcomer that never waited).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["FairSlots"]


class FairSlots:
    """Slots, up to ``limit()`` taken at once; waiters served first come, first served.

    Growing (``limit()`` rises) lets newcomers take the new slots at once; shrinking takes
    effect as slots come back: one given back while as many or more are taken than
    ``limit()`` allows is retired, not handed on.
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self.taken = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        """Take a slot if one is free now; whether one was taken."""
        if self.taken < self._limit():
            self.taken += 1
            return True
        return False

    async def take(self, within: float) -> None:
        """Take a slot, waiting in line up to ``within`` seconds (`TimeoutError`)."""
        if not self.take_now():
            await self.wait(within)

    async def wait(self, within: float) -> None:
        """Wait in line up to ``within`` seconds (`TimeoutError`) for a slot given back."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(within):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed over just as the wait ended: pass it on
            else:
                waiter.cancel()  # its place in line is skipped
            raise

    def give_back(self) -> None:
        """Return a taken slot: to the first in line, unless the size has shrunk below it."""
        while self._waiters and self.taken <= self._limit():
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands: `taken` stays
                return
        self.taken -= 1

    def give_up(self) -> None:
        """Return a taken slot to no one, as a holder that will wait in line again does."""
        self.taken -= 1
