"""docs/sql-store.md says what the SQL backend does: its table, and its executor examples."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData

from tests import markdown
from typed_session_sql.backends.sql import session_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql-store.md"


def section(title: str) -> str:
    return markdown.section(DOC.read_text(), title)


def test_the_documented_table_is_the_real_one() -> None:
    table = session_table(MetaData(), "t")
    documented = re.findall(r"^\| `(\w+)` \|", section("The table"), flags=re.M)
    assert documented == [column.name for column in table.columns]
    for index in table.indexes:
        assert index.name is not None
        assert index.name.replace("ix_t_", "ix_<table>_") in section("The table")


def test_the_executor_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (block,) = markdown.blocks(section("Who runs the statements: the executor"))
    namespace: dict[str, Any] = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    logger = logging.getLogger("typed_session_sql.sql")
    level = logger.level
    try:
        asyncio.run(namespace["observed"](f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"))
    finally:
        logger.setLevel(level)
    printed = capsys.readouterr().out
    assert "executor=aiosqlite, held_connections=5" in printed  # from_url
    assert "executor=sqlalchemy" in printed
