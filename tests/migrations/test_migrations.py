"""The Alembic migrations on SQLite, PostgreSQL and MariaDB: equal to the backend's table,
one version record per session table, a record from the shared pre-0.2 version table carried
over, a table missing after a migration reported, N processes migrating one fresh database
at once, the package installed from a checkout into a fresh virtualenv, revision 0002
(``expiry_pinned``): 0001 rows working after it and after its downgrade, and the upgrade of
a live table under load from 0001-era code, without rewriting the table; and revision 0003
(PostgreSQL's table settings): set, reset by its downgrade, equal to a created table's."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.clock import FakeClock
from tests.mariadb.server import require_mariadb
from tests.migration_load import START, OldCode, key_of, upgrade_under_load
from tests.models import Cart
from tests.sql_backends import require_postgres, unique_name
from typed_session_sql import SessionStore, SetCookie, SqlBackend
from typed_session_sql.alembic_support import (
    LEGACY_VERSION_TABLE,
    head,
    make_config,
    version_table,
)
from typed_session_sql.backend import Record
from typed_session_sql.backends.sql import create_engine, session_table
from typed_session_sql.backends.sql.table import POSTGRESQL_TABLE_SETTINGS
from typed_session_sql.cli import main
from typed_session_sql.cli.common import EXIT_FAILED
from typed_session_sql.errors import MigrationError, StoreUnavailableError
from typed_session_sql.urls import mask_password

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Target:
    url: str
    table: str
    schema: str | None


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def inspect_db(target: Target) -> tuple[set[str], list[Any]]:
    """The tables in the target schema, and autogenerate's diff against the backend's table."""
    metadata = MetaData()
    session_table(metadata, target.table, target.schema)

    def look(conn: Connection) -> tuple[set[str], list[Any]]:
        tables = set(inspect(conn).get_table_names(schema=target.schema))
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "version_table": version_table(target.table),
                "version_table_schema": target.schema,
                "include_schemas": target.schema is not None,
                "include_name": lambda name, kind, parent: (
                    kind != "schema" or name == target.schema
                ),
            },
        )
        return tables, compare_metadata(context, metadata)

    engine = create_engine(target.url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(look)
    finally:
        await engine.dispose()


async def use_backend(target: Target, table: str | None = None) -> Record | None:
    """Write and read one row through the backend on the migrated table."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    table = table or target.table
    async with SqlBackend.from_url(target.url, table_name=table, schema=target.schema) as b:
        assert await b.create(b"k" * 32, Record(b"{}", 1, now, now + timedelta(hours=1)))
        return await b.read(b"k" * 32)


async def read_back(target: Target) -> Record | None:
    """Read the row `use_backend` wrote."""
    async with SqlBackend.from_url(
        target.url, table_name=target.table, schema=target.schema
    ) as backend:
        return await backend.read(b"k" * 32)


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        yield Target(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}", "typed_sessions", None)
        return
    # A schema of the test's own (on MySQL, a schema is a database).
    server, create, drop = {
        "postgres": (require_postgres, 'CREATE SCHEMA "{}"', 'DROP SCHEMA "{}" CASCADE'),
        "mariadb": (require_mariadb, "CREATE DATABASE `{}`", "DROP DATABASE `{}`"),
    }[request.param]
    url, schema = server(), unique_name("mig")
    run(execute(url, create.format(schema)))
    try:
        yield Target(url, unique_name("sessions"), schema)
    finally:
        run(execute(url, drop.format(schema)))


async def execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def qualified(target: Target, name: str) -> str:
    q = "`" if target.url.startswith("mysql") else '"'
    return f"{q}{target.schema}{q}.{q}{name}{q}" if target.schema else f"{q}{name}{q}"


def test_upgrade_matches_the_backend_table_and_downgrade_removes_it(target: Target) -> None:
    config = make_config(target.url, target.table, target.schema)
    command.upgrade(config, "head")
    tables, diff = run(inspect_db(target))
    assert {target.table, version_table(target.table)} <= tables
    assert diff == []
    record = run(use_backend(target))
    assert record is not None
    assert record.data == b"{}"

    command.downgrade(config, "base")
    tables, _ = run(inspect_db(target))
    assert target.table not in tables

    command.upgrade(config, "head")  # and back up again, on the emptied database
    tables, diff = run(inspect_db(target))
    assert target.table in tables
    assert diff == []


