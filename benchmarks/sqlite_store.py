"""The store against raw aiosqlite and sync sqlite3 doing the same statements, on SQLite.

    .venv/bin/python benchmarks/sqlite_store.py [--concurrency 1,16] [--rounds 5] [--hops]
    .venv/bin/python benchmarks/sqlite_store.py --profile load|save [--concurrency 16]

Figures (2026-11-27, this shared 2-core box, Python 3.11, SQLAlchemy 2.1.9, aiosqlite 0.22.1,
SQLite 3.40; one run of the defaults with --hops; cells swing +-30% between rounds, only the
medians of ratios mean anything):

    aiosqlite thread hops per op   store  store-norb  store-direct  raw aiosqlite
    load                             5       4            1              1
    load+save                        9       7            2              2

    medians       store/aiosqlite  store/sqlite3  store/memory  norb/store  direct/store
    load      c=1      0.12            0.013         0.015         1.11        2.6
    load      c=16     0.20            0.019         0.026         1.16        3.3
    load+save c=1      0.08            0.017         0.008         1.7 (?)     3.6
    load+save c=16     0.20            0.047         0.019         0.99        2.3

(ops/s: store ~1.5k load / ~0.5-1.3k load+save; raw aiosqlite 10-16k / 5-8k; sqlite3
110-150k / 27-31k; the store over MemoryBackend 100k / 70k.) Where the time goes: the
store's own work (hash, decode, encode, Session) is 1-3% of a store op; the sqlite3 floor
is ~7 us a read. The rest is the thread hops (~60 us each here: aiosqlite hands every call
to the connection's thread and back) and SQLAlchemy around them: the aiosqlite adapter
makes four hops a statement (cursor(), execute, fetchall, cursor.close) and the
Connection's close a fifth, a no-op ROLLBACK on the autocommit connection; an empty
``async with engine.connect()`` costs ~105-180 us, a bare pool checkout+checkin ~40-50 us.
"store-norb" (engine option skip_autocommit_rollback=True) drops the ROLLBACK hop;
"store-direct" (DirectSqlite below) runs the precompiled SQL on the pooled aiosqlite
connection, one hop a statement, as SqlBackend already does on asyncpg.

A temp SQLite file holds --sessions sessions (~160-byte payloads), bulk-inserted into the
table the backend creates. Per operation ("load"; "load+save" = load, change one field,
save) and per concurrency, in the same process, alternating round by round:

- "store": SessionStore over SqlBackend.from_url("sqlite+aiosqlite:///...") (pool_size =
  the highest concurrency, as in store_vs_driver.py): cookie check, blake3, SQLAlchemy's
  execution layer over its aiosqlite adapter, decoding, change detection.
- "aiosqlite": one dedicated aiosqlite connection per worker (autocommit, the engine's
  pragmas) running the statements the store issues, as SQLAlchemy renders them: the PK
  SELECT of the six columns the store reads, and the conditional UPDATE (version guard,
  version + 1), with ids already hashed. One thread hop per statement.
- "sqlite3": the floor. One sync sqlite3 connection running the same statements; it never
  yields, so its rate is the same at any concurrency.
- "memory": the same store over MemoryBackend: the store's own work (hashing, decoding,
  encoding, Session objects), with no SQL at all.

Each round reports ops/s of each; the headline is the median over rounds of the per-round
ratios store/aiosqlite and store/sqlite3. --hops counts aiosqlite worker-thread hops per
operation (deterministic; run once before timing). --profile runs only the store under
pyinstrument (installed in .venv, not a project dependency) and prints where time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import aiosqlite.core
from sqlalchemy.util import greenlet_spawn

from typed_session_sql import MemoryBackend, Record, SessionStore, SqlBackend, UpdateOutcome
from typed_session_sql.backend import SignIn
from typed_session_sql.ids import IdHasher, new_cookie_value

# The engine's pragmas (typed_session_sql.backends.sql_engine._sqlite_pragmas).
PRAGMAS = (
    "PRAGMA busy_timeout = 30000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass
class Profile:
    user_id: int = 0
    name: str = ""
    roles: list[str] = field(default_factory=list)
    counter: int = 0


Op = Callable[[int, int], Awaitable[None]]


async def timed(concurrency: int, ops: int, op: Op) -> float:
    """ops/s of ``concurrency`` workers doing ``ops`` operations each; worker w uses keys w,
    w + concurrency, ... so no two workers ever touch the same session."""

    async def worker(w: int) -> None:
        for i in range(ops):
            await op(w, i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return concurrency * ops / (time.perf_counter() - start)


@contextmanager
def counting_hops() -> Iterator[list[int]]:
    """Count calls handed to aiosqlite's worker threads (each is a thread round trip)."""
    count = [0]
    original: Any = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await original(self, fn, *args, **kwargs)

    setattr(aiosqlite.core.Connection, "_execute", counted)  # noqa: B010
    try:
        yield count
    finally:
        setattr(aiosqlite.core.Connection, "_execute", original)  # noqa: B010


