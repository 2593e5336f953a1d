"""The purge run inside PostgreSQL by pg_cron (typed_session_sql.pg_cron), on a server of the
test's own started with ``shared_preload_libraries = 'pg_cron'``.

Skipped where pg_cron is not installed (Debian: ``postgresql-15-cron``), failed instead
with ``TYPED_SESSION_SQL_REQUIRE_PG_CRON=1`` (``.ci/run`` installs it and sets it).
Every wait is for a state, bounded by a deadline.
"""

from __future__ import annotations

import functools
import os
import pwd
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import asyncpg  # type: ignore[import-untyped]
import pytest

from tests.selection import unavailable
from tests.sql_backends import on_the_server, require_postgres, unique_name
from tests.support.servers import Cluster, init_cluster, running
from typed_session_sql import SqlBackend
from typed_session_sql.cli import main
from typed_session_sql.pg_cron import (
    install_pg_cron_purge,
    pg_cron_purge_script,
    remove_pg_cron_purge,
)
from typed_session_sql.purge import purge_pass

pytestmark = pytest.mark.anyio

BOUND = 30.0  # seconds: a bound on a hung step, not a wait for time to pass
MICROS = "CAST(floor(extract(epoch FROM clock_timestamp()) * 1000000) AS bigint)"


def _require_pg_cron() -> None:
    missing = []
    try:
        out = subprocess.run(["pg_config", "--sharedir"], capture_output=True, text=True)
        if not (Path(out.stdout.strip()) / "extension" / "pg_cron.control").exists():
            missing.append("pg_cron (Debian: postgresql-15-cron)")
    except OSError:
        missing.append("PostgreSQL's server (pg_config)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing.append("the 'postgres' user")
    if os.geteuid() != 0:
        missing.append("root (to run a server as the postgres user)")
    if missing:
        unavailable("missing: " + ", ".join(missing), "PG_CRON")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    _require_pg_cron()
    server = init_cluster(
        "cron", {"shared_preload_libraries": "pg_cron", "cron.database_name": "postgres"}
    )
    with running(server):
        yield server


@pytest.fixture
async def cron_backend(cluster: Cluster) -> AsyncIterator[SqlBackend]:
    async with SqlBackend.from_url(cluster.url(), table_name=unique_name("sessions")) as made:
        async with await _connect(cluster) as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        await made.migrate()
        yield made


class _Conn:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def __aenter__(self) -> asyncpg.Connection:
        with anyio.fail_after(BOUND):
            self.conn: asyncpg.Connection = await asyncpg.connect(self.cluster.dsn())
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()


async def _connect(cluster: Cluster) -> _Conn:
    return _Conn(cluster)


async def _seed(conn: asyncpg.Connection, table: str, expired: int, live: int) -> None:
    """``expired`` rows that expired an hour ago, ``live`` that expire in an hour and as many
    that never expire."""
    q = f'"{table}"'
    insert = (
        f"INSERT INTO {q} (id_hash, data, expires_at, created_at, version)"
        " SELECT decode(md5($1 || i) || md5(i || $1), 'hex'), '', {expiry}, {now}, 1"
        " FROM generate_series(1, $2) AS i"
    )
    hour = 3_600_000_000
    for tag, count, expiry in (
        ("expired", expired, f"{MICROS} - {hour}"),
        ("live", live, f"{MICROS} + {hour}"),
        ("never", live, "NULL"),
    ):
        await conn.execute(insert.format(expiry=expiry, now=MICROS), tag, count)


async def _remaining(conn: asyncpg.Connection, table: str) -> tuple[int, int]:
    """(expired, not expired) rows now in ``table``."""
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE expires_at <= {MICROS}),"
        f' count(*) FILTER (WHERE expires_at IS NULL OR expires_at > {MICROS}) FROM "{table}"'
    )
    assert row is not None
    return row[0], row[1]


async def _log_batches(conn: asyncpg.Connection, table: str) -> str:
    """A statement trigger that logs each DELETE on ``table``: its transaction and how many
    rows it removed. Returns the log table's name."""
    log = f"{table}_log"
    await conn.execute(f'CREATE TABLE "{log}" (seq serial, xid bigint, removed bigint)')
    await conn.execute(
        f'CREATE FUNCTION "{log}_f"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN'
        f' INSERT INTO "{log}" (xid, removed) SELECT txid_current(), count(*) FROM gone;'
        " RETURN NULL; END $$"
    )
    await conn.execute(
        f'CREATE TRIGGER "{log}_t" AFTER DELETE ON "{table}" REFERENCING OLD TABLE AS gone'
        f' FOR EACH STATEMENT EXECUTE FUNCTION "{log}_f"()'
    )
    return log


async def _wait_for(conn: asyncpg.Connection, query: str, *args: object) -> object:
    """The first non-null answer of ``query``, polled until BOUND (a state, not a time)."""
    with anyio.fail_after(BOUND):
        # Polled: a state of the server, which nothing in this process could signal.
        while (answer := await conn.fetchval(query, *args)) is None:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return answer


