"""The Alembic migrations: both ways on SQLite and PostgreSQL, equal to the backend's table,
and runnable from a built wheel with no checkout."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection

from tests.sql_backends import require_postgres, unique_name
from typed_session_sql import Record, SqlBackend
from typed_session_sql.alembic_support import VERSION_TABLE, make_config
from typed_session_sql.backends.sql import create_engine, session_table

ROOT = Path(__file__).resolve().parent.parent


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
                "version_table": VERSION_TABLE,
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


async def use_backend(target: Target) -> Record | None:
    """Write and read one row through the backend on the migrated table."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    async with SqlBackend.from_url(target.url, table_name=target.table, schema=target.schema) as b:
        assert await b.create(b"k" * 32, Record(b"{}", 1, now, now + timedelta(hours=1)))
        return await b.read(b"k" * 32)


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        yield Target(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}", "typed_sessions", None)
        return
    url = require_postgres()
    schema = unique_name("mig")

    async def ddl(sql: str) -> None:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    run(ddl(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Target(url, unique_name("sessions"), schema)
    finally:
        run(ddl(f'DROP SCHEMA "{schema}" CASCADE'))


def test_upgrade_matches_the_backend_table_and_downgrade_removes_it(target: Target) -> None:
    config = make_config(target.url, target.table, target.schema)
    command.upgrade(config, "head")
    tables, diff = run(inspect_db(target))
    assert {target.table, VERSION_TABLE} <= tables
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
    assert {target.table, VERSION_TABLE} <= tables
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
    assert "0001 (head)" in cli("current", "--url", url)
    assert "0001" in cli("history")
    tables, diff = run(inspect_db(Target(url, "typed_sessions", None)))
    assert "typed_sessions" in tables
    assert diff == []
    cli("downgrade", "base", "--url", url)
    tables, _ = run(inspect_db(Target(url, "typed_sessions", None)))
    assert "typed_sessions" not in tables


def test_cli_reports_a_down_database_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from typed_session_sql.cli import main

    url = "postgresql+asyncpg://root:hunter2secret@127.0.0.1:1/test"  # nothing listens on 1
    assert main(["migrate", "upgrade", "head", "--url", url]) == 69
    captured = capsys.readouterr()
    assert "typed-session-sql migrate:" in captured.err
    assert "hunter2secret" not in captured.err + captured.out
