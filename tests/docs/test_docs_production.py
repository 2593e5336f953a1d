"""The production guide's Python examples run as written (they make backends; nothing
connects). tests/production/ runs the same settings against real servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.mariadb.test_galera_sessions import ENGINE
from tests.markdown import blocks
from typed_session_sql import SqlBackend

DOC = Path(__file__).resolve().parents[2] / "docs" / "production.md"


def python_blocks() -> list[str]:
    return blocks(DOC.read_text())


@pytest.mark.anyio
@pytest.mark.parametrize("block", python_blocks())
async def test_each_example_makes_a_backend(block: str) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    backend = namespace["backend"]
    assert isinstance(backend, SqlBackend)
    galera = "wsrep_sync_wait" in block
    assert backend.engine.dialect.name == ("mysql" if galera else "postgresql")
    await backend.dispose()


def test_the_galera_example_sets_what_the_galera_tests_ran_with() -> None:
    (block,) = [block for block in python_blocks() if "wsrep_sync_wait" in block]
    for name, value in ENGINE.items():
        if name != "connect_args":
            assert f"{name}={value!r}" in block
    measured = ENGINE["connect_args"]
    assert f'"init_command": {measured["init_command"]!r}'.replace("'", '"') in block
    assert f'"connect_timeout": {measured["connect_timeout"]}' in block


def test_the_failover_example_asks_asyncpg_for_every_host_and_the_writable_one() -> None:
    (block,) = [block for block in python_blocks() if "target_session_attrs" in block]
    namespace: dict[str, Any] = {}
    exec(compile(block, str(DOC), "exec"), namespace)
    engine = namespace["backend"].engine
    _, options = engine.dialect.create_connect_args(engine.url)
    assert options["host"] == ["db1.internal", "db2.internal"]
    assert options["port"] == [5432, 5432]
    assert options["target_session_attrs"] == "read-write"
