"""On SQLite the migration lock is the file's write lock, waited for by SQLite's busy
timeout: a migrator waits as long as migrators wait on the other databases
(`MIGRATION_LOCK_WAIT`), not a statement's 30 s, and its connection goes back to the pool
with the statements' timeout, whether it migrated or gave up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection

from typed_session_sql import SqlBackend, StoreUnavailableError
from typed_session_sql.backends.sql import locks
from typed_session_sql.backends.sql.dialects.sqlite import BUSY_TIMEOUT_MS
from typed_session_sql.backends.sql.migrate import serialised

pytestmark = pytest.mark.anyio


def busy_timeout(connection: Connection) -> int:
    return int(connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one())


async def pooled_busy_timeout(backend: SqlBackend) -> int:
    async with backend.engine.connect() as conn:
        return await conn.run_sync(busy_timeout)


async def test_a_migrator_waits_for_the_lock_as_long_as_on_other_databases(
    tmp_path: Path,
) -> None:
    seen: list[int] = []
    async with SqlBackend.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}") as backend:
        await serialised(
            backend.engine, "typed_sessions", None, lambda c: seen.append(busy_timeout(c))
        )
        assert seen == [locks.MIGRATION_LOCK_WAIT * 1000]  # was the statements' 30,000
        assert await pooled_busy_timeout(backend) == BUSY_TIMEOUT_MS


async def test_a_migrator_that_gives_up_hands_back_a_connection_with_the_statement_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks, "MIGRATION_LOCK_WAIT", 0)  # give up at once
    path = tmp_path / "s.db"
    async with SqlBackend.from_url(f"sqlite+aiosqlite:///{path}") as backend:
        assert await pooled_busy_timeout(backend) == BUSY_TIMEOUT_MS  # WAL set up
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another migrator, mid-migration
            with pytest.raises(StoreUnavailableError, match="database is locked"):
                await backend.migrate()
        finally:
            holder.close()
        assert await pooled_busy_timeout(backend) == BUSY_TIMEOUT_MS
        await backend.migrate()  # the lock is free: it migrates
