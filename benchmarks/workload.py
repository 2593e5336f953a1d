"""What the benchmarks share: the session payload and the timed concurrent loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Op = Callable[[int, int], Awaitable[None]]


@dataclass
class Profile:
    """A typical small session (~160 bytes encoded)."""

    user_id: int = 0
    name: str = ""
    roles: list[str] = field(default_factory=list)
    counter: int = 0


async def timed(concurrency: int, ops: int, op: Op) -> float:
    """ops/s of ``concurrency`` workers doing ``ops`` operations each; worker w uses keys w,
    w + concurrency, ... so no two workers ever touch the same session."""

    async def worker(w: int) -> None:
        for i in range(ops):
            await op(w, i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return concurrency * ops / (time.perf_counter() - start)
