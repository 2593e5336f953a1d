"""Helpers for the purge tests: a hand-driven sleep, fault-injecting backends, bulk rows.

Nothing here waits for real time: the scheduler's ``sleep`` is replaced by
:class:`SteppedSleep`, which returns only when the test says so and then moves the
store's :class:`FakeClock` by the time it was asked to wait.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio
import anyio.lowlevel
from sqlalchemy import func, insert, select

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from typed_session_sql import MemoryBackend, SessionEvent, StoreUnavailableError
from typed_session_sql.backend import Backend, Record


class SteppedSleep:
    """A ``sleep`` for :class:`PurgeScheduler` that the test releases one wait at a time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: list[float] = []
        self._asleep = anyio.Event()
        self._wake = anyio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self._wake = anyio.Event()
        self._asleep.set()
        await self._wake.wait()
        self.clock.advance(timedelta(seconds=seconds))

    async def asleep(self) -> None:
        """Wait until the scheduler is waiting (its previous pass, if any, has ended)."""
        await self._asleep.wait()

    async def step(self) -> None:
        """End the current wait, then wait until the scheduler waits again (one pass ran)."""
        await self._asleep.wait()
        self._asleep = anyio.Event()
        self._wake.set()
        await self._asleep.wait()


class FlakyBackend(RecordingBackend):
    """Delegates to ``inner`` but fails the next ``failures`` purges, as an outage would."""

    def __init__(self, inner: Backend, failures: int = 0) -> None:
        super().__init__(inner)
        self.failures = failures
        self.purge_calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.checkpoints_per_batch = 0

    async def purge(self, now: datetime, batch_size: int) -> int:
        self.purge_calls += 1
        self.kinds.append("purge")
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("session store unavailable: ConnectionRefusedError")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            for _ in range(self.checkpoints_per_batch):
                await anyio.lowlevel.checkpoint()
            return await self.inner.purge(now, batch_size)
        finally:
            self.in_flight -= 1


class StuckBackend(FlakyBackend):
    """A backend whose purge statement never finishes (a table lock, a hung server)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.entered = anyio.Event()

    async def purge(self, now: datetime, batch_size: int) -> int:
        self.entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


def rows(
    now: datetime, *, expired: int, live: int = 0, forever: int = 0
) -> list[tuple[bytes, Record]]:
    """``expired`` rows that expired before ``now``, ``live`` ones after, ``forever`` never."""
    out: list[tuple[bytes, Record]] = []
    created = now - timedelta(days=2)
    for i in range(expired):
        out.append(
            (
                b"e" + i.to_bytes(31, "big"),
                Record(b"{}", 1, created, now - timedelta(seconds=1 + i % 3600)),
            )
        )
    for i in range(live):
        out.append(
            (b"l" + i.to_bytes(31, "big"), Record(b"{}", 1, created, now + timedelta(hours=1)))
        )
    for i in range(forever):
        out.append((b"f" + i.to_bytes(31, "big"), Record(b"{}", 1, created, None)))
    return out


async def insert_rows(backend: Backend, items: list[tuple[bytes, Record]]) -> None:
    """Store ``items`` at once: one executemany on SQL, a dict update in memory."""
    if isinstance(backend, MemoryBackend):
        backend.rows.update(items)
        return
    engine, table = backend.engine, backend.table  # type: ignore[attr-defined]
    values = [
        {
            "id_hash": id_hash,
            "data": record.data,
            "version": record.version,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
        }
        for id_hash, record in items
    ]
    async with engine.begin() as conn:
        await conn.execute(insert(table), values)


async def count_rows(backend: Backend) -> int:
    if isinstance(backend, MemoryBackend):
        return len(backend.rows)
    engine, table = backend.engine, backend.table  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


class Events:
    """Collects a store's events."""

    def __init__(self) -> None:
        self.seen: list[SessionEvent] = []

    def __call__(self, event: SessionEvent) -> None:
        self.seen.append(event)

    def kinds(self) -> list[str]:
        return [event.kind.value for event in self.seen]
