"""What every database command shares: the same exit code for the same mistake and never a
traceback, plain URLs taken for the async driver, no default database, no part of a
password in any output, the hint to migrate for a missing table (and only for that) on
every database, ``--version`` and plain-text ``--help``."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command as alembic_command
from alembic.util.exc import CommandError
from sqlalchemy import text

import typed_session_sql
from tests.mariadb.server import require_mariadb
from tests.sql_backends import require_postgres, unique_name
from typed_session_sql import alembic_support
from typed_session_sql.backends.sql import create_engine
from typed_session_sql.cli import build_parser, main
from typed_session_sql.cli.common import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE
from typed_session_sql.urls import async_url, mask_password

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "typed_session_sql.cli"]
SECRET = "hunter2secret"
PG = f"postgresql+asyncpg://root:{SECRET}@127.0.0.1:5432"

# Each database command, with what it needs besides --url.
COMMANDS = [
    ["purge"], ["stats"], ["ready"], ["migrate", "upgrade", "head"], ["migrate", "current"]
]  # fmt: skip


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = env if env is not None else os.environ.copy()
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=environment,
        check=False,
    )  # fmt: skip


def exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exit_:  # argparse's own usage errors
        return int(exit_.code or 0)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    ("url", "code"),
    [
        (f"{PG}/test?timeout=notanumber", EXIT_USAGE),  # the driver refuses the option
        (f"{PG}/test?sslmode=bogus", EXIT_USAGE),
        (f"postgres://root:{SECRET}@127.0.0.1:5432/test?sslmode=bogus", EXIT_USAGE),
        (f"postgresql+asyncpg://root:{SECRET}@127.0.0.1:notaport/test", EXIT_USAGE),
        (f"postgresql+asyncpg://root:{SECRET}@127.0.0.1:99999/test", EXIT_USAGE),
        (f"nosuchdialect://root:{SECRET}@host/db", EXIT_USAGE),
        (f"mssql://root:{SECRET}@127.0.0.1/db", EXIT_USAGE),  # driver not installed
        (f"postgresql+asyncpg://root:{SECRET}@127.0.0.1:1/test", EXIT_UNAVAILABLE),
        (f"{PG}/no_such_database_here", EXIT_UNAVAILABLE),
        (f"postgresql+asyncpg://no_such_role:{SECRET}@127.0.0.1:5432/test", EXIT_UNAVAILABLE),
    ],
    ids=lambda value: str(value).split("@")[-1] if isinstance(value, str) else str(value),
)
def test_the_same_mistake_gets_the_same_exit_code_from_every_command(
    command: list[str], url: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    if "127.0.0.1:5432" in url:
        require_postgres()
    assert exit_code([*command, "--url", url]) == code  # no exception: no traceback
    err = capsys.readouterr().err
    assert SECRET not in err
    (line,) = err.splitlines()  # one line, naming the command
    assert line.startswith(f"typed-session-sql {command[0]}: error: "), line
    assert "hint:" not in err  # a missing database or role is not a missing table


@pytest.mark.parametrize(
    "args",
    [
        ["purge", "--every", "99999999999999999999d"],
        ["purge", "--every", "366d"],
        ["purge", "--pause", "99999999999999999999d"],
        ["purge", "--pause", "2h"],
        ["purge", "--batch-size", "1" + "0" * 30],
        ["purge", "--every", "soon"],
        ["purge", "--every", "0s"],
        ["purge", "--batch-size", "0"],
        ["purge", "--pause", "-1s"],
        ["purge", "--bogus"],
        ["migrate", "current", "--sql", "--url", "sqlite:///x.db"],
    ],
)
def test_out_of_range_and_malformed_options_are_usage_errors(args: list[str]) -> None:
    assert exit_code(args) == EXIT_USAGE


def test_a_command_line_traceback_never_reaches_the_user() -> None:
    # The same as above through a real process: what a user's terminal shows.
    done = cli("stats", "--url", f"{PG}/test?timeout=notanumber")
    assert done.returncode == EXIT_USAGE
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    done = cli("purge", "--every", "99999999999999999999d")
    assert done.returncode == EXIT_USAGE
    assert "Traceback" not in done.stderr


def test_a_bad_prepared_statements_value_is_a_usage_error_that_names_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"postgresql://root:{SECRET}@127.0.0.1:5432/test?prepared_statements=maybe"
    assert exit_code(["stats", "--url", url]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "prepared_statements in the URL must be true or false, not 'maybe'" in err


def test_async_url_maps_sync_and_driverless_urls() -> None:
    assert async_url("postgres://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    assert async_url("postgresql://u@h:5/db") == "postgresql+asyncpg://u@h:5/db"
    assert async_url("postgresql+psycopg2://h/db?sslmode=require&x=1") == (
        "postgresql+asyncpg://h/db?ssl=require&x=1"
    )
    assert async_url("sqlite:///./s.db") == "sqlite+aiosqlite:///./s.db"
    assert async_url("sqlite://") == "sqlite+aiosqlite://"
    assert async_url("sqlite+pysqlite:////abs.db") == "sqlite+aiosqlite:////abs.db"
    assert async_url("mysql://u:p@h:3306/db?charset=utf8mb4") == (
        "mysql+asyncmy://u:p@h:3306/db?charset=utf8mb4"
    )
    assert async_url("mysql+pymysql://h/db") == "mysql+asyncmy://h/db"
    assert async_url("mysql+mysqldb://h/db") == "mysql+asyncmy://h/db"
    assert async_url("mariadb://h/db") == "mariadb+asyncmy://h/db"
    assert async_url("mariadb+pymysql://h/db") == "mariadb+asyncmy://h/db"
    for untouched in (
        "postgresql+asyncpg://h/db?sslmode=x",
        "sqlite+aiosqlite:///s.db",
        "postgresql+psycopg://h/db",
        "mysql+asyncmy://h/db",
        "mysql+aiomysql://h/db",
        "mssql://h/db",
        "not a url",
    ):
        assert async_url(untouched) == untouched


@pytest.fixture
def pg_table() -> Iterator[str]:
    url = require_postgres()
    table = unique_name("sessions")
    yield table

    async def drop() -> None:
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP TABLE IF EXISTS "{table}", "{table}_alembic_version"'))
        await engine.dispose()

    asyncio.run(drop())


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command in this process (the real-process runs are in the doc tests)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2"])
def test_plain_postgres_urls_work_for_every_command(
    scheme: str, pg_table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{scheme}://root@127.0.0.1:5432/test"
    migrated = run_main(capsys, "migrate", "upgrade", "head", "--url", url, "--table", pg_table)
    assert migrated == (0, f"{pg_table}: (none) -> 0003, database {url}\n", "")
    for command in (["purge"], ["stats", "--json"], ["migrate", "current"]):
        code, _, err = run_main(capsys, *command, "--url", url, "--table", pg_table)
        assert code == 0, err


def test_plain_sqlite_urls_work_for_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    migrated = run_main(capsys, "migrate", "upgrade", "--url", url)
    assert migrated == (0, f"typed_sessions: (none) -> 0003, database {url}\n", "")
    for command in (["purge"], ["stats"], ["migrate", "current"]):
        code, _, err = run_main(capsys, *command, "--url", url)
        assert code == 0, err


def test_migrate_prints_one_line_per_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    head = alembic_support.head()
    steps = [
        (["current"], f"typed_sessions: at (none), head is {head}"),
        (["upgrade", "head"], f"typed_sessions: (none) -> {head}"),
        (["upgrade", "head"], f"typed_sessions: {head}, nothing to do"),
        (["current"], f"typed_sessions: at {head} (head)"),
        (["downgrade", "base"], f"typed_sessions: {head} -> (none)"),
        (["current"], f"typed_sessions: at (none), head is {head}"),
    ]
    for args, expected in steps:  # each names the database it worked on
        expected += f", database {url}\n"
        assert run_main(capsys, "migrate", *args, "--url", url) == (0, expected, "")
    code, _, err = run_main(capsys, "migrate", "upgrade", "9999", "--url", url)
    assert code == EXIT_FAILED
    assert "9999" in err


# Every command that works on a database, in every mode (migrate --sql needs one too).
DATABASE_COMMANDS = [
    *COMMANDS,
    ["migrate", "downgrade", "base"],
    ["migrate", "upgrade", "head", "--sql"],
    ["migrate", "current", "--check"],
]


@pytest.mark.parametrize("variable", ["unset", "empty"])
def test_no_command_falls_back_to_a_database_nobody_named(
    variable: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A deploy step that lost its variable must fail, not migrate a new ./sessions.db.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TYPED_SESSION_SQL_URL", raising=False)
    if variable == "empty":
        monkeypatch.setenv("TYPED_SESSION_SQL_URL", "")
    said = "is empty" if variable == "empty" else "is not set"
    for command in DATABASE_COMMANDS:
        assert exit_code(command) == EXIT_USAGE
        assert capsys.readouterr().err == (
            f"typed-session-sql {command[0]}: error: no database given: --url is missing and "
            f"$TYPED_SESSION_SQL_URL {said} (no command but demo picks a default database)\n"
        )
    # The plain `alembic` command on our scripts (alembic.ini names no database) neither.
    with pytest.raises(CommandError, match="no database given"):
        alembic_command.upgrade(alembic_support.make_config(), "head")
    assert list(tmp_path.iterdir()) == []


def test_an_empty_url_is_named_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    # What --url "$DATABASE_URL" gives when the variable is unset.
    for args in (["stats"], ["migrate", "upgrade", "head"]):
        assert exit_code([*args, "--url", ""]) == EXIT_USAGE
        assert capsys.readouterr().err.endswith(": error: --url is empty\n")


def test_a_misspelt_option_gets_the_subcommands_usage_and_the_option_meant(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert exit_code(["purge", "--url", "sqlite://", "--batchsize", "10"]) == EXIT_USAGE
    usage, *_, error = capsys.readouterr().err.splitlines()
    assert usage.startswith("usage: typed-session-sql purge ")
    assert error == (
        "typed-session-sql purge: error: unrecognized arguments: --batchsize 10 "
        "(did you mean --batch-size?)"
    )


def test_migrate_current_check_is_a_deploy_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert exit_code(["migrate", "current", "--check", "--url", url]) == EXIT_FAILED
    assert exit_code(["migrate", "upgrade", "head", "--url", url]) == 0
    assert exit_code(["migrate", "current", "--check", "--url", url]) == 0


# A password in every shape a URL can carry one: the query (asyncpg, psycopg and asyncmy
# take ?password=), and one holding an unencoded "@" (SQLAlchemy then takes its tail for
# the host).
PASSWORD_IN_QUERY = f"postgresql://root@127.0.0.1:5432/test?password={SECRET}"
AT_IN_PASSWORD = f"postgresql://root:{SECRET[:6]}@{SECRET[6:]}@127.0.0.1:5432/test"
SECRET_PARTS = (SECRET, SECRET[:6], SECRET[6:])


def no_secret(text_: str) -> bool:
    return not any(part in text_ for part in SECRET_PARTS)


def test_no_output_shows_any_part_of_a_password(
    pg_table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = ["--table", pg_table]
    # Working commands (trust authentication takes any password): every line of output.
    for args in (
        ["migrate", "upgrade", "head"],
        ["migrate", "current"],
        ["stats"],
        ["stats", "--json"],
        ["purge"],
    ):
        code, out, err = run_main(capsys, *args, "--url", PASSWORD_IN_QUERY, *table)
        assert code == 0, err
        assert no_secret(out + err), out + err
        assert "?password=***" in out + err or args == ["purge"]
    # Failing ones: the error lines.
    for args in (["migrate", "current"], ["stats"], ["purge"]):
        assert exit_code([*args, "--url", AT_IN_PASSWORD]) == EXIT_UNAVAILABLE
        err = capsys.readouterr().err
        assert no_secret(err), err
        assert "root:***@127.0.0.1:5432/test" in err
    # argparse's own errors quote what they did not expect: a URL without --url, or where
    # the action goes.
    for url in (PASSWORD_IN_QUERY, AT_IN_PASSWORD):
        for args in (["purge", url], ["migrate", "--url", url], ["stats", f"--link={url}"]):
            assert exit_code(args) == EXIT_USAGE
            err = capsys.readouterr().err
            assert no_secret(err), err
            assert "***" in err


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mariadb"])
def test_a_missing_table_gets_the_same_hint_from_every_command_on_every_database(
    dialect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if dialect == "sqlite":
        database = tmp_path / "empty.db"
        database.touch()  # a database, without our table
        url = f"sqlite+aiosqlite:///{database}"
    else:
        url = (require_postgres if dialect == "postgres" else require_mariadb)()
    table = unique_name("absent")
    for command in ("purge", "stats"):
        code, _, err = run_main(capsys, command, "--url", url, "--table", table)
        assert code == EXIT_UNAVAILABLE
        error, hint = err.splitlines()
        assert f"SessionTableMissingError: the session table {table} does not exist" in error
        assert hint == (
            "hint: create the table first: typed-session-sql migrate upgrade head "
            f"--url '{mask_password(url)}' --table {table}"
        )


def test_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert typed_session_sql.__version__ == project["version"]
    done = cli("--version")
    assert (done.returncode, done.stdout) == (0, f"typed-session-sql {project['version']}\n")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_help_is_plain_text() -> None:
    parser = build_parser()
    helps = [parser.format_help()]
    for sub in subcommands(parser).values():
        helps.append(sub.format_help())
        helps += [action.format_help() for action in subcommands(sub).values()]
    assert len(helps) == 10  # the command, five subcommands, four migrate actions
    for text_ in helps:
        assert "``" not in text_
        assert "::" not in text_
        assert ":func:" not in text_
