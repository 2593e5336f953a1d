"""Restarts and killed connections under load, on a server of the tests' own.

The same load as the failover scenario (three store processes and one HTTP process
through uvicorn), while the server restarts (``pg_ctl restart -m fast``), and while every
client connection is terminated (``pg_terminate_backend``). Each ends with a burst in each
process as wide as its pool, every operation a create (never retried), so a connection
left broken in a pool would fail it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.production.conftest import Report
from tests.production.load import (
    Load,
    around_a_fault,
    assert_nothing_lost,
    figures,
    shared_sessions,
    verdict,
)
from tests.selection import require_tools
from tests.support.servers import init_cluster, running
from typed_session_sql.backends.sql.engine import create_engine

pytestmark = [pytest.mark.production, pytest.mark.anyio]

SHARED_SESSIONS = 16


async def test_a_restart_under_load_loses_nothing(tmp_path: Path, report: Report) -> None:
    require_tools("initdb", "pg_ctl")
    server = init_cluster("restart")
    with running(server):
        url, table = server.url(), "sessions"
        cookies = await shared_sessions(url, table, SHARED_SESSIONS)

        async def restart(load: Load) -> None:
            await asyncio.to_thread(server.restart, "fast")

        load, fault_start, fault_end = await around_a_fault(url, table, cookies, tmp_path, restart)
        result = await verdict(load, url, table, cookies)
    seen = figures(load, fault_start, fault_end)
    report(seen.line("restart", f"pg_ctl restart -m fast, {fault_end - fault_start:.2f} s", result))
    assert_nothing_lost(result, seen)


async def test_terminated_connections_under_load_lose_nothing(
    tmp_path: Path, report: Report
) -> None:
    require_tools("initdb", "pg_ctl")
    server = init_cluster("terminate")
    with running(server):
        url, table = server.url(), "sessions"
        cookies = await shared_sessions(url, table, SHARED_SESSIONS)
        terminated = 0

        async def terminate_all(load: Load) -> None:
            """Terminate every other client connection on this server of our own."""
            nonlocal terminated
            engine = create_engine(url)
            try:
                async with engine.connect() as conn:
                    rows = await conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                        )
                    )
                    terminated = sum(1 for (done,) in rows if done)
            finally:
                await engine.dispose()

        load, fault_start, fault_end = await around_a_fault(
            url, table, cookies, tmp_path, terminate_all
        )
        result = await verdict(load, url, table, cookies)
    seen = figures(load, fault_start, fault_end)
    report(
        seen.line(
            "terminate", f"pg_terminate_backend on all {terminated} client connections", result
        )
    )
    assert terminated >= 4 * 3  # at least the pool of each store process
    assert_nothing_lost(result, seen)
