"""Timing: workers run an operation for a fixed time; each operation's latency is kept.

Worker ``w`` of ``c`` uses keys ``w, w + c, w + 2c, ...`` (mod the number of keys, a
multiple of ``c``), so no two workers ever touch the same session at once: a benchmark of
load+save measures writes, not conflicts. Async contenders run their workers as tasks on
the running event loop; threaded ones (Django, Flask) as threads of a pool kept for the
whole run, so their per-thread database connections stay open between rounds.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

AsyncOp = Callable[[int, int], Awaitable[None]]
"""An async operation on (worker, key index)."""
SyncOp = Callable[[int, int], None]
"""A blocking operation on (worker, key index), run in a thread."""


@dataclass
class Sample:
    """One contender, one operation, one concurrency, one round."""

    ops: int
    seconds: float
    latencies: list[float]  # seconds, one per operation

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


async def run_async(op: AsyncOp, concurrency: int, seconds: float, keys: int) -> Sample:
    """``concurrency`` tasks run ``op`` until ``seconds`` have passed."""
    deadline = time.perf_counter() + seconds
    return await _tasks(op, concurrency, keys, lambda now: now < deadline)


async def run_until(op: AsyncOp, concurrency: int, keys: int, stop: asyncio.Event) -> Sample:
    """``concurrency`` tasks run ``op`` until ``stop`` is set."""
    return await _tasks(op, concurrency, keys, lambda now: not stop.is_set())


async def _tasks(
    op: AsyncOp, concurrency: int, keys: int, going: Callable[[float], bool]
) -> Sample:
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    clock = time.perf_counter
    # Worker w takes keys w, w + c, ...: wrapping at a multiple of c keeps every worker in a
    # lane of its own (1,000 keys and 16 workers would otherwise let a worker that wrapped
    # run into another's key, and two saves of one session race).
    span = keys - keys % concurrency or keys

    async def worker(w: int) -> None:
        mine = latencies[w]
        key = w
        while going(started := clock()):
            await op(w, key)
            mine.append(clock() - started)
            key = (key + concurrency) % span

    started = clock()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return _sample(latencies, clock() - started)


def _sample(latencies: list[list[float]], elapsed: float) -> Sample:
    merged = [value for mine in latencies for value in mine]
    return Sample(len(merged), elapsed, merged)


def run_threads(
    op: SyncOp, concurrency: int, seconds: float, keys: int, pool: ThreadPoolExecutor
) -> Sample:
    """``concurrency`` threads of ``pool`` run ``op`` until ``seconds`` have passed."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    clock = time.perf_counter
    ready = threading.Barrier(concurrency + 1)
    deadline = [0.0]
    span = keys - keys % concurrency or keys  # lanes of their own, as in _tasks

    def worker(w: int) -> None:
        mine = latencies[w]
        key = w
        ready.wait()
        while True:
            started = clock()
            if started >= deadline[0]:
                return
            op(w, key)
            mine.append(clock() - started)
            key = (key + concurrency) % span

    futures = [pool.submit(worker, w) for w in range(concurrency)]
    started = clock()
    deadline[0] = started + seconds
    ready.wait()
    for future in futures:
        future.result()
    return _sample(latencies, clock() - started)
