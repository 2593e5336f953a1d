"""The backends the contract suite runs against, a recorder that works for all of them,
and a memory backend that can be made to fail.

Each entry opens a fresh, empty backend for one test and closes it afterwards. The SQL
entries come from ``tests/sql_backends.py``; the contract tests never know which backend
they run on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TypeVar

from tests.sql_backends import SQL_BACKEND_FACTORIES, BackendFactory
from typed_session_sql import MemoryBackend, StoreUnavailableError
from typed_session_sql.backend import (
    Backend,
    ForwardingBackend,
    PrincipalRow,
    Record,
    Update,
    UpdateOutcome,
)

R = TypeVar("R")


@asynccontextmanager
async def memory_backend() -> AsyncIterator[Backend]:
    yield MemoryBackend()


# name -> (factory, whether it runs under trio as well as asyncio)
BACKEND_FACTORIES: dict[str, tuple[BackendFactory, bool]] = {
    "memory": (memory_backend, True),
    **{name: (factory, False) for name, factory in SQL_BACKEND_FACTORIES.items()},
}


class RecordingBackend(ForwardingBackend):
    """Wraps any backend and records the kind of each call, so one assertion fits all."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.kinds: list[str] = []

    async def _call(self, operation: str, call: Callable[[], Awaitable[R]]) -> R:
        if operation != "stats":  # a look at the table, not a session operation
            self.kinds.append(operation)
        return await call()


class OutageMemoryBackend(MemoryBackend):
    """A memory backend whose every call raises ``failure`` while ``down`` is set, like a
    database that went away."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.failure: Exception = StoreUnavailableError("connection refused")

    def _check(self) -> None:
        if self.down:
            raise self.failure

    async def create(self, id_hash: bytes, record: Record) -> bool:
        self._check()
        return await super().create(id_hash, record)

    async def read(self, id_hash: bytes) -> Record | None:
        self._check()
        return await super().read(id_hash)

    async def update(self, change: Update) -> UpdateOutcome:
        self._check()
        return await super().update(change)

    async def touch(
        self, id_hash: bytes, version: int, expires_at: datetime, now: datetime
    ) -> bool:
        self._check()
        return await super().touch(id_hash, version, expires_at, now)

    async def delete(self, id_hash: bytes) -> bool:
        self._check()
        return await super().delete(id_hash)

    async def list_by_principal(
        self, principal: str, *, live_at: datetime, created_after: datetime | None, limit: int
    ) -> list[PrincipalRow]:
        self._check()
        return await super().list_by_principal(
            principal, live_at=live_at, created_after=created_after, limit=limit
        )

    async def delete_by_principal(
        self, principal: str, *, only: bytes | None = None, keep: bytes | None = None
    ) -> int:
        self._check()
        return await super().delete_by_principal(principal, only=only, keep=keep)

    async def purge(self, now: datetime, batch_size: int) -> int:
        self._check()
        return await super().purge(now, batch_size)

    async def clear(self) -> None:
        self._check()
        await super().clear()
