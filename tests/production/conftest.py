"""PostgreSQL as production runs it: PgBouncer, a standby that takes over, restarts, limits.

Every test module here carries the ``production`` marker. The tests start servers of their own and
run for tens of seconds, so the default run leaves them out (deselected, not skipped):
they run with ``-m production`` (``.ci/run`` does) or when this directory is named on the
command line. Each scenario prints its figures on one line; the lines are repeated at the
end of the run under "production figures", so a CI log shows them without ``-s``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.figures import Report as Report  # the scenarios import it from here
from tests.figures import reporter, summarize
from tests.selection import deselect_unless_asked

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselect_unless_asked(config, items, "production", HERE)


@pytest.fixture
def report() -> Report:
    """Print one line of figures now, and again in the run's closing summary."""
    return reporter("production")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    summarize(terminalreporter, "production")
