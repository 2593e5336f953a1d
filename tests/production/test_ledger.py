"""The fault scenarios' checks can fail: a control run against a server of our own.

A short load, then the database is tampered with the way a lost write and a resurrection
would leave it (one shared session's counters erased, one signed-out session put back).
The same :func:`verdict` the scenarios assert on must see both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.production.load import running_load, shared_sessions, verdict
from tests.selection import require_tools
from tests.support.servers import init_cluster, running
from typed_session_sql import SqlBackend
from typed_session_sql.backend import Record
from typed_session_sql.ids import IdHasher

pytestmark = [pytest.mark.production, pytest.mark.anyio]


async def test_the_verdict_sees_a_lost_write_and_a_resurrection(tmp_path: Path) -> None:
    require_tools("initdb", "pg_ctl")
    server = init_cluster("ledger")
    with running(server):
        url, table = server.url(), "sessions"
        cookies = await shared_sessions(url, table, 2)
        async with running_load(
            url, table, cookies, processes=1, http_processes=0, tasks=3, logs=tmp_path
        ) as load:
            await load.successes(300, load.started, 60)
            await load.stop()
        honest = await verdict(load, url, table, cookies)
        assert (honest.lost, honest.resurrected) == (0, 0)
        assert honest.acknowledged > 0
        assert load.workers[0].ledger is not None
        signed_out = load.workers[0].ledger.signed_out[0]

        backend = SqlBackend.from_url(url, table_name=table)
        try:
            hashed = IdHasher()
            async with backend.engine.begin() as conn:  # every counter of session 0: gone
                await conn.execute(
                    update(backend.table)
                    .where(backend.table.c.id_hash == hashed(cookies[0]))
                    .values(data=b'{"counts":{}}')
                )
            now = datetime.now(UTC)
            back = Record(b'{"counts":{}}', 1, now, now + timedelta(hours=1), None, None)
            assert await backend.create(hashed(signed_out), back)  # a signed-out one: back
        finally:
            await backend.dispose()
        tampered = await verdict(load, url, table, cookies)
    assert tampered.lost > 0
    assert tampered.resurrected == 1