async def test_pg_cron_runs_the_batched_purge_of_exactly_the_expired_rows(
    cluster: Cluster, cron_backend: SqlBackend
) -> None:
    backend = cron_backend
    table = backend.table.name
    async with await _connect(cluster) as conn:
        await _seed(conn, table, expired=2500, live=7)
        log = await _log_batches(conn, table)
        # '@reboot': pg_cron 1.4 (Debian 12's) schedules by the minute at best, so the job
        # is made to run at the next start of the scheduler, which the test brings about.
        installed = await install_pg_cron_purge(backend, schedule="@reboot", batch_size=1000)
        job = await conn.fetchrow(
            "SELECT jobid, command, database, username, active FROM cron.job WHERE jobname = $1",
            installed.job_name,
        )
        assert job is not None
        assert job["command"] == f'CALL "{table}_purge"(1000)'
        assert (job["database"], job["username"], job["active"]) == ("postgres", "postgres", True)
    with anyio.fail_after(BOUND * 2):
        await anyio.to_thread.run_sync(cluster.restart)
    async with await _connect(cluster) as conn:
        status = await _wait_for(
            conn,
            "SELECT status FROM cron.job_run_details WHERE jobid = $1"
            " AND status IN ('succeeded', 'failed') ORDER BY runid DESC LIMIT 1",
            job["jobid"],
        )
        assert status == "succeeded", await conn.fetch("SELECT * FROM cron.job_run_details")
        assert await _remaining(conn, table) == (0, 14)  # live and never-expiring rows stay
        batches = await conn.fetch(f'SELECT xid, removed FROM "{log}" ORDER BY seq')
        # Batches of at most batch_size, the pass ending at the first short one, each batch
        # its own transaction (COMMIT between batches: no long transaction).
        assert [b["removed"] for b in batches] == [1000, 1000, 500]
        assert len({b["xid"] for b in batches}) == 3
        # The lock went with the pass.
        assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0

    # The restart closed the first backend's connections: a new one, as after a deploy.
    async with (
        SqlBackend.from_url(cluster.url(), table_name=table) as again,
        await _connect(cluster) as conn,
    ):
        assert await remove_pg_cron_purge(again)
        jobs = "SELECT count(*) FROM cron.job WHERE jobid = $1"
        assert await conn.fetchval(jobs, job["jobid"]) == 0
        assert await conn.fetchval("SELECT to_regproc($1)", f"{table}_purge") is None
        assert not await remove_pg_cron_purge(again)  # removing twice is harmless


async def test_the_app_and_the_database_purgers_never_run_at_once(
    cluster: Cluster, cron_backend: SqlBackend
) -> None:
    backend = cron_backend
    table = backend.table.name
    installed = await install_pg_cron_purge(backend, batch_size=1000)
    call = f'CALL "{table}_purge"(1000)'
    async with await _connect(cluster) as conn:
        await _seed(conn, table, expired=1500, live=3)
        log = await _log_batches(conn, table)

        # The app's pass holds the lock: the procedure, called as cron calls it, skips.
        async with backend.purge_lock() as got:
            assert got
            await conn.execute(call)
            assert await _remaining(conn, table) == (1500, 6)

        # The procedure's pass holds the lock (stopped in its first batch by a lock on the
        # batch log): the app's pass skips.
        async with await _connect(cluster) as blocker, await _connect(cluster) as cron:
            holding = blocker.transaction()
            await holding.start()
            await blocker.execute(f'LOCK TABLE "{log}" IN EXCLUSIVE MODE')
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(cron.execute, call)
                await _wait_for(
                    conn,
                    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1",
                    cron.get_server_pid(),
                )
                skipped = await purge_pass(backend, datetime.now(UTC), 1000)
                assert skipped.skipped
                assert skipped.removed == 0
                await holding.rollback()
        assert await _remaining(conn, table) == (0, 6)
        assert [r["removed"] for r in await conn.fetch(f'SELECT removed FROM "{log}"')] == [
            1000,
            500,
        ]
        # Once it is over, the app's pass takes the lock again.
        assert not (await purge_pass(backend, datetime.now(UTC), 1000)).skipped
    await remove_pg_cron_purge(backend)
    assert installed.job_name.endswith(table)


# A name that closes a quote, a dollar quote and a statement, with a colon and a percent
# sign the drivers' parameter styles could take for a placeholder.
HOSTILE = 'x"; DROP TABLE victim; --$purge$ :p %s'


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_a_table_name_cannot_inject_sql(cluster: Cluster, driver: str) -> None:
    name = f"{HOSTILE} {driver}"
    quoted = name.replace('"', '""')  # as _seed and _remaining put it between quotes
    url = cluster.url().replace("+asyncpg://", f"+{driver}://", 1)
    async with (
        SqlBackend.from_url(url, table_name=name) as backend,
        await _connect(cluster) as conn,
    ):
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        await conn.execute("DROP TABLE IF EXISTS victim; CREATE TABLE victim ()")
        await backend.migrate()
        await _seed(conn, quoted, expired=3, live=2)
        installed = await install_pg_cron_purge(backend, batch_size=2)
        command = await conn.fetchval(
            "SELECT command FROM cron.job WHERE jobname = $1", installed.job_name
        )
        await conn.execute(command)  # as cron runs it
        assert await _remaining(conn, quoted) == (0, 4)
        assert await conn.fetchval("SELECT to_regclass('victim')") == "victim"
        assert await remove_pg_cron_purge(backend)


