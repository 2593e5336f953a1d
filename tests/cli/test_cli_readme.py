"""The README's command lines as a reader runs them: the two commands through ``uvx`` (no
global install, which PEP 668 systems refuse), the install line from a checkout into a fresh
virtualenv, and the one exit-code table every command follows (in docs/reference/cli.md)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import typed_session_sql
from tests import markdown
from typed_session_sql.cli import common

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def section(title: str) -> str:
    return markdown.section(README.read_text(), title)


def console(text: str) -> list[list[str]]:
    """The ``$ `` lines of the console blocks in ``text`` (and the lines they print)."""
    found: list[list[str]] = []
    for block in markdown.blocks(text, "console"):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append([line[2:].split("  #")[0].strip()])
            elif found:
                found[-1].append(line)
    return found


def test_the_exit_code_table_is_what_the_commands_return() -> None:
    table = (ROOT / "docs/reference/cli.md").read_text().split("## Exit codes", 1)[1]
    codes = [int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)]
    assert codes == [
        common.EXIT_OK,
        common.EXIT_FAILED,
        common.EXIT_USAGE,
        common.EXIT_UNAVAILABLE,
        common.EXIT_BUG,
        common.EXIT_INTERRUPTED,
    ]
    for code in codes[:-1]:  # and --help says the same
        assert f"{code} " in common.EXIT_CODES_HELP


def test_the_two_commands_run_through_uvx() -> None:
    uvx = shutil.which("uvx", path=str(Path(sys.executable).parent)) or shutil.which("uvx")
    assert uvx is not None, "uvx comes with uv (test dependency group)"
    lines = [command for command, *_ in console(section("The two commands"))]
    assert lines == ["uvx nox -s demo", "uvx nox"]
    # The same commands, listing what they would run instead of running it (the tests
    # cannot run the whole suite from inside itself).
    for line in lines:
        words = shlex.split(line)
        done = subprocess.run(
            [uvx, *words[1:], "--list"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        selected = set(re.findall(r"^\* (\w+)", done.stdout, flags=re.M))
        default = {"tests", "tests_bounds", "lint", "typecheck"}
        assert selected == ({"demo"} if "-s" in words else default)


@pytest.mark.wheel
def test_the_install_lines_work_from_a_checkout(tmp_path: Path) -> None:
    steps = console(section("Storing sessions in SQL"))
    assert [command for command, *_ in steps] == [
        "python3 -m venv .venv",
        ".venv/bin/pip install './typed-session-sql[postgres]'",
        ".venv/bin/typed-session-sql migrate upgrade head --url postgresql+asyncpg://app@db/app",
    ]
    (tmp_path / "typed-session-sql").symlink_to(ROOT)  # the checkout, where the reader is
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TYPED_SESSION_SQL_", "PIP_"))}
    env.pop("VIRTUAL_ENV", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    for command, *printed in steps:
        words = shlex.split(command.replace("postgresql+asyncpg://app@db/app", url))
        if words[0] == "python3":
            words[0] = sys.executable
        done = subprocess.run(
            words, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{command}: {done.stderr}"
        if printed:
            assert done.stdout.splitlines() == [
                line.replace("postgresql+asyncpg://app@db/app", url) for line in printed
            ]
    python = tmp_path / ".venv" / "bin" / "python"
    import_check = "import asyncpg, typed_session_sql; print(typed_session_sql.__version__)"
    done = subprocess.run([python, "-c", import_check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == typed_session_sql.__version__
