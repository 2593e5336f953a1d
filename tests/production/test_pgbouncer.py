"""PgBouncer (Debian's 1.18) in front of the test server, in session and transaction mode.

What holds, tested here: the whole contract suite passes through PgBouncer on every driver
and executor; each store operation costs the round trips it costs direct (counted at the
wire: PgBouncer's own ``SHOW STATS`` counts transactions and queries, and cannot see a
Flush round trip); many concurrent writers through a small server pool lose nothing; the
purge lock holds through transaction pooling.

What transaction mode needs on 1.18 (before PgBouncer 1.21 there is no
``max_prepared_statements``): no *named* prepared statement, since the next transaction
may run on another server connection. Both drivers name their statements by default; the
backend's setting ``prepared_statements=false`` in the URL turns that off. psycopg 3 then
sends each statement in one round trip, as direct; asyncpg describes each statement in one
round trip and runs it in a second, both on one server connection (asyncpg has no public
way to run an unnamed statement in one). Without the setting, each failure names it.
docs/production.md tells the same with the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.clock import FakeClock
from tests.markdown import blocks
from tests.production.backends import (
    ASYNCPG_DEFAULT,
    ASYNCPG_UNNAMED,
    PSYCOPG_DEFAULT,
    PSYCOPG_UNNAMED,
    Execution,
    Settings,
    fresh_backend,
    open_backend,
)
from tests.production.conftest import Report
from tests.production.contract_plugin import TARGETS_ENV
from tests.purge_support import insert_rows, rows
from tests.selection import require_module, require_tools
from tests.sql_backends import require_postgres
from tests.support.servers import PgBouncer, pgbouncer
from tests.support.wire import CountingProxy
from typed_session_sql import (
    ExpiryPolicy,
    SessionStore,
    SetCookie,
    SqlBackend,
    StoreUnavailableError,
)
from typed_session_sql.backends.sql import create_engine
from typed_session_sql.backends.sql.locks import lock_key
from typed_session_sql.purge import purge_pass

pytestmark = pytest.mark.production

ROOT = Path(__file__).parents[2]
UPSTREAM = "postgresql+asyncpg://root@127.0.0.1:5432/test"
CONTRACT_TIMEOUT = 600.0  # seconds: a bound on a hung run, not a wait for time to pass

TWO_ROUND_TRIPS = (
    "asyncpg without named statements describes each statement before binding it: "
    "Parse/Describe/Flush, then Parse/Bind/Execute/Sync, two round trips where a named "
    "statement takes one; asyncpg has no public call that runs an unnamed statement in one "
    "(psycopg does: the configuration docs/production.md recommends here)"
)


@pytest.fixture
def upstream_port() -> int:
    """The shared test server, which each PgBouncer here sits in front of."""
    require_postgres()
    require_tools("pgbouncer", "psql")
    return 5432


def requires(settings: Settings) -> None:
    require_module(settings.driver)


def the_cases(
    *cases: tuple[str, Settings, str | None],
) -> list[Any]:
    """(mode, settings, xfail reason) -> one param per executor the driver has."""
    params = []
    for mode, settings, xfail in cases:
        for execution in settings.executions:
            marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
            params.append(
                pytest.param(
                    mode, settings, execution, id=f"{mode}-{settings.name}-{execution}", marks=marks
                )
            )
    return params


# -- the contract suite ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "settings"),
    [
        pytest.param("session", ASYNCPG_DEFAULT, id="session-asyncpg"),
        pytest.param("session", PSYCOPG_DEFAULT, id="session-psycopg"),
        pytest.param("transaction", ASYNCPG_UNNAMED, id="transaction-asyncpg-unnamed"),
        pytest.param("transaction", PSYCOPG_UNNAMED, id="transaction-psycopg-unnamed"),
    ],
)
def test_contract_suite_passes_through_pgbouncer(
    upstream_port: int, mode: str, settings: Settings, report: Report
) -> None:
    requires(settings)
    contract = sorted(str(path.relative_to(ROOT)) for path in ROOT.glob("tests/contract/test_*.py"))
    with pgbouncer(mode, upstream_port=upstream_port) as bouncer:
        targets = {
            f"pgbouncer-{mode}-{settings.name}-{execution}": {
                "url": bouncer.url(),
                "execution": execution,
                "settings": settings.name,
            }
            for execution in settings.executions
        }
        env = {**os.environ, TARGETS_ENV: json.dumps(targets)}
        before = bouncer.stats()
        started = time.monotonic()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "tests.production.contract_plugin",
                "-p",
                "no:cacheprovider",
                "-q",
                "-x",  # the first failure tells: an expected failure costs seconds, not minutes
                "-o",
                "addopts=",
                *contract,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=CONTRACT_TIMEOUT,
            check=False,
        )
        seconds = time.monotonic() - started
        after = bouncer.stats()
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-40:])
    assert run.returncode == 0, tail
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", run.stdout)) else 0
    per_target = len(contract) and passed // len(targets)
    assert per_target >= 50, tail  # the suite ran, not a filtered sliver of it
    assert not re.search(r"\d+ (failed|error)", run.stdout), tail
    report(
        f"pgbouncer {mode} {settings.name}: contract suite {passed} passed"
        f" ({per_target} x {'+'.join(settings.executions)}) in {seconds:.1f} s;"
        f" PgBouncer carried {after['total_xact_count'] - before['total_xact_count']}"
        f" transactions, {after['total_query_count'] - before['total_query_count']} queries"
    )


# -- round trips ----------------------------------------------------------------------------


@dataclass
class Tally:
    count: int = 0


def bump(tally: Tally) -> None:
    tally.count += 1


OPERATIONS = ("create", "load", "modify", "sign_in", "renew", "list", "delete")
SAMPLES = 8


async def round_trips_per_operation(
    wire: CountingProxy, url: str, execution: Execution, settings: Settings
) -> tuple[dict[str, float], dict[str, float]]:
    """Round trips (at the wire) and ReadyForQuery messages per store operation, warm.

    One pooled connection (``pool_size=1``), so a statement prepared once is there the
    next time; each operation runs a few times first, uncounted.
    """
    clock = FakeClock()
    policy = ExpiryPolicy(idle=timedelta(hours=1), renew_after=timedelta(minutes=5))
    trips: dict[str, float] = {}
    ready: dict[str, float] = {}
    async with fresh_backend(url, execution, settings, pool_size=1, max_overflow=0) as backend:
        store = SessionStore(Tally, backend, clock=clock, expiry=policy)

        async def cycle(counting: bool) -> None:
            async def measure(name: str, operation: Awaitable[Any]) -> Any:
                before, before_ready = wire.waits, wire.server["Z"]
                result = await operation  # nothing is sent before it is awaited
                if counting:
                    trips[name] = trips.get(name, 0) + (wire.waits - before) / SAMPLES
                    ready[name] = ready.get(name, 0) + (wire.server["Z"] - before_ready) / SAMPLES
                return result

            for _ in range(SAMPLES):
                saved = await measure("create", store.save(store.new(Tally(1))))
                assert isinstance(saved, SetCookie)
                session = await measure("load", store.load(saved.value))
                assert session is not None
                session.modify(bump)
                await measure("modify", store.save(session))
                session.sign_in("someone")  # rotates the id: the save gives the new cookie
                signed = await measure("sign_in", store.save(session))
                assert isinstance(signed, SetCookie)
                clock.advance(timedelta(minutes=10))
                renewing = await store.load(signed.value)
                assert renewing is not None
                await measure("renew", store.save(renewing))
                await measure("list", store.sessions_of("someone"))
                renewing.delete()
                await measure("delete", store.save(renewing))

        await cycle(counting=False)
        await cycle(counting=True)
    return trips, ready


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "settings", "execution"),
    the_cases(
        ("session", ASYNCPG_DEFAULT, None),
        ("session", PSYCOPG_DEFAULT, None),
        ("transaction", PSYCOPG_UNNAMED, None),
        ("transaction", ASYNCPG_UNNAMED, TWO_ROUND_TRIPS),
    ),
)
async def test_each_operation_costs_the_round_trips_it_costs_direct(
    upstream_port: int, mode: str, settings: Settings, execution: Execution, report: Report
) -> None:
    """Direct means the same driver with its defaults, on the same executor."""
    requires(settings)
    direct_settings = Settings(settings.driver, driver=settings.driver)
    with CountingProxy("postgres", "127.0.0.1", upstream_port) as wire:
        direct, _ = await round_trips_per_operation(
            wire, UPSTREAM.replace("5432", str(wire.port)), execution, direct_settings
        )
    with (
        pgbouncer(mode, upstream_port=upstream_port) as bouncer,
        CountingProxy("postgres", "127.0.0.1", bouncer.port) as wire,
    ):
        before = bouncer.stats()
        through, ready = await round_trips_per_operation(
            wire, bouncer.url().replace(str(bouncer.port), str(wire.port)), execution, settings
        )
        after = bouncer.stats()
    queries = after["total_query_count"] - before["total_query_count"]
    report(
        f"pgbouncer {mode} {settings.name} {execution}: round trips per operation"
        f" {_figures(through)} (direct {settings.driver}: {_figures(direct)});"
        f" ReadyForQuery per operation {_figures(ready)}; PgBouncer SHOW STATS counted"
        f" {queries} queries for the whole run"
    )
    assert direct == dict.fromkeys(OPERATIONS, 1.0)
    assert through == direct


def _figures(per_operation: dict[str, float]) -> str:
    return " ".join(f"{name}={value:g}" for name, value in per_operation.items())


# -- concurrent writers ---------------------------------------------------------------------

WRITERS = 200
SESSIONS = 10
APP_POOL = 20


async def concurrent_increments(
    bouncer: PgBouncer,
    upstream: str,
    execution: Execution,
    settings: Settings,
    through_backend: Callable[[str], SqlBackend] | None = None,
) -> tuple[int, list[StoreUnavailableError], int, float]:
    """WRITERS concurrent load-modify-save increments spread over SESSIONS sessions, through
    ``bouncer``: (acknowledged, failures, the sum the database holds, seconds).

    The sessions are made, and the sum read, straight on the ``upstream`` server, so only
    the increments depend on the settings under test (or on ``through_backend``, which
    makes the backend for a table name)."""
    async with fresh_backend(upstream, "driver") as direct:
        table = direct.table.name
        setup = SessionStore(Tally, direct)
        cookies = []
        for _ in range(SESSIONS):
            saved = await setup.save(setup.new(Tally(0)))
            assert isinstance(saved, SetCookie)
            cookies.append(saved.value)
        through = (
            through_backend(table)
            if through_backend is not None
            else open_backend(
                bouncer.url(),
                execution,
                settings,
                table_name=table,
                pool_size=APP_POOL // 2,
                max_overflow=APP_POOL // 2,
            )
        )
        store = SessionStore(Tally, through)
        failures: list[StoreUnavailableError] = []

        async def increment(cookie: str) -> bool:
            try:
                session = await store.load(cookie)
                assert session is not None
                session.modify(bump)
                await store.save(session)
            except StoreUnavailableError as error:
                failures.append(error)
                return False
            return True

        try:
            started = time.monotonic()
            done = await asyncio.gather(*(increment(cookies[n % SESSIONS]) for n in range(WRITERS)))
            seconds = time.monotonic() - started
        finally:
            await through.dispose()
        total = 0
        for cookie in cookies:
            session = await setup.load(cookie)
            assert session is not None
            total += session.data.count
    return sum(done), failures, total, seconds


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "settings", "execution"),
    the_cases(
        ("session", ASYNCPG_DEFAULT, None),
        ("session", PSYCOPG_DEFAULT, None),
        ("transaction", ASYNCPG_UNNAMED, None),
        ("transaction", PSYCOPG_UNNAMED, None),
    ),
)
async def test_concurrent_writers_through_a_small_server_pool_lose_nothing(
    upstream_port: int, mode: str, settings: Settings, execution: Execution, report: Report
) -> None:
    requires(settings)
    # Transaction pooling shares 2 server connections among the app's 20; session pooling
    # gives each client connection a server connection of its own for its lifetime, so its
    # pool must be as large as every app pool together (else clients queue for up to
    # PgBouncer's query_wait_timeout, 120 s by default).
    servers = 2 if mode == "transaction" else APP_POOL
    with pgbouncer(mode, upstream_port=upstream_port, pool_size=servers) as bouncer:
        acknowledged, failures, total, seconds = await concurrent_increments(
            bouncer, UPSTREAM, execution, settings
        )
    report(
        f"pgbouncer {mode} {settings.name} {execution}: {WRITERS} concurrent increments on"
        f" {SESSIONS} sessions, app pool {APP_POOL}, {servers} server connections, {seconds:.2f} s:"
        f" {acknowledged} acknowledged, {len(failures)} failed, {total} stored"
    )
    assert failures == []
    assert total == acknowledged == WRITERS


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "execution"),
    [
        pytest.param(settings, execution, id=f"{settings.name}-{execution}")
        for settings in (ASYNCPG_DEFAULT, PSYCOPG_DEFAULT)
        for execution in settings.executions
    ],
)
async def test_defaults_in_transaction_mode_work_or_name_the_setting(
    upstream_port: int, settings: Settings, execution: Execution, report: Report
) -> None:
    """A driver's defaults behind transaction pooling: either every write works, or each
    failure says what to set. Nothing acknowledged is lost either way."""
    requires(settings)
    with pgbouncer("transaction", upstream_port=upstream_port, pool_size=2) as bouncer:
        acknowledged, failures, total, _ = await concurrent_increments(
            bouncer, UPSTREAM, execution, settings
        )
    causes = sorted({type(error.__cause__).__name__ for error in failures})
    report(
        f"pgbouncer transaction {settings.name} (defaults) {execution}: {WRITERS} concurrent"
        f" increments: {acknowledged} acknowledged, {len(failures)} failed"
        f" ({', '.join(causes) or 'none'}), {total} stored"
    )
    assert total >= acknowledged
    unexplained = [
        str(error) for error in failures if "prepared_statements=false" not in str(error)
    ]
    assert unexplained == []


# -- the purge lock -------------------------------------------------------------------------

PASS_ROWS, PASS_BATCH = 30, 10


@pytest.mark.anyio
@pytest.mark.parametrize("settings", [ASYNCPG_UNNAMED, PSYCOPG_UNNAMED], ids=lambda s: s.name)
async def test_the_purge_lock_holds_for_a_pass_through_transaction_pooling(
    upstream_port: int, settings: Settings, report: Report
) -> None:
    """A purge pass through transaction pooling, with every other server connection busy
    midway: meanwhile the server holds the lock once and another instance cannot take it;
    afterwards no lock is left and the other instance takes it.

    (A session-level lock would be taken on one server connection and released on
    whichever the unlock lands on: with the lock's server connection lent to another client
    then, the unlock misses it and the lock outlives the pass.)
    """
    requires(settings)
    clock = FakeClock()
    with pgbouncer("transaction", upstream_port=upstream_port, pool_size=3) as bouncer:
        url = bouncer.url()
        async with fresh_backend(url, "driver", settings, pool_size=2) as backend:
            await insert_rows(backend, rows(clock.now, expired=PASS_ROWS))
            key = lock_key(str(backend.table.fullname))
            other = open_backend(url, "driver", settings, table_name=backend.table.name)
            pinner = create_engine(settings.url(url), isolation_level="READ COMMITTED")
            pinned: list[AsyncConnection] = []
            midway: dict[str, Any] = {}

            async def between_batches(seconds: float) -> None:
                if midway:
                    return
                async with other.purge_lock() as taken:
                    midway["other instance took it"] = taken
                # Whatever server connection is free now goes to another client, in a
                # transaction, until the pass has ended.
                conn = await pinner.connect()
                await conn.execute(text("SELECT pg_backend_pid()"))
                pinned.append(conn)
                midway["locks"] = len(await advisory_locks(key))

            try:
                result = await purge_pass(
                    backend, clock(), PASS_BATCH, pause=1.0, sleep=between_batches
                )
                held = await advisory_locks(key)
                for conn in pinned:
                    await conn.rollback()
                    await conn.close()
                async with other.purge_lock() as taken_after:
                    pass
            finally:
                await pinner.dispose()
                await other.dispose()
    report(
        f"pgbouncer transaction purge lock ({settings.name}): a pass of {result.batches}"
        f" batches removed {result.removed} rows; midway the server held"
        f" {midway['locks']} lock(s) and another instance"
        f" {'took' if midway['other instance took it'] else 'could not take'} it;"
        f" after the pass {len(held)} lock(s) left, another instance"
        f" {'took' if taken_after else 'could not take'} it"
    )
    assert not result.skipped
    assert result.removed == PASS_ROWS
    assert midway == {"other instance took it": False, "locks": 1}
    assert held == []
    assert taken_after


async def advisory_locks(key: int) -> list[Any]:
    """The advisory locks on ``key`` held on the upstream server, by anyone."""
    engine = create_engine(UPSTREAM)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND classid = :high AND objid = :low"
                ),
                {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF},
            )
            return list(rows)
    finally:
        await engine.dispose()


# -- the guide ------------------------------------------------------------------------------

GUIDE = ROOT / "docs" / "production.md"


@pytest.mark.anyio
async def test_the_guides_transaction_pooling_settings_work_as_written(
    upstream_port: int, report: Report
) -> None:
    """docs/production.md's transaction-pooling example, pointed at our PgBouncer: many
    concurrent writers over two server connections, nothing lost."""
    (block,) = [block for block in blocks(GUIDE.read_text()) if "pgbouncer.internal" in block]
    with pgbouncer("transaction", upstream_port=upstream_port, pool_size=2) as bouncer:
        written = block.replace(
            "app@pgbouncer.internal:6432/app", f"root@127.0.0.1:{bouncer.port}/test"
        ).replace("connect_args=", "table_name=table, pool_size=10, connect_args=")

        def the_guides(table: str) -> SqlBackend:
            namespace: dict[str, Any] = {"table": table}
            exec(compile(written, str(GUIDE), "exec"), namespace)
            backend: SqlBackend = namespace["backend"]
            return backend

        acknowledged, failures, total, seconds = await concurrent_increments(
            bouncer, UPSTREAM, "driver", ASYNCPG_DEFAULT, the_guides
        )
    report(
        f"pgbouncer transaction, the guide's settings: {WRITERS} concurrent increments in"
        f" {seconds:.2f} s: {acknowledged} acknowledged, {len(failures)} failed, {total} stored"
    )
    assert failures == []
    assert total == acknowledged == WRITERS
