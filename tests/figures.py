"""One line of figures per scenario: printed at once, and again in the run's closing
summary under a section of its own, so a CI log shows them without ``-s``.

A test directory's conftest gives its tests a ``report`` fixture from :func:`reporter` and
prints its section from ``pytest_terminal_summary`` with :func:`summarize`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

Report = Callable[[str], None]

_LINES: dict[str, list[str]] = {}


def reporter(section: str) -> Report:
    """A ``report`` callable for ``section``: print one line now, and in the summary."""

    def emit(line: str) -> None:
        print(f"\n[{section}] {line}", flush=True)
        _LINES.setdefault(section, []).append(line)

    return emit


def summarize(terminalreporter: pytest.TerminalReporter, section: str) -> None:
    """Print ``section``'s lines under "<section> figures", if it reported any."""
    lines = _LINES.get(section)
    if lines:
        terminalreporter.section(f"{section} figures")
        for line in lines:
            terminalreporter.write_line(line)
