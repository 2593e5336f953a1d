"""Purge benchmark on PostgreSQL: how fast expired rows go, and what it costs live traffic,
paced (the default, `typed_session_sql.pacing`) against unpaced (``pacing=None``: 1,000-row
batches back to back, as before pacing).

1. Fills a fresh table with ``--rows`` expired rows (server-side INSERT ... SELECT) plus
   ``--live`` live sessions saved through the store (their cookies drive the load); before
   each purge below it tops the expired rows up to ``--rows`` again, so no purge runs out.
2. ``--rounds`` rounds of three phases of ``--seconds`` each, in the same run: 16 tasks
   (``--concurrency``) load live sessions with no purge, then during an unpaced purge,
   then during a paced one (each purge cancelled when its phase ends: a paced pass under
   load is meant to take long). Per-load latency and the purge's rows/s in each.
3. Idle: a paced pass, then an unpaced one, with nothing else running, each for at most
   ``--seconds``: rows/s.

The targets (issue 20): the loads' p99 during a paced purge at most 1.5x the p99 without
one (the median over rounds of each round's ratio), and an idle database purged at
100,000 rows/s or more. Run (PostgreSQL from TYPED_SESSION_SQL_TEST_POSTGRES_URL or --url):

    .venv/bin/python benchmarks/purge.py --rows 1000000

`benchmarks/run.py` runs it as its ``purge`` part (``nox -s bench``). A benchmark, not a
test: the figures are noisy on a shared 2-core machine; compare within one run, never
across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import anyio
from sqlalchemy import text

from typed_session_sql import SessionStore, SetCookie, SqlBackend
from typed_session_sql.backends.sql import create_engine
from typed_session_sql.pacing import DEFAULT_PACING, PurgePacing
from typed_session_sql.purge import PurgeProgress, purge_pass

DEFAULT_URL = os.environ.get(
    "TYPED_SESSION_SQL_TEST_POSTGRES_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test"
)
PAYLOAD = b'{"user_id":12345,"cart":[1,2,3,4,5],"flash":null,"csrf":"' + b"x" * 100 + b'"}'


P99_TARGET = 1.5
"""The most a paced purge may raise the loads' p99, as a ratio to no purge."""
IDLE_TARGET = 100_000
"""The fewest rows/s a paced purge removes from an idle database."""


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
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else 0.0

    def figures(self) -> dict[str, float]:
        rate = len(self.latencies) / self.seconds if self.seconds else 0.0
        return {"ops_per_s": rate, "p50_ms": self.p50, "p99_ms": self.p99}


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


async def fill(backend: SqlBackend, rows: int, first: int = 1) -> float:
    """Insert ``rows`` expired rows, numbered from ``first`` (their ids follow from it)."""
    table = backend.engine.dialect.identifier_preparer.format_table(backend.table)
    # Expired between 1 s and ~12 days ago; 32-byte ids from two md5s; a ~160-byte payload.
    insert = text(
        f"INSERT INTO {table} (id_hash, data, expires_at, created_at, version) "
        "SELECT decode(md5(i::text) || md5('x' || i::text), 'hex'), :data, "
        "  CAST(:now AS bigint) - 1000000 - i, CAST(:now AS bigint) - 2592000000000, 1 "
        "FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS i"
    )
    now_us = time.time_ns() // 1000
    started = time.perf_counter()
    async with backend.engine.connect() as conn:
        params = {"data": PAYLOAD, "now": now_us, "first": first, "last": first + rows - 1}
        await conn.execute(insert, params)
        await conn.execute(text(f"VACUUM ANALYZE {table}"))
    return time.perf_counter() - started


class Expired:
    """Keeps the table at ``rows`` expired rows before each purge, so that no purge runs out
    of rows before its phase ends (which would flatter it: loads without a purge)."""

    def __init__(self, store: SessionStore[Any], rows: int) -> None:
        self.store, self.rows, self.numbered = store, rows, 0
        self.filled = 0
        """Rows inserted in all."""

    async def top_up(self) -> None:
        backend = self.store.backend
        assert isinstance(backend, SqlBackend)
        missing = self.rows - (await backend.stats(self.store.now())).expired
        if missing > 0:
            await fill(backend, missing, first=self.numbered + 1)
            self.numbered += missing
            self.filled += missing


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


@dataclass
class Purged:
    """What one (possibly cancelled) purge pass removed, and in how long."""

    removed: int = 0
    seconds: float = 0.0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.removed / self.seconds if self.seconds else 0.0

    def figures(self) -> dict[str, float]:
        sizes = sorted(self.batch_sizes)
        return {
            "removed": self.removed,
            "seconds": self.seconds,
            "rows_per_s": self.rate,
            "batches": self.batches,
            "median_batch_rows": statistics.median(sizes) if sizes else 0,
        }


