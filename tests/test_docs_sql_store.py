"""The SQL store guide's examples run as written."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData

DOC = Path(__file__).resolve().parent.parent / "docs" / "sql-store.md"


def python_blocks() -> list[str]:
    text = DOC.read_text()
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, flags=re.S | re.M)
    return ["\n".join(line[len(indent) :] for line in body.splitlines()) for indent, body in blocks]


def test_quick_start_creates_and_stores_a_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    monkeypatch.setenv("TYPED_SESSION_SQL_URL", url)
    namespace: dict[str, Any] = {}
    exec(compile(python_blocks()[0], str(DOC), "exec"), namespace)
    asyncio.run(namespace["main"]())
    assert (tmp_path / "sessions.db").stat().st_size > 0


def test_autogenerate_snippet_adds_our_table_to_an_apps_metadata() -> None:
    target_metadata = MetaData()
    namespace: dict[str, Any] = {"target_metadata": target_metadata}
    (snippet,) = [block for block in python_blocks() if "session_table(" in block]
    exec(compile(snippet, str(DOC), "exec"), namespace)
    assert "typed_sessions" in target_metadata.tables


def test_the_version_location_command_names_our_versions_directory() -> None:
    command = re.search(r'python -c "(.*?)"', DOC.read_text())
    assert command is not None
    done = subprocess.run(
        [sys.executable, "-c", command.group(1)], capture_output=True, text=True, check=True
    )
    versions = Path(done.stdout.strip())
    assert any(versions.glob("0001_*.py"))
