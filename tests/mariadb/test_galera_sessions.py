"""Sessions on a 3-node MariaDB Galera cluster: the store through several nodes at once.

- A session saved through one node loads through another, with ``wsrep_sync_wait = 1``
  (reads wait until the node has applied what the cluster committed before them).
- Concurrent ``modify`` of one session through all three nodes: every increment lands. A
  lost certification reaches the backend as error 1213 (run again) or, when the server
  re-ran the statement itself (``wsrep_retry_autocommit``), as a version that no longer
  matches (the store replays the change): never a 503, never a lost update.
- Purge passes through two nodes at once (``GET_LOCK`` is each node's own) remove every
  expired row once, without an error.
- Schema revision 0002 upgrades a live table through node 1 while 0001-era requests run
  through all three: none fails (a deadlock is run again, as the backend does), and no
  node rewrote the table (InnoDB's table id is the same on each).
- A node killed under load (worker processes, as tests/production does for PostgreSQL):
  the app, connected to the two surviving nodes, keeps serving; every acknowledged write
  is on every node afterwards, the killed one included once it has rejoined, and nothing
  is resurrected.

Each scenario prints its figures on one line (and again under "galera figures").
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest

from tests.figures import Report
from tests.mariadb.galera import EVS_OPTIONS, GaleraCluster
from tests.migration_load import upgrade_under_load
from tests.production.load import (
    PHASE_BOUND,
    Load,
    around_a_fault,
    assert_nothing_lost,
    figures,
    shared_sessions,
    verdict,
)
from tests.production.workload import Counts, increment
from tests.support.names import unique_name
from typed_session_sql import (
    EventKind,
    SessionConflictError,
    SessionStore,
    SetCookie,
    SqlBackend,
    StoreUnavailableError,
)
from typed_session_sql.backends.sql import create_engine
from typed_session_sql.purge import purge_pass

pytestmark = [pytest.mark.anyio, pytest.mark.galera]

SYNC_WAIT = "SET SESSION wsrep_sync_wait = 1"

# What each app process's engine gets on Galera: asyncmy's connect and read timeouts (the
# read timeout bounds a statement the way asyncpg's command_timeout does), and causal reads.
ENGINE: dict[str, Any] = {
    "pool_size": 4,
    "max_overflow": 2,
    "pool_timeout": 5,
    "connect_args": {"connect_timeout": 5, "read_timeout": 10, "init_command": SYNC_WAIT},
}


def causal_url(galera: GaleraCluster, node: int) -> str:
    """Node ``node``'s URL, its connections reading causally (``wsrep_sync_wait = 1``)."""
    return f"{galera.url(node)}?init_command={quote(SYNC_WAIT)}"


@asynccontextmanager
async def backends(
    galera: GaleraCluster, table: str, *, sync_wait: bool = True, **options: Any
) -> AsyncIterator[list[SqlBackend]]:
    """One backend per node, on ``table`` (created through node 1)."""
    async with AsyncExitStack() as stack:
        opened = []
        for node in range(1, len(galera.nodes) + 1):
            url = causal_url(galera, node) if sync_wait else galera.url(node)
            backend = SqlBackend.from_url(url, table_name=table, **options)
            opened.append(await stack.enter_async_context(backend))
        await opened[0].create_schema()
        yield opened


def status_total(galera: GaleraCluster, name: str) -> int:
    """A wsrep status counter summed over the running nodes."""
    return sum(
        int(galera.status(node.number).get(name, "0")) for node in galera.nodes if node.running
    )


async def test_a_session_saved_through_one_node_loads_through_another(
    galera: GaleraCluster, report: Report
) -> None:
    rounds = 200
    missed: dict[bool, int] = {}
    for sync_wait in (False, True):
        async with backends(galera, unique_name("sessions"), sync_wait=sync_wait) as opened:
            stores = [SessionStore(Counts, backend) for backend in opened]
            missed[sync_wait] = 0
            for n in range(rounds):
                writer, reader = stores[n % 3], stores[(n + 1) % 3]
                saved = await writer.save(writer.new(Counts({"n": n})))
                assert isinstance(saved, SetCookie)
                loaded = await reader.load(saved.value)  # at once, through the next node
                if loaded is None or loaded.data.counts != {"n": n}:
                    missed[sync_wait] += 1
    report(
        f"read your writes across nodes: {rounds} sessions each saved through one node and "
        f"loaded at once through the next; missed with wsrep_sync_wait=0: {missed[False]}, "
        f"with wsrep_sync_wait=1: {missed[True]}"
    )
    assert missed[True] == 0