async def test_the_script_and_what_is_refused() -> None:
    async with SqlBackend.from_url("sqlite+aiosqlite:///:memory:") as lite:
        with pytest.raises(ValueError, match="PostgreSQL"):
            await install_pg_cron_purge(lite)
        with pytest.raises(ValueError, match="PostgreSQL"):
            pg_cron_purge_script(lite)
    pg = SqlBackend.from_url("postgresql+asyncpg://app@db.invalid/app", schema="web")
    try:
        script = pg_cron_purge_script(pg, schedule="*/10 * * * *", batch_size=500)
        assert 'CREATE OR REPLACE PROCEDURE "web"."typed_sessions_purge"' in script
        assert "SELECT cron.schedule('typed_session_sql purge web.typed_sessions'," in script
        assert """'*/10 * * * *', 'CALL "web"."typed_sessions_purge"(500)')""" in script
        assert '-- DROP PROCEDURE IF EXISTS "web"."typed_sessions_purge"(integer);' in script
        for bad in (0, -1, 1_000_001):
            with pytest.raises(ValueError, match="batch_size"):
                pg_cron_purge_script(pg, batch_size=bad)
    finally:
        await pg.dispose()
    with pytest.raises(ValueError, match="control characters"):
        pg_cron_purge_script(
            SqlBackend.from_url("postgresql+asyncpg://db.invalid/app", table_name="t\nDROP x")
        )
    with pytest.raises(ValueError, match="too long"):
        pg_cron_purge_script(
            SqlBackend.from_url("postgresql+asyncpg://db.invalid/app", table_name="t" * 60)
        )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "typed_session_sql.cli", "purge", *args],
        capture_output=True,
        text=True,
        timeout=BOUND,
    )


async def test_the_cli_installs_and_removes_it(cluster: Cluster, cron_backend: SqlBackend) -> None:
    table = cron_backend.table.name
    options = ["--url", cluster.url(), "--table", table, "--batch-size", "50"]
    refused = await anyio.to_thread.run_sync(
        lambda: cli(*options, "--pg-cron", "install", "--schedule", "every now and then")
    )
    assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
    assert "pg_cron refused the schedule 'every now and then'" in refused.stderr
    done = await anyio.to_thread.run_sync(
        lambda: cli(*options, "--pg-cron", "install", "--schedule", "0 3 * * *")
    )
    assert done.returncode == 0, done.stderr
    assert f"scheduled pg_cron job 'typed_session_sql purge {table}'" in done.stdout
    async with await _connect(cluster) as conn:
        job = await conn.fetchrow(
            "SELECT schedule, command FROM cron.job WHERE jobname = $1",
            f"typed_session_sql purge {table}",
        )
        assert tuple(job) == ("0 3 * * *", f'CALL "{table}_purge"(50)')
        gone = await anyio.to_thread.run_sync(lambda: cli(*options, "--pg-cron", "remove"))
        assert gone.returncode == 0, gone.stderr
        assert gone.stdout == f"removed the pg_cron purge of {table}\n"
        assert await conn.fetchval("SELECT to_regproc($1)", f"{table}_purge") is None


def test_the_cli_prints_the_sql_without_a_database_and_refuses_other_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In this process (main), where no server is needed: a process each costs seconds.
    assert main(["purge", "--url", "postgresql://app@db.invalid/app", "--pg-cron", "sql"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("-- typed-session-sql: purge typed_sessions with pg_cron\n")
    assert """'*/5 * * * *', 'CALL "typed_sessions_purge"(1000)');""" in printed
    for refused, why in (
        (["--url", f"sqlite:///{tmp_path}/s.db", "--pg-cron", "sql"], "needs a PostgreSQL URL"),
        (["--url", "postgresql://db.invalid/a", "--table", "t" * 60, "--pg-cron", "sql"], "63"),
        (
            ["--url", "postgresql://db.invalid/a", "--pg-cron", "install", "--every", "5m"],
            "--every",
        ),
    ):
        assert main(["purge", *refused]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert why in err


def test_the_cli_on_a_database_without_pg_cron_exits_69_and_leaves_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The shared test server, which does not preload pg_cron: no cron schema there.
    table = unique_name("sessions")
    url = require_postgres()
    assert main(["purge", "--url", url, "--table", table, "--pg-cron", "install"]) == 69
    out, err = capsys.readouterr()
    assert out == ""
    assert 'schema "cron" does not exist' in err
    # The procedure was created in the same transaction as the failed schedule: rolled back.
    query = functools.partial(on_the_server, "SELECT to_regproc(:p)", p=f"{table}_purge")
    assert anyio.run(query) == [(None,)]
