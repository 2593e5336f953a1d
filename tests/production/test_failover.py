"""A standby that takes over: synchronous streaming replication, the primary killed under
load, the standby promoted.

The app connects with a multi-host URL that asks for the writable server::

    postgresql+asyncpg://user@/db?host=10.0.0.1:5432&host=10.0.0.2:5432&target_session_attrs=read-write

SQLAlchemy's asyncpg dialect passes each ``host=`` to asyncpg, which tries them in turn and
keeps the first that accepts writes. With ``synchronous_commit=on`` and the standby named
in ``synchronous_standby_names``, a commit is acknowledged only once the standby has it,
so the promoted standby holds every acknowledged write.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.production.conftest import Report
from tests.production.load import (
    PHASE_BOUND,
    Load,
    around_a_fault,
    assert_nothing_lost,
    figures,
    shared_sessions,
    verdict,
)
from tests.selection import require_tools
from tests.support.servers import base_backup, init_cluster, running

pytestmark = [pytest.mark.production, pytest.mark.anyio]

SHARED_SESSIONS = 16


async def test_standby_takes_over_with_nothing_lost(tmp_path: Path, report: Report) -> None:
    require_tools("initdb", "pg_ctl", "pg_basebackup")
    primary = init_cluster(
        "primary", {"synchronous_standby_names": "standby1", "synchronous_commit": "on"}
    )
    with running(primary):
        standby = base_backup(primary, "standby", application_name="standby1")
        with running(standby):
            url = (
                f"postgresql+asyncpg://postgres@/postgres?host={primary.host}"
                f"&host={standby.host}&target_session_attrs=read-write"
            )
            table = "sessions"
            cookies = await shared_sessions(url, table, SHARED_SESSIONS)
            killed_at = 0.0

            async def fail_over(load: Load) -> None:
                """Kill the primary; once every process has seen the outage, promote."""
                nonlocal killed_at
                await asyncio.to_thread(primary.stop, "immediate")
                killed_at = time.time()
                await load.failures(killed_at, PHASE_BOUND)
                await asyncio.to_thread(standby.promote)

            load, fault_start, fault_end = await around_a_fault(
                url, table, cookies, tmp_path, fail_over
            )
            result = await verdict(load, standby.url(), table, cookies)
    seen = figures(load, fault_start, fault_end)
    report(
        seen.line(
            "failover",
            f"primary stopped -m immediate, standby promoted {fault_end - killed_at:.2f} s later",
            result,
        )
    )
    assert_nothing_lost(result, seen)
    assert seen.unavailable > 0  # the switch was seen, and answered as "unavailable"
