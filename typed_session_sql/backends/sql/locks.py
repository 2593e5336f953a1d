"""The SQL wing's cross-process locks, in one place: the purge lock (one purger at a time
across instances, never waited for) and the migration lock (one migrator at a time, waited
for). Both are named by one scheme (`advisory_key`, `server_lock_name`), wait as long as
this module says, and neither is ever handed back to a pool while it may still be held
(`purge_lock`; the migration lock's ``end``). The SQL each dialect takes and releases them
with is in its module in `.dialects` (`PurgeLock`, `MigrationLock`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import anyio
from blake3 import blake3
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from typed_session_sql.backends.sql.failures import translated
from typed_session_sql.urls import mask_password

if TYPE_CHECKING:
    # Only a type: the dialect modules build on this module's names and waits.
    from typed_session_sql.backends.sql.dialects.support import PurgeLock

__all__ = [
    "LOCK_STEP",
    "MIGRATION_LOCK_WAIT",
    "PURGE_LOCK_HELD_TOO_LONG",
    "advisory_key",
    "lock_key",
    "lock_name",
    "purge_lock",
    "server_lock_name",
]

_log = logging.getLogger("typed_session_sql")


Purpose = Literal["purge", "migrate"]


def _digest(purpose: Purpose, scope: str) -> blake3:
    # The one naming scheme of both locks: every instance of every version must work out
    # the same key for the same table, so this text is frozen.
    return blake3(f"typed_session_sql {purpose} {scope}".encode())


def advisory_key(purpose: Purpose, scope: str) -> int:
    """The PostgreSQL advisory-lock key (a signed 64-bit int) of ``purpose`` on ``scope``."""
    return int.from_bytes(_digest(purpose, scope).digest(8), "big", signed=True)


def server_lock_name(purpose: Purpose, scope: str) -> str:
    """The ``GET_LOCK`` name (MySQL, MariaDB) of ``purpose`` on ``scope``: names are
    server-wide, so ``scope`` names the database, and MySQL refuses names over 64
    characters, so it is hashed."""
    return f"typed_session_sql_{purpose}_{_digest(purpose, scope).hexdigest(8)}"


def lock_key(table_name: str) -> int:
    """The advisory-lock key (a signed 64-bit int) for purging ``table_name``."""
    return advisory_key("purge", table_name)


def lock_name(database: str | None, table_name: str) -> str:
    """The ``GET_LOCK`` name (MySQL, MariaDB) for purging ``table_name`` in ``database``."""
    return server_lock_name("purge", f"{database}.{table_name}")


# A purge pass takes seconds to minutes; a purger holding the lock longer than this has
# probably hung (its connection idle, its pass stuck), and every other purger's passes are
# skipped meanwhile: each skip says so in a warning.
PURGE_LOCK_HELD_TOO_LONG = 600  # seconds


@asynccontextmanager
async def purge_lock(
    engine: AsyncEngine, table: Table, lock: PurgeLock | None
) -> AsyncIterator[bool]:
    """Hold the cross-instance purge lock for ``table`` (the dialect's ``lock``, see
    `typed_session_sql.backends.sql.dialects`); yield whether it was taken.

    The lock is taken on a dedicated connection, held for the pass, and released after it;
    a connection that may still hold it (a failure or a cancellation while taking it, or a
    release that failed) is invalidated, never handed back to the pool: closing it ends its
    database session, which releases the lock. Where ``lock`` is None (SQLite, whose
    writers its file lock serialises): always yields True.
    """
    if lock is None:
        yield True
        return
    where = mask_password(engine.url.render_as_string(hide_password=True))
    doing = f"take the purge lock for {table.fullname} on {where}"
    with translated(str(table.fullname), doing):
        conn = await engine.connect()
    released = False
    try:
        with translated(str(table.fullname), doing):
            got, held = await lock.take(conn, table)
        released = not held  # nothing held: nothing to release
        yield got
    finally:
        with anyio.CancelScope(shield=True):
            if not released:
                with anyio.move_on_after(10):
                    try:
                        await lock.release(conn, table)
                        released = True
                    except Exception:
                        _log.debug("could not release the purge lock", exc_info=True)
            if not released:
                await conn.invalidate()
            await conn.close()


# How long a migrator waits for the migration lock where the database does not wait for
# it on its own (MySQL's GET_LOCK), in steps of LOCK_STEP seconds (GET_LOCK's own wait): a
# migration takes seconds, so a lock held this long is kept by mistake (a squatter this
# user cannot see, a stuck session).
MIGRATION_LOCK_WAIT = 300  # seconds
LOCK_STEP = 10
