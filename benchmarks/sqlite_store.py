"""The store against raw aiosqlite and sync sqlite3 doing the same statements, on SQLite.

    .venv/bin/python benchmarks/sqlite_store.py [--concurrency 1,16] [--rounds 5] [--hops]
    .venv/bin/python benchmarks/sqlite_store.py --profile load|save [--concurrency 16]

Figures (2026-11-27, this shared 2-core box, Python 3.11, SQLAlchemy 2.1.9, aiosqlite 0.22.1,
SQLite 3.40; two runs of the defaults with --hops; cells swing +-30% between rounds, only the
medians of ratios mean anything):

    aiosqlite thread hops per op   store  store-sqla  raw aiosqlite
    load                             1        4             1
    load+save                        2        7             2

    medians (run 1 / run 2)  store/aiosqlite  store/sqlite3  store/memory  store/sqla
    load      c=1             0.59 / 0.72     0.050 / 0.052  0.040 / 0.065  4.8 / 4.5
    load      c=16            0.83 / 0.88     0.045 / 0.044  0.047 / 0.062  4.2 / 4.1
    load+save c=1             0.73 / 0.72     0.099 / 0.11   0.039 / 0.042  4.1 / 4.5
    load+save c=16            0.79 / 0.82     0.12 / 0.11    0.048 / 0.047  4.2 / 3.5

(ops/s: store ~5-8k load / ~2-3k load+save; raw aiosqlite 7-10k / 2.5-4k; sqlite3
100-140k / 20-27k.) After the executor redesign (2026-12-01, a machine busy with other
work: +-80% between rounds) three runs gave store/aiosqlite 0.23-0.59 (load c=1), 0.66-0.98
(load c=16), 0.38-0.64 (load+save c=1), 0.89-1.06 (load+save c=16), the code before it
0.59 / 0.69 / 0.36 / 1.00 in the same conditions; the same hops.

Before the driver executor (SQLAlchemy's execution, now "store-sqla"), the same runs
gave store/aiosqlite 0.10-0.14 for loads and 0.11-0.23 for load+save. Where the time goes:
the store's own work (hash, decode, encode, Session) is a few % of a store op; the sqlite3
floor is ~7 us a read. The rest is the thread hops (~60 us each here: aiosqlite hands every
call to the connection's thread and back): the store makes one a statement
(typed_session_sql.backends.sql.aiosqlite_driver), as raw aiosqlite does; SQLAlchemy's
aiosqlite adapter makes four (cursor(), execute, fetchall, cursor.close; a write skips
fetchall) plus its execution layer around them. The held connections (SqlBackend.from_url)
are worth 1.3-1.6x over a pool checkout and checkin per statement (measured once, both runs).

A temp SQLite file holds --sessions sessions (~160-byte payloads), bulk-inserted into the
table the backend creates. Per operation ("load"; "load+save" = load, change one field,
save) and per concurrency, in the same process, alternating round by round:

- "store": SessionStore over SqlBackend.from_url("sqlite+aiosqlite:///...") (pool_size =
  the highest concurrency, as in store_vs_driver.py): cookie check, blake3, the driver
  executor (precompiled SQL on a held aiosqlite connection), decoding, change detection.
- "store-sqla": the same with ``execution="sqlalchemy"``: every statement takes
  SQLAlchemy's execution layer over its aiosqlite adapter (what its instrumentation sees).
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import aiosqlite.core
from workload import Op, Profile, timed

from typed_session_sql import MemoryBackend, SessionStore, SqlBackend
from typed_session_sql.backend import Record
from typed_session_sql.backends.sql import EpochMicros
from typed_session_sql.backends.sql.dialects.sqlite import SQLITE_PRAGMAS
from typed_session_sql.ids import IdHasher, new_cookie_value


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
        # The same store on SQLAlchemy's executor.
        self.sqla_backend = SqlBackend.from_url(url, pool_size=concurrency, execution="sqlalchemy")
        self.sqla = SessionStore(Profile, self.sqla_backend)
        self.memory = SessionStore(Profile, MemoryBackend())
        self.cookies: list[str] = []
        self.hashes: list[bytes] = []
        self.conns: list[aiosqlite.Connection] = []
        self.sync = sqlite3.connect(path, isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            self.sync.execute(pragma)
        columns = "data, version, created_at, expires_at, principal, authenticated_at"
        table = self.backend.table.name
        self.select_sql = f"SELECT {columns} FROM {table} WHERE {table}.id_hash = ?"
        self.update_sql = (
            f"UPDATE {table} SET data=?, expires_at=?, version=({table}.version + 1)"
            f" WHERE {table}.id_hash = ? AND {table}.version = ?"
        )

    async def setup(self) -> None:
        await self.backend.create_schema()
        hasher = IdHasher(None)
        now = self.store.now()
        expires = self.store.expiry.initial_expiry(now)
        assert expires is not None
        dialect = self.backend.engine.dialect
        to_micros = EpochMicros().process_bind_param
        micros = (to_micros(now, dialect), to_micros(expires, dialect))
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
            for pragma in SQLITE_PRAGMAS:
                await conn.execute(pragma)
            self.conns.append(conn)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()
        self.sync.close()
        for backend in (self.backend, self.sqla_backend):
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
                "store-sqla": loader(self.sqla),
            },
            "load+save": {
                "store": modifier(self.store),
                "aiosqlite": aio_modify,
                "sqlite3": sync_modify,
                "memory": modifier(self.memory),
                "store-sqla": modifier(self.sqla),
            },
        }


async def count_hops(bench: Bench) -> None:
    for label, variants in bench.ops().items():
        counts = {}
        for name in ("store", "store-sqla", "aiosqlite"):
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
    "store/sqla": ("store", "store-sqla"),
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
