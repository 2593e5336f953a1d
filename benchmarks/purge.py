"""Purge benchmark on PostgreSQL: how fast expired rows go, and what it costs live traffic.

1. Fills a fresh table with ``--rows`` expired rows (server-side INSERT ... SELECT) plus
   ``--live`` live sessions saved through the store (their cookies drive the load).
2. Baseline: ``--concurrency`` tasks load live sessions for ``--seconds``; per-load latency.
3. The same loads while one purge pass (``--batch-size`` rows per DELETE) removes every
   expired row: rows/s, the longest single batch statement, and load latency meanwhile.
4. Baseline again, after the purge (a smaller table), then drops the table.

Run (PostgreSQL from TYPED_SESSION_SQL_TEST_POSTGRES_URL or --url):

    .venv/bin/python benchmarks/purge.py --rows 1000000

A benchmark, not a test: the figures are noisy on a shared 2-core machine; compare the
load latency with and without the purge within one run, never across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy import text

from typed_session_sql import SessionStore, SetCookie, SqlBackend
from typed_session_sql.backends.sql import create_engine
from typed_session_sql.purge import PurgeProgress, purge_pass

DEFAULT_URL = os.environ.get(
    "TYPED_SESSION_SQL_TEST_POSTGRES_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"
)
PAYLOAD = b'{"user_id":12345,"cart":[1,2,3,4,5],"flash":null,"csrf":"' + b"x" * 100 + b'"}'


@dataclass
class Loads:
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        ordered = sorted(self.latencies)
        if not ordered:
            return "no loads"
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        rate = len(ordered) / self.seconds if self.seconds else 0.0
        return f"{len(ordered):,} loads, {rate:,.0f}/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms"

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def run_loads(
    store: SessionStore[Any], cookies: list[str], concurrency: int, stop: anyio.Event
) -> Loads:
    loads = Loads()
    started = time.perf_counter()

    async def worker(offset: int) -> None:
        i = offset
        while not stop.is_set():
            cookie = cookies[i % len(cookies)]
            i += concurrency
            t0 = time.perf_counter()
            session = await store.load(cookie)
            loads.latencies.append(time.perf_counter() - t0)
            assert session is not None

    async with anyio.create_task_group() as tg:
        for n in range(concurrency):
            tg.start_soon(worker, n)
    loads.seconds = time.perf_counter() - started
    return loads


async def timed_loads(
    store: SessionStore[Any], cookies: list[str], concurrency: int, seconds: float
) -> Loads:
    stop = anyio.Event()
    result: list[Loads] = []

    async def loads() -> None:
        result.append(await run_loads(store, cookies, concurrency, stop))

    async with anyio.create_task_group() as tg:
        tg.start_soon(loads)
        await anyio.sleep(seconds)
        stop.set()
    return result[0]


async def fill(backend: SqlBackend, rows: int) -> float:
    table = backend.engine.dialect.identifier_preparer.format_table(backend.table)
    # Expired between 1 s and ~12 days ago; 32-byte ids from two md5s; a ~160-byte payload.
    insert = text(
        f"INSERT INTO {table} (id_hash, data, expires_at, created_at, version) "
        "SELECT decode(md5(i::text) || md5('x' || i::text), 'hex'), :data, "
        "  CAST(:now AS bigint) - 1000000 - i, CAST(:now AS bigint) - 2592000000000, 1 "
        "FROM generate_series(1, CAST(:rows AS integer)) AS i"
    )
    now_us = time.time_ns() // 1000
    started = time.perf_counter()
    async with backend.engine.connect() as conn:
        await conn.execute(insert, {"data": PAYLOAD, "now": now_us, "rows": rows})
        await conn.execute(text(f"VACUUM ANALYZE {table}"))
    return time.perf_counter() - started


async def make_live(store: SessionStore[Any], count: int) -> list[str]:
    cookies: list[str] = []

    async def saver(n: int) -> None:
        for _ in range(n):
            result = await store.save(store.new({"user_id": 12345, "cart": [1, 2, 3]}))
            assert isinstance(result, SetCookie)
            cookies.append(result.value)

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(saver, count // 16)
    return cookies


class StatementTimer(SqlBackend):
    """The backend, timing each purge batch (one DELETE statement) from call to return."""

    durations: list[float]

    async def purge(self, now: datetime, batch_size: int) -> int:
        started = time.perf_counter()
        try:
            return await super().purge(now, batch_size)
        finally:
            self.durations.append(time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    name = f"bench_purge_{os.getpid()}"
    engine = create_engine(args.url, pool_size=args.concurrency + 4)
    backend = StatementTimer(engine, table_name=name)
    backend.durations = []
    store: SessionStore[dict[str, Any]] = SessionStore(dict, backend)
    try:
        await backend.create_schema()
        fill_seconds = await fill(backend, args.rows)
        cookies = await make_live(store, args.live)
        stats = await backend.stats(store.now())
        print(
            f"table: {stats.expired:,} expired + {stats.live:,} live rows, "
            f"{(stats.size_bytes or 0) / 2**20:,.0f} MiB (filled in {fill_seconds:.1f} s)"
        )
        print(
            f"PostgreSQL, {args.concurrency} concurrent loads, batch size {args.batch_size}, "
            f"pause {args.pause_ms} ms between batches"
        )

        before = await timed_loads(store, cookies, args.concurrency, args.seconds)
        print(f"loads without purge:        {before.summary()}")

        timer = backend
        batches: list[PurgeProgress] = []
        stop = anyio.Event()
        during: list[Loads] = []

        async def loads() -> None:
            during.append(await run_loads(store, cookies, args.concurrency, stop))

        async with anyio.create_task_group() as tg:
            tg.start_soon(loads)
            started = time.perf_counter()
            result = await purge_pass(
                store.backend,
                store.now(),
                args.batch_size,
                on_batch=batches.append,
                pause=args.pause_ms / 1000,
            )
            removed = result.removed
            purge_seconds = time.perf_counter() - started
            stop.set()
        print(f"loads during purge:         {during[0].summary()}")
        durations = sorted(timer.durations)
        longest = durations[-1] * 1000
        longest_at = timer.durations.index(durations[-1]) + 1
        median = statistics.median(durations) * 1000
        p99 = durations[int(len(durations) * 0.99)] * 1000
        print(
            f"purge: {removed:,} rows in {len(batches)} statements, {purge_seconds:.1f} s, "
            f"{removed / purge_seconds:,.0f} rows/s; DELETE median {median:.1f} ms, "
            f"p99 {p99:.1f} ms, longest {longest:.1f} ms (statement {longest_at})"
        )
        after = await timed_loads(store, cookies, args.concurrency, args.seconds)
        print(f"loads after purge:          {after.summary()}")
        print(f"p99 during / without purge: {during[0].p99 / before.p99:.2f}x")
        assert removed == args.rows
    finally:
        async with backend.engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--live", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--pause-ms", type=float, default=0.0, help="wait between batches")
    parser.add_argument("--seconds", type=float, default=10.0)
    anyio.run(main, parser.parse_args())
