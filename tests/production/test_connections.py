"""Running out of connections: a small pool, a server with few connection slots.

A server of the tests' own with ``max_connections=8``; the app (a real uvicorn) has a pool
of 4 and no overflow, with ``pool_timeout=1``, of which the backend holds 3 for its
statements (``from_url``'s default: one less than the pool without overflow, the last one
left for the purge lock and the like). Another transaction holds a row lock on every
session, so each save that gets a connection keeps it, blocked. A burst of 30 requests
then: 3 hold the held connections, waiting on the lock; the other 27 wait for a connection
up to the pool timeout and answer 503, nothing written. Once the lock goes, the 3 blocked
requests finish, and the next burst is all 200.

Then an instance whose pool is larger than the server's free slots: the server refuses
the connections beyond them, the ones it allowed serve the requests, and no request waits
out the pool timeout.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.production.backends import Execution, open_backend
from tests.production.conftest import Report
from tests.production.load import serving_app, shared_sessions
from tests.production.workload import Counts
from tests.selection import require_tools
from tests.support.servers import init_cluster, running
from typed_session_sql import SessionStore, SqlBackend, StoreUnavailableError
from typed_session_sql.backends.sql import create_engine
from typed_session_sql.errors import describe_error

pytestmark = [pytest.mark.production, pytest.mark.anyio]

MAX_CONNECTIONS = 8
POOL = 4
HELD = POOL - 1  # what from_url holds of a pool without overflow
POOL_TIMEOUT = 1.0
BURST = 30
SESSIONS = 8
BOUND = 30.0  # seconds: no request may take longer (a hang), and no phase either
TIMEOUTS = {"timeout": 5, "command_timeout": 10}


async def request(http: httpx.AsyncClient, cookie: str, key: str) -> tuple[int, float]:
    started = time.monotonic()
    response = await http.post(f"/inc/{key}", headers={"cookie": f"sid={cookie}"})
    return response.status_code, time.monotonic() - started


async def until(what: str, done: Any) -> None:
    deadline = time.monotonic() + BOUND
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND:.0f} s: {what}")
        await asyncio.sleep(0.02)  # a poll of the requests' state, not a wait for time


async def test_a_burst_beyond_the_pool_waits_then_answers_503(
    tmp_path: Path, report: Report
) -> None:
    require_tools("initdb", "pg_ctl")
    server = init_cluster(
        "connections",
        {
            "max_connections": str(MAX_CONNECTIONS),
            "superuser_reserved_connections": "0",
            "max_wal_senders": "0",
        },
    )
    engine = {
        "pool_size": POOL,
        "max_overflow": 0,
        "pool_timeout": POOL_TIMEOUT,
        "connect_args": TIMEOUTS,
    }
    with running(server):
        url, table = server.url(), "sessions"
        cookies = await shared_sessions(url, table, SESSIONS)
        locker = create_engine(url, isolation_level="READ COMMITTED")
        async with (
            serving_app(url, table, tmp_path, engine) as base,
            httpx.AsyncClient(
                base_url=base, timeout=BOUND, limits=httpx.Limits(max_connections=2 * BURST)
            ) as http,
        ):
            try:
                # A row lock on every session: a save that gets a connection keeps it.
                lock = await locker.connect()
                await lock.execute(text(f"UPDATE {table} SET data = data"))
                burst = [
                    asyncio.ensure_future(request(http, cookies[n % SESSIONS], f"a{n}"))
                    for n in range(BURST)
                ]
                await until(
                    "all but the held connections' requests answered",
                    lambda: sum(task.done() for task in burst) >= BURST - HELD,
                )
                answered = [task.result() for task in burst if task.done()]
                blocked = [task for task in burst if not task.done()]

                await lock.commit()  # the lock goes: the blocked requests finish
                await lock.close()
                await until("the blocked requests answered", lambda: all(t.done() for t in blocked))
                finished = [task.result() for task in blocked]
                recovered = await asyncio.gather(
                    *(request(http, cookies[n % SESSIONS], f"c{n}") for n in range(BURST))
                )
            finally:
                await locker.dispose()
        stored = await stored_keys(url, table, cookies)

    waited = [seconds for status, seconds in answered if status == 503]
    report(
        f"connections: max_connections {MAX_CONNECTIONS}, app pool {POOL} (no overflow,"
        f" pool_timeout {POOL_TIMEOUT:g} s, {HELD} held), rows locked: burst of {BURST}:"
        f" {len(waited)} x 503 after {min(waited, default=0):.2f}-{max(waited, default=0):.2f} s,"
        f" {len(blocked)} held connections and answered"
        f" {sorted(status for status, _ in finished)} once the lock went;"
        f" after: burst of {BURST} -> {sum(status == 200 for status, _ in recovered)} x 200"
        f" (max {max(seconds for _, seconds in recovered):.2f} s)"
    )
    # The burst beyond the held connections: each waited for one up to the pool timeout,
    # then answered 503 at once, having written nothing.
    assert len(blocked) == HELD
    assert [status for status, _ in answered] == [503] * (BURST - HELD)
    assert min(waited) >= POOL_TIMEOUT * 0.9
    assert max(waited) < POOL_TIMEOUT + 2.0
    # Recovery, and nothing lost or half-written.
    assert [status for status, _ in finished] == [200] * HELD
    assert [status for status, _ in recovered] == [200] * BURST
    written = {key for key in stored if key.startswith("a")}
    assert len(written) == HELD  # only the requests that were answered 200
    assert {key for key in stored if key.startswith("c")} == {f"c{n}" for n in range(BURST)}


async def stored_keys(url: str, table: str, cookies: list[str]) -> set[str]:
    backend = SqlBackend.from_url(url, table_name=table)
    try:
        store = SessionStore(Counts, backend)
        keys: set[str] = set()
        for cookie in cookies:
            session = await store.load(cookie)
            assert session is not None
            keys |= {key for key, value in session.data.counts.items() if value == 1}
        return keys
    finally:
        await backend.dispose()


@pytest.mark.parametrize("execution", ["driver", "sqlalchemy"])
async def test_on_a_full_server_open_connections_serve_and_none_waits_out_the_timeout(
    execution: Execution, report: Report
) -> None:
    """An instance whose pool is larger than the server's free slots, under a burst: the
    server refuses the connections beyond them ("too many clients"), the ones it allowed
    serve the requests, and no request waits out the pool timeout. Held connections (the
    driver executor) serve every request: one refused connection and the statements wait
    for those in use. Through SQLAlchemy's pool, a request whose own connection the server
    refused answers 503 at once."""
    require_tools("initdb", "pg_ctl")
    server = init_cluster(
        "full",
        {
            "max_connections": str(MAX_CONNECTIONS),
            "superuser_reserved_connections": "0",
            "max_wal_senders": "0",
        },
    )
    free, wide, pool_timeout = 3, 20, 2.0
    with running(server):
        url, table = server.url(), "sessions"
        cookies = await shared_sessions(url, table, SESSIONS)
        holder = create_engine(url, pool_size=MAX_CONNECTIONS - free, max_overflow=0)
        name = f"full-{execution}"
        backend = open_backend(
            url, execution, table_name=table, pool_size=8, max_overflow=0,
            pool_timeout=pool_timeout,
            connect_args={**TIMEOUTS, "server_settings": {"application_name": name}},
        )  # fmt: skip
        store = SessionStore(Counts, backend)

        async def load(n: int) -> tuple[str, float]:
            started = time.monotonic()
            try:
                await store.load(cookies[n % SESSIONS])
            except StoreUnavailableError as error:
                return describe_error(error), time.monotonic() - started
            return "ok", time.monotonic() - started

        try:
            held = [await holder.connect() for _ in range(MAX_CONNECTIONS - free)]
            full = await asyncio.gather(*(load(n) for n in range(wide)))
            opened = (
                await held[0].execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": name},
                )
            ).scalar_one()
            for conn in held:
                await conn.close()
            await holder.dispose()
            after = await asyncio.gather(*(load(n) for n in range(wide)))
        finally:
            await holder.dispose()
            await backend.dispose()
        turned_away = server.log_tail(10_000).count("too many clients")
    failed = [seconds for outcome, seconds in full if outcome != "ok"]
    reasons = sorted(
        {outcome.partition(" (")[2].rstrip(")") for outcome, _ in full if outcome != "ok"}
    )
    report(
        f"full server ({execution}): {free} free slots, pool 8, pool_timeout {pool_timeout:g} s,"
        f" {wide} concurrent loads: the server refused {turned_away} connection(s) and"
        f" allowed {opened}; {wide - len(failed)} ok, {len(failed)} x 503"
        f" ({'; '.join(reasons) or 'none'}), slowest {max(s for _, s in full):.3f} s;"
        f" once slots are free: {sum(outcome == 'ok' for outcome, _ in after)}/{wide} ok"
    )
    assert turned_away > 0, "the server had room for every connection: the scenario did not run"
    assert opened <= free
    assert all("too many clients" in outcome for outcome, _ in full if outcome != "ok")
    assert max(seconds for _, seconds in full) < pool_timeout / 2  # none waited it out
    if execution == "driver":
        assert failed == []
    else:
        assert wide - len(failed) >= free  # each connection it could open served
    assert [outcome for outcome, _ in after] == ["ok"] * wide
