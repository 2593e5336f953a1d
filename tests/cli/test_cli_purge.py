"""``typed-session-sql purge`` and ``stats``, run as real processes against real databases.

Rows are written with an expiry relative to the real wall clock, since the CLI process
uses it; the test itself never waits for time, only for the process's output or exit.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from tests.purge_support import count_rows, insert_rows, rows
from tests.sql_backends import postgres_sql_backend, sqlite_sql_backend
from typed_session_sql import SqlBackend
from typed_session_sql.cli.common import EXIT_UNAVAILABLE
from typed_session_sql.cli.purge import parse_interval

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-m", "typed_session_sql.cli"]
# A sidecar's lines start with the time (UTC, to the second).
STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00) (.*)")
SUMMARY = re.compile(
    r"purged (?P<rows>[\d,]+) expired sessions in (?P<batches>\d+) batch\(es\), "
    r"[\d.]+ s, [\d,]+ rows/s(?:, database (?P<database>\S+))?"  # one pass names it
)


@pytest.fixture(params=["sqlite", "postgres"])
async def filled(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SqlBackend, list[str]]]:
    """A backend with 2,500 expired, 10 live and 2 never-expiring rows, and its CLI options."""
    opener = sqlite_sql_backend() if request.param == "sqlite" else postgres_sql_backend()
    async with opener as backend:
        await insert_rows(backend, rows(datetime.now(UTC), expired=2_500, live=10, forever=2))
        url = backend.engine.url.render_as_string(hide_password=False)
        yield backend, ["--url", url, "--table", backend.table.name]


def on_terminal(args: list[str]) -> tuple[int, bytes]:
    """Run the CLI with its stdout on a pseudo-terminal; return its exit code and output."""
    controller, terminal = pty.openpty()
    with subprocess.Popen([*CLI, *args], stdout=terminal, stderr=subprocess.DEVNULL) as process:
        os.close(terminal)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        os.close(controller)
        return process.wait(timeout=60), output


def until_sigterm(args: list[str], *, stderr_lines: int = 0) -> tuple[int, list[str], str]:
    """Start the CLI; read its first two stdout lines (or its first line there and then
    ``stderr_lines`` lines of stderr); send SIGTERM. Return the exit code, the lines read
    and the rest of stdout."""
    with subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:  # leaving the block closes the pipes and reaps the process
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            lines = [process.stdout.readline()]
            if stderr_lines:
                lines += [process.stderr.readline() for _ in range(stderr_lines)]
            else:
                lines.append(process.stdout.readline())
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        return code, lines, process.stdout.read()


def unstamped(line: str) -> str:
    """The line without its timestamp, which must be there and be about now."""
    match = STAMP.fullmatch(line.strip())
    assert match is not None, line
    assert abs((datetime.fromisoformat(match[1]) - datetime.now(UTC)).total_seconds()) < 600
    return match[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


async def test_purge_one_pass_prints_one_summary_line_and_exits_0(
    filled: tuple[SqlBackend, list[str]],
) -> None:
    backend, options = filled
    done = await anyio.to_thread.run_sync(
        lambda: run("purge", *options, "--batch-size", "1000", "--pause", "1ms")
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1  # not a terminal: no per-batch lines
    summary = SUMMARY.fullmatch(lines[0])
    assert summary is not None, lines[0]
    assert (summary["rows"], summary["batches"]) == ("2,500", "3")
    assert summary["database"] == options[1]  # the database it deleted in (no password)
    assert await count_rows(backend) == 12


@pytest.mark.parametrize("pacing", [[], ["--no-pacing"]], ids=["paced", "no-pacing"])
async def test_purge_paces_itself_unless_told_not_to(
    filled: tuple[SqlBackend, list[str]], pacing: list[str]
) -> None:
    backend, options = filled
    code, output = await anyio.to_thread.run_sync(on_terminal, ["purge", *options, *pacing])
    assert code == 0
    lines = output.decode().splitlines()
    removed = [
        int(found[1].replace(",", ""))
        for line in lines[:-1]
        if (found := re.search(r"removed ([\d,]+), total", line))
    ]
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary is not None, lines[-1]
    assert summary["rows"] == "2,500"
    assert await count_rows(backend) == 12
    if pacing:  # back to back, 1,000 rows each, as before pacing
        assert removed == [1_000, 1_000, 500]
    else:  # 1,000 rows first, then sized from what that batch cost: rarely 1,000 again
        assert removed[0] == 1_000
        assert sum(removed) == 2_500


async def test_purge_on_a_terminal_prints_each_batch(filled: tuple[SqlBackend, list[str]]) -> None:
    _, options = filled
    code, output = await anyio.to_thread.run_sync(
        on_terminal, ["purge", *options, "--batch-size", "1000"]
    )
    assert code == 0
    lines = output.decode().splitlines()
    batches = [line for line in lines if line.startswith("batch ")]
    assert [line.split(":")[0] for line in batches] == ["batch 1", "batch 2", "batch 3"]
    assert "removed 1,000, total 2,000 after " in batches[1]  # the pass's time, not the batch's
    assert "rows/s" in batches[1]
    assert SUMMARY.fullmatch(lines[-1])


async def test_stats_reports_counts_and_size(filled: tuple[SqlBackend, list[str]]) -> None:
    _, options = filled
    done = await anyio.to_thread.run_sync(lambda: run("stats", *options, "--json"))
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert (stats["live"], stats["never_expire"], stats["expired"]) == (12, 2, 2_500)
    assert stats["size_bytes"] > 0
    assert datetime.fromisoformat(stats["oldest_expiry"]) < datetime.now(UTC)
    text = await anyio.to_thread.run_sync(lambda: run("stats", *options))
    assert text.returncode == 0
    assert "expired:       2,500" in text.stdout
    assert "live:          12 (of which never expire: 2)" in text.stdout


def test_unreachable_database_exits_69_without_showing_the_password() -> None:
    url = "postgresql+asyncpg://root:hunter2secret@127.0.0.1:1/test"
    for command in ("purge", "stats"):
        done = run(command, "--url", url)
        assert done.returncode == EXIT_UNAVAILABLE == 69
        assert "could not be reached" in done.stderr
        assert "hunter2secret" not in done.stdout + done.stderr
        assert "root:***@127.0.0.1:1" in done.stderr


def test_url_defaults_to_the_environment_variable(tmp_path: Path) -> None:
    env = {**os.environ, "TYPED_SESSION_SQL_URL": "postgresql+asyncpg://u:pw-in-env@127.0.0.1:1/x"}
    done = run("purge", env=env)
    assert done.returncode == EXIT_UNAVAILABLE
    assert "u:***@127.0.0.1:1/x" in done.stderr
    assert "pw-in-env" not in done.stderr


def test_parse_interval() -> None:
    assert parse_interval("90").total_seconds() == 90
    assert parse_interval("30s").total_seconds() == 30
    assert parse_interval("5m").total_seconds() == 300
    assert parse_interval("1.5h").total_seconds() == 5400
    assert parse_interval("1d").total_seconds() == 86400
    assert parse_interval("20ms").total_seconds() == pytest.approx(0.02)


async def test_every_runs_until_sigterm_then_exits_0(tmp_path: Path) -> None:
    async with sqlite_sql_backend() as backend:
        await insert_rows(backend, rows(datetime.now(UTC), expired=1_200, live=3))
        url = backend.engine.url.render_as_string(hide_password=False)
        code, (started, first_pass), rest = await anyio.to_thread.run_sync(
            until_sigterm, ["purge", "--url", url, "--every", "1h", "--batch-size", "500"]
        )
        assert "every 1:00:00" in unstamped(started)
        assert "batches of 500;" in unstamped(started)  # an explicit size: unpaced
        assert SUMMARY.fullmatch(unstamped(first_pass)), first_pass  # a sidecar starts at once
        assert code == 0
        assert unstamped(rest) == "received SIGTERM, stopping"
        assert await count_rows(backend) == 3


async def test_every_keeps_running_while_the_database_is_down() -> None:
    url = "postgresql+asyncpg://root:hunter2secret@127.0.0.1:1/test"
    code, (started, *warnings), rest = await anyio.to_thread.run_sync(
        lambda: until_sigterm(["purge", "--url", url, "--every", "1h"], stderr_lines=2)
    )
    assert "root:***@127.0.0.1:1" in unstamped(started)
    # the failed pass is logged (no password, with the time) and retried; a signal still
    # stops it cleanly
    failed = [line for line in warnings if "purge pass failed" in line]
    assert failed
    assert "retrying in" in failed[0]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING ", failed[0]), failed[0]
    assert "hunter2secret" not in "".join(warnings) + rest
    assert code == 0
    assert unstamped(rest) == "received SIGTERM, stopping"


def until_output_closed(args: list[str]) -> tuple[int, str, str]:
    """Start the CLI; read its first line, then close its stdout, as ``| head -1`` does.
    Return the exit code, the line and its stderr."""
    with subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            first = process.stdout.readline()
            process.stdout.close()
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        return code, first, process.stderr.read()


async def test_every_stops_cleanly_when_nobody_reads_its_output(
    filled: tuple[SqlBackend, list[str]],
) -> None:
    # `purge --every 1s | head -2` used to print a BrokenPipeError traceback every pass
    # until SIGTERM. On PostgreSQL the URL carries a ?password= too: never printed.
    backend, (flag, url, *options) = filled
    if backend.engine.dialect.name == "postgresql":
        url += "?password=hunter2secret"
    args = ["purge", flag, url, *options, "--every", "10ms"]
    code, first, err = await anyio.to_thread.run_sync(until_output_closed, args)
    assert code == 0, err
    assert "every 0:00:00.010000" in unstamped(first)
    assert "hunter2secret" not in first + err
    assert err == ""  # no traceback, no "Exception ignored" at exit
