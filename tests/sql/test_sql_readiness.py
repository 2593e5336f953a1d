"""Readiness, as the API call and as ``typed-session-sql ready``, on SQLite, PostgreSQL and
MariaDB: ready only once the table is migrated to the expected revision; not ready for a
missing table, a table without or with another record, and a database that is down or
does not answer."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.migrations.test_migrations import Target, execute, qualified, run, target  # noqa: F401
from tests.sql_backends import aiosqlite_threads_joined
from typed_session_sql import SqlBackend
from typed_session_sql.alembic_support import head, version_table
from typed_session_sql.backends.sql.readiness import Readiness, ReadinessStatus
from typed_session_sql.cli import main

SECRET = "hunter2secret"


def check(db: Target, **options: object) -> Readiness:
    async def checked() -> Readiness:
        async with (
            aiosqlite_threads_joined(),  # a SQLite file that cannot open leaves a thread
            SqlBackend.from_url(db.url, table_name=db.table, schema=db.schema) as backend,
        ):
            return await backend.check_ready(**options)  # type: ignore[arg-type]

    result: Readiness = run(checked())
    return result


def cli(db: Target, *extra: str) -> int:
    options = ["--url", db.url, "--table", db.table]
    if db.schema:
        options += ["--schema", db.schema]
    return main(["ready", *options, *extra])


async def migrate(db: Target) -> None:
    async with SqlBackend.from_url(db.url, table_name=db.table, schema=db.schema) as backend:
        await backend.migrate()


def test_ready_once_the_table_is_at_the_expected_revision(
    target: Target,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = check(target)
    assert missing.status is ReadinessStatus.TABLE_MISSING
    assert cli(target) == 1
    assert capsys.readouterr().out.startswith("table_missing: ")

    run(migrate(target))
    ready = check(target)
    assert ready.ready
    assert ready.recorded == (head(),)
    assert cli(target) == 0
    assert capsys.readouterr().out.startswith("ready: ")

    record = qualified(target, version_table(target.table))
    run(execute(target.url, f"UPDATE {record} SET version_num = 'f0f0f0f0f0f0'"))
    unknown = check(target)  # a revision these scripts do not know
    assert unknown.status is ReadinessStatus.WRONG_REVISION
    assert "f0f0f0f0f0f0" in unknown.detail
    assert cli(target) == 1
    assert check(target, revision=None).ready  # only that the table exists
    assert cli(target, "--revision", "any") == 0

    run(execute(target.url, f"DELETE FROM {record}"))
    unrecorded = check(target)  # as create_schema leaves it
    assert unrecorded.status is ReadinessStatus.WRONG_REVISION
    assert "no migration record" in unrecorded.detail
    assert cli(target) == 1


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+asyncpg://root:{SECRET}@127.0.0.1:1/test",  # nothing listens on 1
        f"mysql+asyncmy://root:{SECRET}@127.0.0.1:1/test",
        "sqlite+aiosqlite:////nonexistent/directory/sessions.db",
    ],
    ids=["postgres", "mariadb", "sqlite"],
)
def test_a_down_database_is_unreachable(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    down = check(Target(url, "typed_sessions", None))
    assert down.status is ReadinessStatus.UNREACHABLE
    assert SECRET not in down.detail
    assert main(["ready", "--url", url]) == 69
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word (a hung database)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_database_that_does_not_answer_is_unreachable_within_the_bound(
    silent_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+asyncpg://root@127.0.0.1:{silent_server}/test"
    hung = check(Target(url, "typed_sessions", None), within=0.2)
    assert hung.status is ReadinessStatus.UNREACHABLE
    assert "did not answer within 0.2 s" in hung.detail
    assert main(["ready", "--url", url, "--within", "0.2"]) == 69
    assert "did not answer within 0.2 s" in capsys.readouterr().err
