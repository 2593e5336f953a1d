"""Part 4: growth. Load and save latency with 1k, 100k and 1M rows in the table (10M with
``--growth-max-rows 10000000``), the size of the table and of each index, and the purge of
all the expired rows of each table with its effect on concurrent loads.

Each table holds 1,000 live sessions saved through the store (the ones loaded and saved)
and expired rows filled server-side (``INSERT ... SELECT`` over ``generate_series``, a
million rows a statement, as benchmarks/purge.py does) up to its size: a primary-key
lookup does not care whether the other rows are live. The sizes alternate round by round.
Then each table, smallest first, gets expired rows up to its full size and one purge pass
(the library's `purge_pass`, 1,000 rows a batch, over a second backend with its own
engine) deletes them while 16 tasks keep loading live sessions; load latency before,
during and after is reported, and the sizes after the pass (before any vacuum: the space
of deleted rows is reused, not returned). How long each step took is in the results.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime
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
from typed_session_sql.purge import purge_pass

LIVE = 1000
FILL_CHUNK = 1_000_000  # rows a statement: one transaction stays short and its WAL bounded


async def fill_expired(backend: SqlBackend, first: int, rows: int) -> None:
    """Add ``rows`` expired rows (ids derived from ``first`` .. ``first + rows - 1``)."""
    table = backend.engine.dialect.identifier_preparer.format_table(backend.table)
    insert = text(
        f"INSERT INTO {table} (id_hash, data, expires_at, created_at, version) "
        "SELECT decode(md5(i::text) || md5('x' || i::text), 'hex'), :data, "
        "  CAST(:now AS bigint) - 1000000 - i, CAST(:now AS bigint) - 2592000000000, 1 "
        "FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS i"
    )
    data, now = msgspec.json.encode(visitor(0)), time.time_ns() // 1000
    async with backend.engine.connect() as conn:  # autocommit: one transaction a chunk
        for start in range(first, first + rows, FILL_CHUNK):
            last = min(start + FILL_CHUNK, first + rows) - 1
            await conn.execute(insert, {"data": data, "now": now, "first": start, "last": last})
        if rows > 0:
            await conn.execute(text(f"VACUUM ANALYZE {table}"))


async def table_sizes(backend: SqlBackend) -> dict[str, int]:
    """Bytes of the table (heap), of each index, and in all (with TOAST)."""
    name = backend.table.name
    async with backend.engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes"
                " WHERE relname = :t ORDER BY indexrelname"
            ),
            {"t": name},
        )
        # Named by what they index ("pkey", "expires_at", "principal"), not by the table.
        indexes = {
            index.removeprefix(f"ix_{name}_").removeprefix(f"{name}_"): int(size)
            for index, size in found.all()
        }
        heap = await conn.execute(
            text(
                "SELECT pg_relation_size(oid), pg_total_relation_size(oid) FROM pg_class"
                " WHERE relname = :t AND relkind = 'r'"
            ),
            {"t": name},
        )
        table, total = heap.one()
    return {"table": int(table), **indexes, "total": int(total)}


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
    steps: dict[str, float] = {}
    filled: dict[str, Any] = {}
    try:
        for table in tables:
            started = time.perf_counter()
            await table.fill()
            steps[f"fill {table.size}"] = took = time.perf_counter() - started
            filled[str(table.size)] = await table_sizes(table.backend)
            log(
                f"  {table.size:,} rows filled in {took:.1f} s:"
                f" {filled[str(table.size)]['total'] / 1e6:,.0f} MB in all"
            )
        started = time.perf_counter()
        growth = await _latencies(tables, seconds, rounds, log)
        steps["latency"] = time.perf_counter() - started
        purges: dict[str, Any] = {}
        for table in tables:
            started = time.perf_counter()
            purges[str(table.size)] = await _purge(at, table, purge_seconds, log)
            steps[f"purge {table.size}"] = time.perf_counter() - started
    finally:
        for table in tables:
            await table.drop()
    return {
        "live_sessions": LIVE,
        "latency": growth,
        "bytes": filled,
        # The largest table's pass under its old key (tests/test_bench.py, report.py).
        "purge": purges[str(tables[-1].size)],
        "purges": purges,
        "step_seconds": steps,
    }


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
    progress: list[Any] = []
    try:
        before = await run_async(table.load, CONCURRENCY_MAX, seconds, live)
        stop = asyncio.Event()
        loads = asyncio.create_task(run_until(table.load, CONCURRENCY_MAX, live, stop))
        started = time.perf_counter()
        try:
            cutoff = datetime.now(UTC)  # every filled row expired before it
            passed = await purge_pass(purger_backend, cutoff, 1000, on_batch=progress.append)
            removed = passed.removed
        finally:
            took = time.perf_counter() - started
            stop.set()
            during = await loads
        after = await run_async(table.load, CONCURRENCY_MAX, seconds, live)
        left = await table_sizes(table.backend)
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
        "bytes_after": left,
    }
    log(
        f"  purge of {table.size:,}: {removed:,} rows in {took:.1f} s ({removed / took:,.0f}/s);"
        f" load p99 {before.p99_ms:.2f} ms before, {during.p99_ms:.2f} ms during"
    )
    return result
