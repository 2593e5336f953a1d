"""The examples in docs/cleanup.md are right: the lifespan code runs, and the cron line and
Kubernetes manifests call the purge command with options it accepts."""

from __future__ import annotations

import shlex
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import markdown
from typed_session_sql.cli import build_parser

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "cleanup.md"


def blocks(language: str) -> list[str]:
    return markdown.blocks(DOC.read_text(), language)


def accepts(args: list[str]) -> None:
    """The CLI parses ``args`` (argparse exits on anything it does not accept)."""
    parsed = build_parser().parse_args(args)
    assert parsed.handler.__name__ == "run_purge"


async def test_the_lifespan_example_starts_and_stops_the_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (code,) = [b for b in blocks("python") if "lifespan" in b]
    code = code.replace("postgresql+asyncpg://app@db/app", f"sqlite+aiosqlite:///{tmp_path}/s.db")
    module = types.ModuleType("docs_cleanup_lifespan")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, Any] = module.__dict__
    exec(code, namespace)
    async with namespace["lifespan"](namespace["app"]):
        pass  # the scheduler runs in the background here, and stops on leaving


def test_the_cron_line_calls_purge_with_valid_options() -> None:
    (cron,) = blocks("cron")
    (line,) = [line for line in cron.splitlines() if line and not line.startswith("#")]
    command = shlex.split(line)[5:]  # after the five schedule fields
    program = next(i for i, word in enumerate(command) if word.endswith("/typed-session-sql"))
    args = command[program + 1 : command.index(">>")]
    accepts(args)
    assert any(word.startswith("TYPED_SESSION_SQL_URL=") for word in command[:program])


def test_the_kubernetes_manifests_call_purge_with_valid_options() -> None:
    cronjob, sidecar = (yaml.safe_load(block) for block in blocks("yaml"))
    assert cronjob["kind"] == "CronJob"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"][0] == "typed-session-sql"
    accepts(container["command"][1:])
    assert container["env"][0]["name"] == "TYPED_SESSION_SQL_URL"
    purger = next(c for c in sidecar["containers"] if c["name"] == "session-purge")
    accepts(purger["command"][1:])
    assert "--every" in purger["command"]


def python_block(marker: str) -> str:
    (code,) = [b for b in blocks("python") if marker in b]
    return code


async def expired_store() -> Any:
    """A store with three sessions that expired an hour ago (by its own clock)."""
    from datetime import timedelta

    from tests.clock import FakeClock
    from typed_session_sql import ExpiryPolicy, MemoryBackend, SessionStore

    clock = FakeClock()
    store: Any = SessionStore(
        dict, MemoryBackend(), expiry=ExpiryPolicy(idle=timedelta(minutes=1)), clock=clock
    )
    for _ in range(3):
        session = store.new()
        session.data["n"] = 1
        await store.save(session)
    clock.advance(timedelta(hours=1))
    return store


async def test_a_pass_without_the_lock_runs_as_written() -> None:
    store = await expired_store()
    code = python_block("exclusive=False")
    namespace: dict[str, Any] = {"store": store}
    body = "\n".join(f"    {line}" for line in code.splitlines())
    exec(compile(f"async def _example():\n{body}\n    return result", str(DOC), "exec"), namespace)
    result = await namespace["_example"]()
    assert (result.removed, result.skipped) == (3, False)


async def test_the_logging_recipe_shows_each_pass(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from typed_session_sql import PurgeResult

    store = await expired_store()
    library = logging.getLogger("typed_session_sql")
    handlers, level = list(library.handlers), library.level
    namespace: dict[str, Any] = {"store": store}
    try:
        exec(compile(python_block("log_removals"), str(DOC), "exec"), namespace)
        assert library.level == logging.INFO
        assert len(library.handlers) == len(handlers) + 1
        with caplog.at_level(logging.INFO):
            await store.purge_expired()
            namespace["log_removals"](PurgeResult(removed=0, batches=1, seconds=0.1))
            namespace["log_removals"](PurgeResult(removed=3, batches=1, seconds=0.1))
    finally:
        library.handlers[:] = handlers
        library.setLevel(level)
    lines = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("typed_session_sql", "session purge_finished: 3 rows in 1 batch(es)") in [
        (name, message.rsplit(",", 1)[0]) for name, message in lines
    ]
    assert lines.count(("app", "purged 3 expired sessions")) == 1
    assert not any("purged 0" in message for _, message in lines)
    assert namespace["scheduler"].every.total_seconds() == 300