def from_micros(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


class DirectSqlite(SqlBackend):
    """Prototype, benchmark only: read and the plain update as one aiosqlite call each on
    the pooled driver connection (one thread hop per statement), the way SqlBackend already
    bypasses SQLAlchemy's execution layer on asyncpg. No error mapping, no listeners."""

    def use(self, select_sql: str, update_sql: str) -> None:
        self.select_sql, self.update_sql = select_sql, update_sql

    async def read(self, id_hash: bytes) -> Record | None:
        pooled = await self.engine.raw_connection()
        driver = pooled.driver_connection
        assert driver is not None
        try:
            rows = await driver.execute_fetchall(self.select_sql, (id_hash,))
        finally:
            await greenlet_spawn(pooled.close)
        for row in rows:
            created_at = from_micros(row[2])
            assert created_at is not None
            return Record(row[0], row[1], created_at, from_micros(row[3]), row[4], row[5])
        return None

    async def update(
        self,
        id_hash: bytes,
        expected_version: int,
        data: bytes,
        expires_at: datetime | None,
        new_id_hash: bytes | None = None,
        sign_in: SignIn | None = None,
    ) -> UpdateOutcome:
        if new_id_hash is not None or sign_in is not None:
            return await super().update(
                id_hash, expected_version, data, expires_at, new_id_hash, sign_in
            )
        expires = None if expires_at is None else (expires_at - EPOCH) // MICROSECOND
        pooled = await self.engine.raw_connection()
        driver = pooled.driver_connection
        assert driver is not None
        try:
            cursor = await driver.execute(
                self.update_sql, (data, expires, id_hash, expected_version)
            )
        finally:
            await greenlet_spawn(pooled.close)
        return UpdateOutcome.UPDATED if cursor.rowcount == 1 else UpdateOutcome.STALE


class Bench:
    """The database, the sessions, and one op per (variant, operation)."""

    def __init__(self, path: Path, sessions: int, concurrency: int) -> None:
        self.path = path
        self.n = sessions
        self.max_c = concurrency
        self.c = 1  # the concurrency being timed; sets the key spread
        url = f"sqlite+aiosqlite:///{path}"
        self.backend = SqlBackend.from_url(url, pool_size=concurrency)
        self.store = SessionStore(Profile, self.backend)
        # The same store with SQLAlchemy's no-op ROLLBACK on check-in skipped: one hop less.
        self.norb_backend = SqlBackend.from_url(
            url, pool_size=concurrency, skip_autocommit_rollback=True
        )
        self.norb = SessionStore(Profile, self.norb_backend)
        self.direct_backend = DirectSqlite.from_url(url, pool_size=concurrency)
        self.direct = SessionStore(Profile, self.direct_backend)
        self.memory = SessionStore(Profile, MemoryBackend())
        self.cookies: list[str] = []
        self.hashes: list[bytes] = []
        self.conns: list[aiosqlite.Connection] = []
        self.sync = sqlite3.connect(path, isolation_level=None)
        for pragma in PRAGMAS:
            self.sync.execute(pragma)
        columns = "data, version, created_at, expires_at, principal, authenticated_at"
        table = self.backend.table.name
        self.select_sql = f"SELECT {columns} FROM {table} WHERE {table}.id_hash = ?"
        self.update_sql = (
            f"UPDATE {table} SET data=?, expires_at=?, version=({table}.version + 1)"
            f" WHERE {table}.id_hash = ? AND {table}.version = ?"
        )
        self.direct_backend.use(self.select_sql, self.update_sql)

    async def setup(self) -> None:
        await self.backend.create_schema()
        hasher = IdHasher(None)
        now = self.store.now()
        expires = self.store.expiry.initial_expiry(now)
        assert expires is not None
        micros = ((now - EPOCH) // MICROSECOND, (expires - EPOCH) // MICROSECOND)
        rows = []
        for i in range(self.n):
            cookie = new_cookie_value()
            h = hasher(cookie)
            data = self.store.codec.encode(
                Profile(i, f"user {i} " + "x" * 80, ["reader", "writer", "admin"])
            )
            self.cookies.append(cookie)
            self.hashes.append(h)
            rows.append((h, data, micros[1], micros[0], 1))
            await self.memory.backend.create(h, Record(data, 1, now, expires))
        table = self.backend.table.name
        self.sync.executemany(
            f"INSERT INTO {table} (id_hash, data, expires_at, created_at, version)"
            " VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        self.payload = len(rows[0][1])
        for _ in range(self.max_c):
            conn = await aiosqlite.connect(self.path, isolation_level=None)
            for pragma in PRAGMAS:
                await conn.execute(pragma)
            self.conns.append(conn)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()
        self.sync.close()
        for backend in (self.backend, self.norb_backend, self.direct_backend):
            await backend.dispose()

    def key(self, w: int, i: int) -> int:
        return (w + i * self.c) % self.n

    def ops(self) -> dict[str, dict[str, Op]]:
        """{operation: {variant: op}}."""
        select_sql, update_sql, sync = self.select_sql, self.update_sql, self.sync

        async def aio_load(w: int, i: int) -> None:
            rows = await self.conns[w].execute_fetchall(select_sql, (self.hashes[self.key(w, i)],))
            assert len(list(rows)) == 1

        async def aio_modify(w: int, i: int) -> None:
            h = self.hashes[self.key(w, i)]
            conn = self.conns[w]
            row = next(iter(await conn.execute_fetchall(select_sql, (h,))))
            cursor = await conn.execute(update_sql, (row[0], row[3], h, row[1]))
            assert cursor.rowcount == 1

        async def sync_load(w: int, i: int) -> None:
            assert sync.execute(select_sql, (self.hashes[self.key(w, i)],)).fetchone()

        async def sync_modify(w: int, i: int) -> None:
            h = self.hashes[self.key(w, i)]
            row = sync.execute(select_sql, (h,)).fetchone()
            assert sync.execute(update_sql, (row[0], row[3], h, row[1])).rowcount == 1

        def loader(store: SessionStore[Profile]) -> Op:
            async def load(w: int, i: int) -> None:
                assert await store.load(self.cookies[self.key(w, i)]) is not None

            return load

        def modifier(store: SessionStore[Profile]) -> Op:
            async def modify(w: int, i: int) -> None:
                session = await store.load(self.cookies[self.key(w, i)])
                assert session is not None
                session.data.counter += 1
                await store.save(session)

            return modify

        return {
            "load": {
                "store": loader(self.store),
                "aiosqlite": aio_load,
                "sqlite3": sync_load,
                "memory": loader(self.memory),
                "store-norb": loader(self.norb),
                "store-direct": loader(self.direct),
            },
            "load+save": {
                "store": modifier(self.store),
                "aiosqlite": aio_modify,
                "sqlite3": sync_modify,
                "memory": modifier(self.memory),
                "store-norb": modifier(self.norb),
                "store-direct": modifier(self.direct),
            },
        }


async def count_hops(bench: Bench) -> None:
    for label, variants in bench.ops().items():
        counts = {}
        for name in ("store", "store-norb", "store-direct", "aiosqlite"):
            with counting_hops() as count:
                await timed(1, 100, variants[name])
            counts[name] = count[0] / 100
        print(
            f"{label:10} aiosqlite thread hops per op: "
            + ", ".join(f"{name} {n:.1f}" for name, n in counts.items())
        )
    print()


async def profile(bench: Bench, which: str, concurrency: int) -> None:
    from pyinstrument import Profiler

    bench.c = concurrency
    op = bench.ops()["load" if which == "load" else "load+save"]["store"]
    await timed(concurrency, 50, op)
    profiler = Profiler(async_mode="disabled", interval=0.0005)
    profiler.start()
    await timed(concurrency, 4000 // concurrency, op)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


# name: (numerator, denominator) of a ratio of rates; "x/y" > 1 means x is faster.
RATIOS = {
    "store/aiosqlite": ("store", "aiosqlite"),
    "store/sqlite3": ("store", "sqlite3"),
    "store/memory": ("store", "memory"),
    "norb/store": ("store-norb", "store"),
    "direct/store": ("store-direct", "store"),
    "direct/aiosqlite": ("store-direct", "aiosqlite"),
}


async def run(bench: Bench, label: str, c: int, ops: int, rounds: int) -> str:
    """Time every variant of ``label`` at concurrency ``c``, rotating which goes first;
    print each round; return the medians of the per-round ratios."""
    bench.c = c
    variants = list(bench.ops()[label].items())
    for _, op in variants:  # warm up: connections, caches, compiled SQL
        await timed(c, max(1, 100 // c), op)
    ratios: dict[str, list[float]] = {name: [] for name in RATIOS}
    for r in range(rounds):
        k = r % len(variants)
        rates = {
            name: await timed(c, max(1, ops // c), op) for name, op in variants[k:] + variants[:k]
        }
        for name, (a, b) in RATIOS.items():
            ratios[name].append(rates[a] / rates[b])
        print(
            f"{label:9} c={c:<2} round {r + 1} ops/s: "
            + "  ".join(f"{name} {rates[name]:.0f}" for name, _ in variants)
        )
    return f"{label:9} c={c:<2} " + "  ".join(
        f"{name} {statistics.median(values):.3g}" for name, values in ratios.items()
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", default="1,16", help="comma-separated")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=1600, help="per variant per round, all workers")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hops", action="store_true", help="count thread hops per op first")
    parser.add_argument("--profile", choices=("load", "save"), help="profile the store only")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory() as directory:
        bench = Bench(Path(directory) / "sessions.db", args.sessions, max(levels))
        await bench.setup()
        print(f"{args.sessions} sessions, {bench.payload}-byte payloads, {args.rounds} rounds\n")
        try:
            if args.profile:
                await profile(bench, args.profile, levels[-1])
                return
            if args.hops:
                await count_hops(bench)
            summary = []
            for label in ("load", "load+save"):
                for c in levels:
                    summary.append(await run(bench, label, c, args.ops, args.rounds))
                    print(summary[-1] + "\n")
            print("medians of per-round ratios:\n" + "\n".join(summary))
        finally:
            await bench.close()


if __name__ == "__main__":
    asyncio.run(main())