async def test_concurrent_modify_through_every_node_loses_nothing(
    galera: GaleraCluster, report: Report
) -> None:
    tasks_per_node, increments = 4, 25
    async with backends(galera, unique_name("sessions")) as opened:
        # Everyone writes the same session: many lost races in a row are expected here.
        stores = [SessionStore(Counts, backend, max_conflict_retries=1000) for backend in opened]
        saved = await stores[0].save(stores[0].new(Counts()))
        assert isinstance(saved, SetCookie)
        certification_failures = status_total(galera, "wsrep_local_cert_failures")
        outcomes: dict[str, int] = {"ok": 0, "conflict": 0, "unavailable": 0}
        replays: list[int] = []

        async def writer(store: SessionStore[Counts], key: str) -> None:
            for _ in range(increments):
                session = await store.load(saved.value)
                assert session is not None
                session.modify(increment(key))
                try:
                    await store.save(session)
                    outcomes["ok"] += 1
                except SessionConflictError:
                    outcomes["conflict"] += 1
                except StoreUnavailableError:
                    outcomes["unavailable"] += 1

        def count_replays(event: Any) -> None:
            if event.kind is EventKind.CONFLICT:
                replays.append(1)

        for store in stores:
            store.on_event = count_replays
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for node, store in enumerate(stores, 1):
                for task in range(tasks_per_node):
                    group.start_soon(writer, store, f"node{node}.t{task}")
        seconds = time.perf_counter() - started
        certification_failures = (
            status_total(galera, "wsrep_local_cert_failures") - certification_failures
        )
        finals = [await store.load(saved.value) for store in stores]
    total = 3 * tasks_per_node * increments
    counted = [sum(final.data.counts.values()) if final else None for final in finals]
    report(
        f"concurrent modify of one session: 3 nodes x {tasks_per_node} tasks x {increments} "
        f"increments in {seconds:.1f} s; acknowledged {outcomes['ok']}, conflicts "
        f"{outcomes['conflict']}, unavailable (503) {outcomes['unavailable']}; certification "
        f"failures {certification_failures}, replays {len(replays)}; stored on each node "
        f"{counted}"
    )
    assert outcomes == {"ok": total, "conflict": 0, "unavailable": 0}
    assert counted == [total, total, total]  # every acknowledged increment, on every node


async def test_purges_through_two_nodes_at_once_remove_each_row_once(
    galera: GaleraCluster, report: Report
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    expired, live = 3000, 100
    async with backends(galera, unique_name("sessions")) as opened:
        first, second, _ = opened
        rows = [
            {
                "id_hash": n.to_bytes(32, "big"),
                "data": b"{}",
                "version": 1,
                "created_at": now - timedelta(days=1),
                "expires_at": now + (timedelta(hours=1) if n < live else -timedelta(hours=1)),
            }
            for n in range(expired + live)
        ]
        async with first.engine.begin() as conn:
            await conn.execute(first.table.insert(), rows)
        async with first.purge_lock() as got_one, second.purge_lock() as got_two:
            both_held = got_one and got_two  # GET_LOCK is each node's own
        results = []

        async def purge(backend: SqlBackend) -> None:
            results.append(await purge_pass(backend, now, 200))

        async with anyio.create_task_group() as group:
            group.start_soon(purge, first)
            group.start_soon(purge, second)
        stats = await opened[2].stats(now)
    removed = [result.removed for result in results]
    report(
        f"two purge passes through two nodes at once: both held the purge lock {both_held}; "
        f"removed {removed} of {expired} expired rows, {stats.live} live rows left"
    )
    assert both_held
    assert sum(removed) == expired
    assert (stats.expired, stats.live) == (0, live)


async def test_revision_0002_upgrades_a_live_table_through_every_node(
    galera: GaleraCluster, report: Report
) -> None:
    table = unique_name("sessions")
    engines = [create_engine(causal_url(galera, node), **ENGINE) for node in (1, 2, 3)]
    try:
        started = time.perf_counter()
        served = await upgrade_under_load(engines[0], engines, table, None, f"`{table}`")
        seconds = time.perf_counter() - started
    finally:
        for engine in engines:
            await engine.dispose()
    report(
        f"revision 0002 on a live table: {served.during} requests of 0001-era code through 3 "
        f"nodes while it ran, {served.after} after, {served.reruns} deadlocks run again, "
        f"{seconds:.1f} s in all; InnoDB table id unchanged on every node"
    )


async def test_a_node_killed_under_load_loses_nothing(
    galera: GaleraCluster, tmp_path: Path, report: Report
) -> None:
    table = "sessions"
    survivors = [galera.url(1), galera.url(2)]
    cookies = await shared_sessions(causal_url(galera, 1), table, 16)
    evicted_after = 0.0

    async def kill_node_3(load: Load) -> None:
        nonlocal evicted_after
        killed = time.time()
        await anyio.to_thread.run_sync(galera.kill, 3)
        await anyio.to_thread.run_sync(galera.wait_for_size, 2, PHASE_BOUND)
        evicted_after = time.time() - killed

    load, fault_start, fault_end = await around_a_fault(
        survivors[0], table, cookies, tmp_path, kill_node_3, urls=survivors, engine=ENGINE
    )
    rejoined = time.monotonic()
    await anyio.to_thread.run_sync(galera.restart, 3)
    await anyio.to_thread.run_sync(galera.wait_for_size, 3)
    rejoined = time.monotonic() - rejoined
    results = [await verdict(load, causal_url(galera, node), table, cookies) for node in (1, 2, 3)]
    seen = figures(load, fault_start, fault_end)
    report(
        seen.line(
            "galera",
            f"node 3 of 3 SIGKILLed (processes on nodes 1 and 2), evicted after "
            f"{evicted_after:.2f} s ({EVS_OPTIONS.split(';')[2]}); rejoined by state transfer "
            f"in {rejoined:.1f} s",
            results[2],
        )
    )
    for result in results:  # node 1, node 2, and the rejoined node 3
        assert_nothing_lost(result, seen)
    assert seen.unavailable == 0  # no app connection was on the killed node: no 503 at all
