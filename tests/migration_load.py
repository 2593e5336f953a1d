"""Upgrading a live session table: what an instance still running 0001-era code sends while
revision 0002 runs, and a check that the table was not rewritten.

Used by ``tests/migrations/test_migrations.py`` (one server of each dialect) and the Galera suite
(through three nodes at once).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from typed_session_sql import SqlBackend
from typed_session_sql.alembic_support import upgrade

START = datetime(2026, 1, 1, 12, tzinfo=UTC)
ROWS = 20
_DEADLOCK = 1213  # MySQL's "run it again", as the backend treats it (a Galera BF abort too)


def micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def key_of(i: int, prefix: bytes = b"o") -> bytes:
    return prefix + i.to_bytes(4, "big") * 7 + b"\x00" * 3


class OldCode:
    """What an instance still running 0001-era code sends: no ``expiry_pinned`` anywhere.
    A MySQL deadlock (1213) is run again, as the backend of every release does."""

    def __init__(self, engine: AsyncEngine, quoted_table: str) -> None:
        self.engine, self.table = engine, quoted_table
        self.reruns = 0

    async def _run(self, statement: str, params: dict[str, Any]) -> Any:
        while True:
            try:
                async with self.engine.connect() as conn:
                    result = await conn.execute(text(statement), params)
                    return result.all() if result.returns_rows else None
            except OperationalError as error:
                if getattr(error.orig, "args", (None,))[0] != _DEADLOCK or self.reruns > 100:
                    raise
                self.reruns += 1

    async def insert(self, key: bytes) -> None:
        await self._run(
            f"INSERT INTO {self.table} (id_hash, data, expires_at, created_at, version)"
            " VALUES (:k, :d, :e, :c, 1)",
            {
                "k": key,
                "d": b'{"items":[1]}',
                "e": micros(START + timedelta(minutes=30)),
                "c": micros(START),
            },
        )

    async def read_and_update(self, key: bytes) -> None:
        query = f"SELECT data, version, expires_at FROM {self.table} WHERE id_hash = :k"
        ((data, version, _),) = await self._run(query, {"k": key})
        await self._run(
            f"UPDATE {self.table} SET data = :d, version = version + 1"
            " WHERE id_hash = :k AND version = :v",
            {"k": key, "d": data, "v": version},
        )


async def storage_id(engine: AsyncEngine, table: str, schema: str | None) -> Any:
    """What changes when the table is rewritten: PostgreSQL's relfilenode, InnoDB's table
    id, SQLite's root page."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        query = "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = :table"
    elif dialect == "postgresql":
        query = (
            "SELECT pg_relation_filenode(format('%I.%I',"
            " coalesce(CAST(:schema AS text), 'public'), CAST(:table AS text)))"
        )
    else:
        query = (
            "SELECT table_id FROM information_schema.innodb_sys_tables"
            " WHERE name = CONCAT(COALESCE(:schema, DATABASE()), '/', :table)"
        )
    async with engine.connect() as conn:
        params = {"table": table} if dialect == "sqlite" else {"table": table, "schema": schema}
        value = (await conn.execute(text(query), params)).scalar()
    assert value is not None
    return value


@dataclass
class Served:
    """What the 0001-era load did around the upgrade."""

    during: int = 0
    after: int = 0
    reruns: int = 0
    inserted: list[bytes] = field(default_factory=list)


async def upgrade_under_load(
    migrator: AsyncEngine,
    load: list[AsyncEngine],
    table: str,
    schema: str | None,
    quoted_table: str,
    workers_per_engine: int = 2,
) -> Served:
    """Create ``table`` at 0001 through ``migrator``, start 0001-era requests through every
    engine of ``load``, upgrade to head through ``migrator`` while they run, let them go on
    a little, then check: every request succeeded, none was refused, the table was not
    rewritten (as each engine sees it), and every row reads through the new code, unpinned.
    """
    await upgrade(migrator, table, schema, "0001")
    olds = [OldCode(engine, quoted_table) for engine in load]
    for i in range(ROWS):
        await olds[0].insert(key_of(i))
    before = [await storage_id(engine, table, schema) for engine in load]

    served = Served()
    loaded, done = asyncio.Event(), asyncio.Event()
    migrating = False

    async def worker(old: OldCode, n: int) -> None:
        i = 0
        # Stop only after the load has served requests after the upgrade too.
        while not (done.is_set() and served.after >= 10):
            await old.read_and_update(key_of((n * 7 + i) % ROWS))
            key = key_of(n * 100_000 + i, b"n")
            await old.insert(key)
            served.inserted.append(key)
            if len(served.inserted) >= 20:
                loaded.set()
            if done.is_set():
                served.after += 1
            elif migrating:
                served.during += 1
            i += 1

    tasks = [
        asyncio.create_task(worker(old, n * workers_per_engine + w))
        for n, old in enumerate(olds)
        for w in range(workers_per_engine)
    ]
    await loaded.wait()  # the load is running before the migration starts
    migrating = True
    await upgrade(migrator, table, schema, "head")
    done.set()
    await asyncio.gather(*tasks)  # every old-code request succeeded
    served.reruns = sum(old.reruns for old in olds)

    # SQLite serialises writers: a request waits for the migration's write lock and may only
    # finish after it (whether one finishes "during" depends on scheduling). The servers
    # must serve requests while the column is added.
    if migrator.dialect.name != "sqlite":
        assert served.during > 0
    assert [await storage_id(engine, table, schema) for engine in load] == before
    async with SqlBackend(migrator, table, schema) as backend:
        for key in [key_of(i) for i in range(ROWS)] + served.inserted:
            row = await backend.read(key)
            assert row is not None
            assert not row.expiry_pinned
    return served
