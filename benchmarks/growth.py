"""Part 4: growth. Load and save latency with 1k, 100k and 1M rows in the table, and the
purge of 1M expired rows with its effect on concurrent loads.

Each table holds 1,000 live sessions saved through the store (the ones loaded and saved)
and expired rows filled server-side (``INSERT ... SELECT`` over ``generate_series``, as
benchmarks/purge.py does) up to its size: a primary-key lookup does not care whether the
other rows are live. The sizes alternate round by round. Then the largest table gets
expired rows up to its full size and one purge pass (``store.purge_expired``, 1,000 rows
a batch, from a second store with its own engine) deletes them while 16 tasks keep
loading live sessions; load latency before, during and after is reported.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import msgspec
from contenders import (
    CONCURRENCY_MAX,
    Endpoints,
    Visitor,
    load_once,
    modify_once,
    save_concurrently,
    visitor,
)
from sqlalchemy import text
from timing import AsyncOp, Sample, median, percentile, run_async, run_until

from typed_session_sql import SessionStore, SqlBackend

LIVE = 1000


async def fill_expired(backend: SqlBackend, first: int, rows: int) -> None:
    """Add ``rows`` expired rows (ids derived from ``first`` .. ``first + rows - 1``)."""
    if rows <= 0:
        return
    table = backend.engine.dialect.identifier_preparer.format_table(backend.table)
    insert = text(
        f"INSERT INTO {table} (id_hash, data, expires_at, created_at, version) "
        "SELECT decode(md5(i::text) || md5('x' || i::text), 'hex'), :data, "
        "  CAST(:now AS bigint) - 1000000 - i, CAST(:now AS bigint) - 2592000000000, 1 "
        "FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS i"
    )
    params = {
        "data": msgspec.json.encode(visitor(0)),
        "now": time.time_ns() // 1000,
        "first": first,
        "last": first + rows - 1,
    }
    async with backend.engine.connect() as conn:
        await conn.execute(insert, params)
        await conn.execute(text(f"VACUUM ANALYZE {table}"))


class Table:
    """One table of a given size, its store and the live sessions' cookies."""

    def __init__(self, at: Endpoints, name: str, size: int) -> None:
        self.size = size
        self.backend = SqlBackend.from_url(at.pg_url(), table_name=name, pool_size=CONCURRENCY_MAX)
        self.store = SessionStore(Visitor, self.backend)
        self.cookies: list[str] = []

    async def fill(self) -> None:
        await self.backend.create_schema()
        live = min(LIVE, self.size)
        self.cookies = await save_concurrently(self.store, live)
        await fill_expired(self.backend, 0, self.size - live)

    async def load(self, w: int, k: int) -> None:
        await load_once(self.store, self.cookies[k])

    async def modify(self, w: int, k: int) -> None:
        await modify_once(self.store, self.cookies[k])

    async def drop(self) -> None:
        async with self.backend.engine.begin() as conn:
            await conn.run_sync(self.backend.metadata.drop_all)
        await self.backend.dispose()


def _latency(sample: Sample) -> dict[str, float]:
    return {"ops_per_s": sample.rate, "p50_ms": sample.p50_ms, "p99_ms": sample.p99_ms}


async def run(
    at: Endpoints,
    prefix: str,
    sizes: tuple[int, ...],
    seconds: float,
    rounds: int,
    purge_seconds: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    tables = [Table(at, f"{prefix}_growth_{size}", size) for size in sizes]
    try:
        for table in tables:
            started = time.perf_counter()
            await table.fill()
            log(f"  {table.size:,} rows filled in {time.perf_counter() - started:.1f} s")
        growth = await _latencies(tables, seconds, rounds, log)
        purge = await _purge(at, tables[-1], purge_seconds, log)
    finally:
        for table in tables:
            await table.drop()
    return {"live_sessions": LIVE, "latency": growth, "purge": purge}


async def _latencies(
    tables: list[Table], seconds: float, rounds: int, log: Callable[[str], None]
) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for operation in ("load", "load+save"):
        for concurrency in (1, CONCURRENCY_MAX):
            samples: dict[int, list[Sample]] = {t.size: [] for t in tables}

            def op(table: Table, operation: str = operation) -> AsyncOp:
                return table.load if operation == "load" else table.modify

            for table in tables:
                await run_async(op(table), concurrency, seconds / 4, len(table.cookies))
            for r in range(rounds):
                k = r % len(tables)
                for table in tables[k:] + tables[:k]:
                    sample = await run_async(op(table), concurrency, seconds, len(table.cookies))
                    samples[table.size].append(sample)
            name = f"{operation} c={concurrency}"
            cells[name] = {
                str(size): {
                    "ops_per_s": median([s.rate for s in values]),
                    "p50_ms": median([s.p50_ms for s in values]),
                    "p99_ms": median([s.p99_ms for s in values]),
                    "p99_ms_rounds": [round(s.p99_ms, 3) for s in values],
                }
                for size, values in samples.items()
            }
            log(
                f"  {name}: "
                + ", ".join(
                    f"{size:,} rows p50 {cells[name][str(size)]['p50_ms']:.2f} ms"
                    f" p99 {cells[name][str(size)]['p99_ms']:.2f} ms"
                    for size in samples
                )
            )
    return cells


async def _purge(
    at: Endpoints, table: Table, seconds: float, log: Callable[[str], None]
) -> dict[str, Any]:
    live = len(table.cookies)
    await fill_expired(table.backend, table.size - live, live)  # now `size` expired rows
    purger_backend = SqlBackend.from_url(at.pg_url(), table_name=table.backend.table.name)
    purger = SessionStore(Visitor, purger_backend)
    progress: list[Any] = []
    try:
        before = await run_async(table.load, CONCURRENCY_MAX, seconds, live)
        stop = asyncio.Event()
        loads = asyncio.create_task(run_until(table.load, CONCURRENCY_MAX, live, stop))
        started = time.perf_counter()
        try:
            removed = await purger.purge_expired(batch_size=1000, on_batch=progress.append)
        finally:
            took = time.perf_counter() - started
            stop.set()
            during = await loads
        after = await run_async(table.load, CONCURRENCY_MAX, seconds, live)
    finally:
        await purger_backend.dispose()
    marks = [0.0] + [p.seconds for p in progress]
    batches = [b - a for a, b in itertools.pairwise(marks)]
    result = {
        "expired_rows": table.size,
        "removed": removed,
        "seconds": took,
        "rows_per_s": removed / took,
        "batches": len(batches),
        "batch_ms": {
            "p50": median(batches) * 1000,
            "p99": percentile(batches, 99) * 1000,
            "max": max(batches, default=0.0) * 1000,
        },
        "loads": {"before": _latency(before), "during": _latency(during), "after": _latency(after)},
    }
    log(
        f"  purge: {removed:,} rows in {took:.1f} s ({removed / took:,.0f}/s); load p99"
        f" {before.p99_ms:.2f} ms before, {during.p99_ms:.2f} ms during"
    )
    return result
