"""Part 1: load and load+save, the store against the raw drivers and the peers.

For each operation and concurrency, every contender of a group (PostgreSQL and Redis
together; SQLite apart; MariaDB apart) runs ``rounds`` times for ``seconds``, the order
rotating each round, so drift on a shared machine shows up as spread instead of as a
difference between contenders. Before timing, a counting pass runs each operation through
the wire counters (``tests/support/wire.py``) on a second instance of each contender.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contenders import (
    AiosqliteConnections,
    AsyncmyConnections,
    AsyncmyPool,
    AsyncmyPrepared,
    AsyncpgConnections,
    AsyncpgPool,
    Contender,
    Endpoints,
    Shared,
    StoreAppEngine,
    StoreMariadb,
    StoreMariadbSqlAlchemy,
    StoreOwnEngine,
    StoreSqlite,
)
from peers import PEERS, delete_redis_keys
from timing import Sample, median, run_async, run_threads

from tests.support.wire import CountingProxy, StatementCounter

OPERATIONS = ("load", "load+save")
CONCURRENCY = (1, 16)
FLOORS = {"postgres": "asyncpg-pool", "sqlite": "aiosqlite", "mariadb": "asyncmy-pool"}
MARIADB: list[type[Contender]] = [
    StoreMariadb,
    StoreMariadbSqlAlchemy,
    AsyncmyPool,
    AsyncmyConnections,
    AsyncmyPrepared,
]


def group(server: str) -> str:
    """The group a contender on ``server`` is timed in: Redis goes with PostgreSQL."""
    return server if server in FLOORS else "postgres"


@dataclass
class Settings:
    seconds: float
    rounds: int
    sessions: int
    count_ops: int
    warmup: float


def available_peers() -> tuple[list[type[Contender]], list[str]]:
    """The peers whose packages are importable here, and the keys of those that are not."""
    present, absent = [], []
    for key, (contender, modules) in PEERS.items():
        if all(importlib.util.find_spec(module) is not None for module in modules):
            present.append(contender)
        else:
            absent.append(key)
    return present, absent


def _op(contender: Contender, operation: str) -> Any:
    return contender.load if operation == "load" else contender.modify


async def measure(contender: Contender, operation: str, concurrency: int, seconds: float) -> Sample:
    op = _op(contender, operation)
    if contender.threaded:
        assert contender.pool is not None
        return await asyncio.to_thread(
            run_threads, op, concurrency, seconds, contender.keys, contender.pool
        )
    return await run_async(op, concurrency, seconds, contender.keys)


async def count(
    contender: Contender, operation: str, ops: int, proxies: dict[str, CountingProxy]
) -> dict[str, float]:
    """Round trips and statements per operation, one operation at a time."""
    await measure_n(contender, operation, 3)  # connect, prepare, fill caches
    proxy = proxies.get(contender.server)
    if proxy is not None:
        proxy.reset()
    StatementCounter.count = 0
    await measure_n(contender, operation, ops)
    if proxy is not None:
        seen = proxy.counts
        return {"round_trips": seen.round_trips / ops, "statements": seen.statements / ops}
    per_op = StatementCounter.count / ops  # SQLite: each statement is one call into SQLite
    return {"round_trips": per_op, "statements": per_op}


async def measure_n(contender: Contender, operation: str, ops: int) -> None:
    """``ops`` operations one after another (a threaded contender's all in one thread, on
    that thread's one connection)."""
    op = _op(contender, operation)
    if contender.threaded:

        def in_one_thread() -> None:
            for i in range(ops):
                op(0, i % contender.keys)

        await contender.threads(in_one_thread)
        return
    for i in range(ops):
        await op(0, i % contender.keys)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    rates = [s.rate for s in samples]
    return {
        "ops_per_s": median(rates),
        "ops_per_s_rounds": [round(r, 1) for r in rates],
        "p50_ms": median([s.p50_ms for s in samples]),
        "p99_ms": median([s.p99_ms for s in samples]),
        "p99_ms_rounds": [round(s.p99_ms, 3) for s in samples],
        "ops": sum(s.ops for s in samples),
    }


async def run(
    settings: Settings,
    direct: Endpoints,
    counted: Endpoints,
    proxies: dict[str, CountingProxy],
    shared: Shared,
    log: Callable[[str], None],
    require_all: bool,
) -> dict[str, Any]:
    peers, absent = available_peers()
    if absent and require_all:
        raise SystemExit(f"peers not installed: {', '.join(absent)} (nox -s bench installs them)")
    if any(peer.key == "django" for peer in peers):
        from peers import configure_django

        configure_django(direct, counted)
    kinds: list[type[Contender]] = [
        StoreOwnEngine,
        StoreAppEngine,
        AsyncpgPool,
        AsyncpgConnections,
        *peers,
        StoreSqlite,
        AiosqliteConnections,
        *(MARIADB if direct.mariadb_host else []),
    ]
    timed: list[Contender] = []
    try:
        for kind in kinds:
            contender = kind()
            timed.append(contender)
            await contender.open(direct, shared)
            await contender.seed(shared)
            log(f"  seeded {contender.key}")

        wire: dict[str, dict[str, dict[str, float]]] = {}
        for kind in kinds:
            twin = kind()
            await twin.open(counted, shared)
            try:
                wire[twin.key] = {
                    operation: await count(twin, operation, settings.count_ops, proxies)
                    for operation in OPERATIONS
                }
            finally:
                await twin.close()
            log(f"  counted {twin.key}: {wire[twin.key]}")

        results: dict[str, Any] = {}
        for name, floor in FLOORS.items():
            members = [c for c in timed if group(c.server) == name]
            if members:
                results[name] = await _alternate(members, settings, floor, log)
        return {
            "contenders": {
                c.key: {"label": c.label, "server": c.server, "wire": wire[c.key]} for c in timed
            },
            "absent": absent,
            "results": results,
        }
    finally:
        for contender in timed:
            await contender.close()
        if shared.redis_prefix:
            await delete_redis_keys(direct, shared.redis_prefix)


async def _alternate(
    group: list[Contender], settings: Settings, floor: str, log: Callable[[str], None]
) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for operation in OPERATIONS:
        for concurrency in CONCURRENCY:
            for contender in group:  # warm up: every connection of the pool, caches
                await measure(contender, operation, concurrency, settings.warmup)
            samples: dict[str, list[Sample]] = {c.key: [] for c in group}
            for r in range(settings.rounds):
                k = r % len(group)
                for contender in group[k:] + group[:k]:
                    sample = await measure(contender, operation, concurrency, settings.seconds)
                    samples[contender.key].append(sample)
            cell = {key: summarize(values) for key, values in samples.items()}
            for key, values in samples.items():  # ratios to the floor, round by round
                ratios = [
                    mine.rate / base.rate for mine, base in zip(values, samples[floor], strict=True)
                ]
                cell[key]["ratio"] = median(ratios)
                cell[key]["ratio_rounds"] = [round(x, 3) for x in ratios]
            name = f"{operation} c={concurrency}"
            cells[name] = cell
            log(
                f"  {name}: "
                + ", ".join(f"{key} {cell[key]['ops_per_s']:,.0f}/s" for key in samples)
            )
    return cells