async def purge_for(store: SessionStore[Any], seconds: float, pacing: PurgePacing | None) -> Purged:
    """One pass with ``pacing`` (None: unpaced), cancelled after ``seconds`` if not done."""
    purged = Purged()

    def on_batch(progress: PurgeProgress) -> None:
        purged.removed, purged.batches = progress.total, progress.batch
        purged.batch_sizes.append(progress.removed)

    started = time.perf_counter()
    with anyio.move_on_after(seconds):
        await purge_pass(store.backend, store.now(), on_batch=on_batch, pacing=pacing)
    purged.seconds = time.perf_counter() - started
    return purged


async def timed_loads(
    store: SessionStore[Any],
    cookies: list[str],
    concurrency: int,
    seconds: float,
    purge: Callable[[], Awaitable[Purged]] | None = None,
) -> tuple[Loads, Purged | None]:
    """Loads for ``seconds``, while ``purge`` runs if given (it stops by itself in time)."""
    stop = anyio.Event()
    during: list[Loads] = []

    async def loads() -> None:
        during.append(await run_loads(store, cookies, concurrency, stop))

    async with anyio.create_task_group() as tg:
        tg.start_soon(loads)
        started = time.perf_counter()
        purged = await purge() if purge is not None else None
        # Load on for the whole phase, the purge ended early or not.
        await anyio.sleep(max(0.0, seconds - (time.perf_counter() - started)))
        stop.set()
    return during[0], purged


async def measure(
    url: str,
    *,
    rows: int,
    live: int = 2_000,
    concurrency: int = 16,
    seconds: float = 5.0,
    rounds: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole benchmark on the PostgreSQL at ``url``, in a table of its own (dropped at
    the end); the figures as a dict (results.json's ``purge``)."""
    name = f"bench_purge_{os.getpid()}"
    engine = create_engine(url, pool_size=concurrency + 4)
    backend = SqlBackend(engine, table_name=name)
    store: SessionStore[dict[str, Any]] = SessionStore(dict, backend)
    try:
        await backend.create_schema()
        expired = Expired(store, rows)
        started = time.perf_counter()
        await expired.top_up()
        cookies = await make_live(store, live)
        log(f"  purge: {rows:,} expired rows filled in {time.perf_counter() - started:.1f} s")
        phases: dict[str, list[dict[str, Any]]] = {"none": [], "unpaced": [], "paced": []}
        ratios: dict[str, list[float]] = {"unpaced": [], "paced": []}
        for round_ in range(rounds):
            none, _ = await timed_loads(store, cookies, concurrency, seconds)
            phases["none"].append({"loads": none.figures()})
            for key, pacing in (("unpaced", None), ("paced", DEFAULT_PACING)):
                await expired.top_up()
                loads, purged = await timed_loads(
                    store, cookies, concurrency, seconds, partial(purge_for, store, seconds, pacing)
                )
                assert purged is not None
                phases[key].append({"loads": loads.figures(), "purge": purged.figures()})
                ratios[key].append(loads.p99 / none.p99 if none.p99 else 0.0)
            log(
                f"  purge round {round_ + 1}: load p99 {none.p99:.2f} ms without a purge, "
                f"{phases['unpaced'][-1]['loads']['p99_ms']:.2f} ms unpaced "
                f"({phases['unpaced'][-1]['purge']['rows_per_s']:,.0f} rows/s), "
                f"{phases['paced'][-1]['loads']['p99_ms']:.2f} ms paced "
                f"({phases['paced'][-1]['purge']['rows_per_s']:,.0f} rows/s)"
            )
        idle = {}
        for key, pacing in (("paced", DEFAULT_PACING), ("unpaced", None)):
            await expired.top_up()
            idle[key] = (await purge_for(store, seconds, pacing)).figures()
        p99_ratio = {key: statistics.median(values) for key, values in ratios.items()}
        result = {
            "expired_rows": rows,
            "filled_rows": expired.filled,
            "live_sessions": live,
            "concurrency": concurrency,
            "seconds": seconds,
            "rounds": rounds,
            "pacing": asdict(DEFAULT_PACING),
            "under_load": phases,
            "p99_ratio": p99_ratio,
            "p99_ratio_rounds": ratios,
            "idle": idle,
            "targets": {"p99_ratio": P99_TARGET, "idle_rows_per_s": IDLE_TARGET},
            "met": {
                "p99_ratio": p99_ratio["paced"] <= P99_TARGET,
                "idle_rows_per_s": idle["paced"]["rows_per_s"] >= IDLE_TARGET,
            },
        }
        log(
            f"  purge: paced p99 {p99_ratio['paced']:.2f}x no purge (target <= {P99_TARGET}x; "
            f"unpaced {p99_ratio['unpaced']:.2f}x); idle paced "
            f"{idle['paced']['rows_per_s']:,.0f} rows/s (target >= {IDLE_TARGET:,}; unpaced "
            f"{idle['unpaced']['rows_per_s']:,.0f})"
        )
        return result
    finally:
        async with backend.engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
        await engine.dispose()


async def main(args: argparse.Namespace) -> None:
    await measure(
        args.url,
        rows=args.rows,
        live=args.live,
        concurrency=args.concurrency,
        seconds=args.seconds,
        rounds=args.rounds,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--live", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=3)
    anyio.run(main, parser.parse_args())
