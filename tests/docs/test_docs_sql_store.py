"""The SQL store guide's examples run as written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.markdown import blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql-store.md"


def python_blocks() -> list[str]:
    return blocks(DOC.read_text())


def test_quick_start_creates_and_stores_a_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    monkeypatch.setenv("TYPED_SESSION_SQL_URL", url)
    namespace: dict[str, Any] = {}
    exec(compile(python_blocks()[0], str(DOC), "exec"), namespace)
    asyncio.run(namespace["main"]())
    assert (tmp_path / "sessions.db").stat().st_size > 0
