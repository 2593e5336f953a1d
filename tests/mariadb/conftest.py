"""Fixtures for MariaDB: the shared server (marker ``mariadb``) and a Galera cluster of the
tests' own (marker ``galera``).

Galera tests start three servers (about 10-20 s), so they run only when selected:
``pytest -m galera`` (``.ci/run`` does). Otherwise they are deselected, not skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.figures import Report, reporter, summarize
from tests.mariadb.galera import GaleraCluster, galera_available, galera_cluster
from tests.mariadb.server import require_mariadb, scratch_table
from tests.selection import deselect_unless_asked


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # By marker only: tests/mariadb also holds the shared server's tests, which always run.
    deselect_unless_asked(config, items, "galera")


@pytest.fixture
def mariadb_url() -> str:
    """The shared server's URL (skips, or fails in CI, without one)."""
    return require_mariadb()


@pytest.fixture
async def mariadb_table(mariadb_url: str) -> AsyncIterator[str]:
    """A table name of this test's own on the shared server, dropped afterwards."""
    async with scratch_table(mariadb_url) as name:
        yield name


@pytest.fixture(scope="module")
def galera() -> Iterator[GaleraCluster]:
    """A 3-node Galera cluster for the module's tests; a test that kills a node restarts it
    (``cluster.restart(n)``) so the next test finds three."""
    missing = galera_available()
    if missing is not None:
        pytest.fail(f"cannot start a Galera cluster: {missing}")
    with galera_cluster(3) as cluster:
        yield cluster


@pytest.fixture
def report() -> Report:
    """Print one line of figures now, and again in the run's closing summary."""
    return reporter("galera")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    summarize(terminalreporter, "galera")
