"""PostgreSQL as production runs it: PgBouncer, a standby that takes over, restarts, limits.

Every test module here carries the ``production`` marker. The tests start servers of their own and
run for tens of seconds, so the default run leaves them out (deselected, not skipped):
they run with ``-m production`` (``.ci/run`` does) or when this directory is named on the
command line. Each scenario prints its figures on one line; the lines are repeated at the
end of the run under "production figures", so a CI log shows them without ``-s``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).parent
_FIGURES: list[str] = []

Report = Callable[[str], None]


def _asked_for(config: pytest.Config) -> bool:
    """Whether this run asked for the production tests: by marker, or by path."""
    if "production" in (config.option.markexpr or ""):
        return True
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _asked_for(config):
        return
    kept = [item for item in items if item.get_closest_marker("production") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(
            items=[item for item in items if item.get_closest_marker("production")]
        )
        items[:] = kept


@pytest.fixture
def report() -> Report:
    """Print one line of figures now, and again in the run's closing summary."""

    def emit(line: str) -> None:
        print(f"\n[production] {line}", flush=True)
        _FIGURES.append(line)

    return emit


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("production figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