def test_backend_migrate_upgrades_over_its_own_engine(target: Target) -> None:
    async def migrate_twice_and_use() -> Record | None:
        async with SqlBackend.from_url(
            target.url, table_name=target.table, schema=target.schema
        ) as backend:
            await backend.migrate()
            await backend.migrate()  # at head already: a no-op, not an error
        return await use_backend(target)

    record = run(migrate_twice_and_use())
    assert record is not None
    tables, diff = run(inspect_db(target))
    assert {target.table, version_table(target.table)} <= tables
    assert diff == []


def test_create_schema_and_migrations_agree_with_each_other(tmp_path: Path) -> None:
    # A table made by create_schema() also shows no diff: both come from session_table().
    target = Target(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", "typed_sessions", None)

    async def create() -> None:
        async with SqlBackend.from_url(target.url) as backend:
            await backend.create_schema()

    run(create())
    _, diff = run(inspect_db(target))
    assert diff == []
    # migrate() then refuses the table, saying who made it, instead of failing on CREATE
    # TABLE ("already exists") as an outage.
    with pytest.raises(MigrationError, match="exists but has no record"):
        run(migrate(target))


@pytest.mark.wheel
def test_cli_migrates_a_fresh_database_from_the_wheel(tmp_path: Path) -> None:
    # uv is in the test dependency group: it builds the wheel and the clean virtualenv.
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv is not None, "uv (test dependency group) builds the wheel and the virtualenv"
    wheels, venv = tmp_path / "dist", tmp_path / "venv"
    subprocess.run(
        [uv, "build", "--wheel", "-q", "-o", str(wheels), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("*.whl")
    # The interpreter underneath ours, without our virtualenv's packages.
    subprocess.run(
        [uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, capture_output=True
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), str(wheel)],
        check=True,
        capture_output=True,
    )
    database = tmp_path / "fresh.db"
    url = f"sqlite+aiosqlite:///{database}"
    elsewhere = tmp_path / "cwd"  # no checkout in sight: only the installed package
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPED_SESSION_SQL_")}
    env.pop("PYTHONPATH", None)

    def cli(*args: str) -> str:
        done = subprocess.run(
            [str(venv / "bin" / "typed-session-sql"), "migrate", *args],
            cwd=elsewhere, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("upgrade", "head", "--url", url)
    assert "0003 (head)" in cli("current", "--url", url)
    assert "0001" in cli("history")
    tables, diff = run(inspect_db(Target(url, "typed_sessions", None)))
    assert "typed_sessions" in tables
    assert diff == []
    cli("downgrade", "base", "--url", url)
    tables, _ = run(inspect_db(Target(url, "typed_sessions", None)))
    assert "typed_sessions" not in tables

    # Without the postgres extra, a PostgreSQL URL names the extra to install (exit 2).
    for words in (["migrate", "upgrade"], ["stats"], ["purge"]):
        done = subprocess.run(
            [str(venv / "bin" / "typed-session-sql"), *words, "--url", "postgresql://u@h/db"],
            cwd=elsewhere, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.endswith(
            ": error: the driver asyncpg is not installed: "
            "pip install 'typed-session-sql[postgres]'\n"
        ), done.stderr


def test_cli_reports_a_down_database_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from typed_session_sql.cli import main

    url = "postgresql+asyncpg://root:hunter2secret@127.0.0.1:1/test"  # nothing listens on 1
    assert main(["migrate", "upgrade", "head", "--url", url]) == 69
    captured = capsys.readouterr()
    assert "typed-session-sql migrate:" in captured.err
    assert "hunter2secret" not in captured.err + captured.out


def test_two_session_tables_in_one_schema_each_get_created(target: Target) -> None:
    # Issue 8.7: with one shared version record, the second table was never created.
    other = target.table + "_admin"

    async def migrate_both() -> None:
        for table in (target.table, other):
            async with SqlBackend.from_url(
                target.url, table_name=table, schema=target.schema
            ) as backend:
                await backend.migrate()

    run(migrate_both())
    tables, _ = run(inspect_db(target))
    assert {target.table, other, version_table(target.table), version_table(other)} <= tables
    assert run(use_backend(target, other)) is not None
    assert run(use_backend(target)) is not None


def cli_options(target: Target) -> list[str]:
    options = ["--url", target.url, "--table", target.table]
    return options + (["--schema", target.schema] if target.schema else [])


def test_a_table_missing_after_migrating_is_reported(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(target.url, target.table, target.schema)
    command.upgrade(config, "head")
    run(execute(target.url, f"DROP TABLE {qualified(target, target.table)}"))  # by hand

    async def migrate() -> None:
        async with SqlBackend.from_url(
            target.url, table_name=target.table, schema=target.schema
        ) as backend:
            await backend.migrate()

    with pytest.raises(MigrationError, match="does not exist"):
        run(migrate())
    assert main(["migrate", "upgrade", "head", *cli_options(target)]) == 1
    assert f"the session table {target.table!r} does not exist" in capsys.readouterr().err
    # what the message says to do works
    run(execute(target.url, f"DROP TABLE {qualified(target, version_table(target.table))}"))
    assert main(["migrate", "upgrade", "head", *cli_options(target)]) == 0
    assert run(use_backend(target)) is not None


def test_a_shared_pre_0_2_record_is_carried_over(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database migrated before each table had its own record: the table exists and the
    shared version table says 0001."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from typed_session_sql.alembic_support import script_location

    # The table as 0001 made it, with the record only in the shared version table.
    command.upgrade(make_config(target.url, target.table, target.schema), "0001")
    run(execute(target.url, f"DROP TABLE {qualified(target, version_table(target.table))}"))

    async def migrated_the_old_way() -> None:
        def stamp(conn: Connection) -> None:
            opts = {"version_table": LEGACY_VERSION_TABLE, "version_table_schema": target.schema}
            context = MigrationContext.configure(conn, opts=opts)
            context.stamp(ScriptDirectory(str(script_location())), "0001")

        engine = create_engine(target.url)
        async with engine.begin() as conn:
            await conn.run_sync(stamp)
        await engine.dispose()

    run(migrated_the_old_way())
    assert main(["migrate", "current", *cli_options(target)]) == 0
    database = f"database {mask_password(target.url)}"
    assert capsys.readouterr().out == f"{target.table}: at 0001, head is 0003, {database}\n"
    assert main(["migrate", "upgrade", "head", *cli_options(target)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{target.table}: carried the revision over from the shared "
        f"{LEGACY_VERSION_TABLE} to its own {version_table(target.table)}",
        f"{target.table}: 0001 -> 0003, {database}",
    ]
    tables, diff = run(inspect_db(target))
    assert {version_table(target.table), LEGACY_VERSION_TABLE} <= tables
    assert [(op, table.name) for op, table in diff] == [("remove_table", LEGACY_VERSION_TABLE)]
    assert main(["migrate", "upgrade", "head", *cli_options(target)]) == 0  # its own now
    assert capsys.readouterr().out == f"{target.table}: 0003, nothing to do, {database}\n"


# Each process imports everything, says "ready", waits for "go" on stdin, then migrates:
# through the CLI's code path, or with SqlBackend.migrate().
RACER = """
import asyncio, sys
import alembic.command, alembic.runtime.migration, alembic.script  # warm: a tight start
from typed_session_sql import SqlBackend
from typed_session_sql.cli import main
url, table, schema, how = sys.argv[1:5]
print("ready", flush=True)
sys.stdin.readline()
if how == "cli":
    options = ["--url", url, "--table", table] + (["--schema", schema] if schema else [])
    sys.exit(main(["migrate", "upgrade", "head", *options]))
async def migrate():
    async with SqlBackend.from_url(url, table_name=table, schema=schema or None) as backend:
        await backend.migrate()
asyncio.run(migrate())
print("migrated")
"""


def test_processes_migrating_one_fresh_database_at_once_all_succeed(target: Target) -> None:
    # Issue 10.3: without the lock, two of them both see no table and both create it.
    hows = ["cli", "backend", "cli", "backend"]
    args = [target.url, target.table, target.schema or ""]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, *args, how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for how in hows
    ]
    try:
        for process in processes:  # all started and imported: release them together
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [p.communicate(timeout=120) for p in processes]
        results = [(p.returncode, output) for p, output in zip(processes, outputs, strict=True)]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert [code for code, _ in results] == [0] * len(hows), [err for _, (_, err) in results]
    printed = [out.strip().split(", database ")[0] for _, (out, _) in results]
    created = f"{target.table}: (none) -> 0003"
    found = f"{target.table}: 0003, nothing to do"
    assert printed.count(created) <= 1  # a CLI process created it, or a backend did
    assert set(printed) <= {created, found, "migrated"}
    tables, diff = run(inspect_db(target))
    assert {target.table, version_table(target.table)} <= tables
    assert diff == []


# -- revision 0002: expiry_pinned -------------------------------------------------------


async def columns(engine: AsyncEngine, target: Target) -> set[str]:
    def look(conn: Connection) -> set[str]:
        found = inspect(conn).get_columns(target.table, schema=target.schema)
        return {column["name"] for column in found}

    async with engine.connect() as conn:
        return await conn.run_sync(look)


def test_0002_keeps_0001_rows_working_up_and_down(target: Target) -> None:
    config = make_config(target.url, target.table, target.schema)
    command.upgrade(config, "0001")

    async def before() -> None:
        engine = create_engine(target.url)
        try:
            for i in range(3):
                await OldCode(engine, qualified(target, target.table)).insert(key_of(i))
        finally:
            await engine.dispose()

    run(before())
    command.upgrade(config, "head")

    async def after() -> None:
        clock = FakeClock(START + timedelta(minutes=10))
        async with SqlBackend.from_url(
            target.url, table_name=target.table, schema=target.schema
        ) as backend:
            row = await backend.read(key_of(0))
            assert row is not None
            assert (row.expiry_pinned, row.version, row.data) == (False, 1, b'{"items":[1]}')
            # A 0001 row is renewed as before, and can be pinned now.
            assert await backend.touch(key_of(0), 1, START + timedelta(hours=1), clock.now)
            store = SessionStore(Cart, backend, clock=clock)
            session = store.new()
            session.data.items.append(2)
            session.expire_in(timedelta(minutes=1))
            assert await store.save(session) == SetCookie(ANY, clock.now + timedelta(minutes=1))

    run(after())
    command.downgrade(config, "0001")

    async def downgraded() -> None:
        engine = create_engine(target.url)
        try:
            assert "expiry_pinned" not in await columns(engine, target)
            await OldCode(engine, qualified(target, target.table)).read_and_update(key_of(1))
            async with engine.connect() as conn:
                count = await conn.execute(
                    text(f"SELECT COUNT(*) FROM {qualified(target, target.table)}")
                )
                assert count.scalar() == 4
        finally:
            await engine.dispose()

    run(downgraded())
    command.upgrade(config, "head")


def test_0002_upgrades_a_table_under_load_without_rewriting_it(target: Target) -> None:
    async def under_load() -> None:
        engine = create_engine(target.url, pool_size=8)
        try:
            table = qualified(target, target.table)
            await upgrade_under_load(engine, [engine], target.table, target.schema, table)
        finally:
            await engine.dispose()

    run(under_load())


def test_mysql_asks_for_an_instant_add_column() -> None:
    """A server that would copy the table refuses instead (offline SQL, no server needed)."""
    config = make_config("mysql+asyncmy://u@h/db", "typed_sessions", None)
    config.output_buffer = buffer = io.StringIO()
    command.upgrade(config, "0001:0002", sql=True)
    assert "ADD COLUMN expiry_pinned BOOL NOT NULL DEFAULT false, ALGORITHM=INSTANT" in (
        buffer.getvalue()
    )


# -- revision 0003: PostgreSQL's table settings ------------------------------------------


async def table_settings(target: Target, table: str | None = None) -> dict[str, str]:
    """The table's storage parameters (``pg_class.reloptions``); {} on the other dialects,
    which have none."""
    if not target.url.startswith("postgresql"):
        return {}
    engine = create_engine(target.url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n"
                    " ON n.oid = c.relnamespace WHERE c.relname = :t AND n.nspname = :s"
                ),
                {"t": table or target.table, "s": target.schema or "public"},
            )
            options = found.scalar_one()
    finally:
        await engine.dispose()
    return dict(option.split("=", 1) for option in options or [])


def tuned(target: Target) -> dict[str, str]:
    """What 0003 and create_schema() set: on PostgreSQL only."""
    return dict(POSTGRESQL_TABLE_SETTINGS) if target.url.startswith("postgresql") else {}


def test_0003_sets_the_table_settings_and_its_downgrade_resets_them(target: Target) -> None:
    config = make_config(target.url, target.table, target.schema)
    command.upgrade(config, "0002")
    assert run(table_settings(target)) == {}
    command.upgrade(config, "0003")
    assert run(table_settings(target)) == tuned(target)
    assert tuned(target) == {} or tuned(target)["autovacuum_vacuum_scale_factor"] == "0.02"
    _, diff = run(inspect_db(target))
    assert diff == []
    assert run(use_backend(target)) is not None
    command.downgrade(config, "0002")
    assert run(table_settings(target)) == {}
    assert run(read_back(target)) is not None  # the row written at 0003 reads at 0002
    command.upgrade(config, "head")
    assert run(table_settings(target)) == tuned(target)


def test_a_created_table_has_the_settings_of_a_migrated_one(target: Target) -> None:
    created = target.table + "_created"

    async def create() -> None:
        async with SqlBackend.from_url(
            target.url, table_name=created, schema=target.schema
        ) as backend:
            await backend.create_schema()

    run(migrate(target))
    run(create())
    assert run(table_settings(target)) == run(table_settings(target, created)) == tuned(target)


def test_0003_is_one_alter_table_on_postgresql_only() -> None:
    """Offline SQL, no server needed: the statement PostgreSQL gets, and none elsewhere."""
    sql = {}
    for url in ("postgresql+asyncpg://u@h/db", "mysql+asyncmy://u@h/db", "sqlite:///s.db"):
        config = make_config(url, "typed_sessions", None)
        config.output_buffer = buffer = io.StringIO()
        command.upgrade(config, "0002:0003", sql=True)
        command.downgrade(config, "0003:0002", sql=True)
        sql[url.split(":")[0]] = [
            line for line in buffer.getvalue().splitlines() if line.startswith("ALTER TABLE")
        ]
    assert sql["postgresql+asyncpg"] == [
        'ALTER TABLE "typed_sessions" SET (autovacuum_vacuum_scale_factor = 0.02);',
        'ALTER TABLE "typed_sessions" RESET (autovacuum_vacuum_scale_factor);',
    ]
    assert sql["mysql+asyncmy"] == sql["sqlite"] == []


async def migrate(target: Target, table: str | None = None) -> None:
    async with SqlBackend.from_url(
        target.url, table_name=table or target.table, schema=target.schema
    ) as backend:
        await backend.migrate()


def test_migrate_refuses_a_table_the_apps_own_alembic_history_manages(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    # Alembic "way 2" (our scripts in the app's version_locations) records the session
    # revision in the app's alembic_version; backend.migrate() at start-up then used to fail
    # on CREATE TABLE ("relation ... already exists"), reported as an outage.
    command.upgrade(make_config(target.url, target.table, target.schema), "head")
    app_version = qualified(target, "alembic_version")
    run(
        execute(
            target.url,
            f"CREATE TABLE {app_version} (version_num VARCHAR(32) NOT NULL)",
            f"INSERT INTO {app_version} VALUES ('{head()}')",
            f"DROP TABLE {qualified(target, version_table(target.table))}",
        )
    )
    with pytest.raises(MigrationError, match="managed by your own Alembic history") as raised:
        run(migrate(target))
    assert "alembic upgrade heads" in str(raised.value)
    assert "remove `backend.migrate()`" in str(raised.value)
    assert main(["migrate", "upgrade", "head", *cli_options(target)]) == EXIT_FAILED
    assert "managed by your own Alembic history" in capsys.readouterr().err
    assert run(use_backend(target)) is not None  # the table was left as it was


def test_an_unknown_revision_is_a_migration_error(tmp_path: Path) -> None:
    async def to_nowhere() -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
        async with SqlBackend.from_url(url) as backend:
            await backend.migrate("9999")

    with pytest.raises(MigrationError, match="9999"):
        run(to_nowhere())


def test_a_start_up_migration_names_the_database_and_the_cause() -> None:
    require_postgres()
    target = Target("postgresql+asyncpg://root:hunter2secret@127.0.0.1:1/test", "t", None)
    with pytest.raises(StoreUnavailableError) as raised:
        run(migrate(target))
    message = str(raised.value)
    assert message.startswith(
        "could not migrate the session table t on postgresql+asyncpg://root:***@127.0.0.1:1/test: "
    )
    assert "Connect call failed" in message or "Connection refused" in message, message
    assert "hunter2secret" not in message


def test_migrate_logs_one_line_and_no_driver_warning(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    # Two workers migrating at start-up used to log 27 lines of Alembic's INFO chatter, and
    # MariaDB's first migration a WARNING (a named primary key it ignores).
    caplog.set_level(logging.INFO)
    run(migrate(target))
    run(migrate(target))  # at head: nothing to say
    assert [r for r in caplog.records if r.name.startswith("alembic")] == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    (line,) = [r.getMessage() for r in caplog.records if r.name == "typed_session_sql"]
    assert line.startswith(f"migrated {target.table}: (none) -> {head()} on ")
