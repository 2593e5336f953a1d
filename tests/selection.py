"""Slow suites that start servers of their own run only when asked for.

A run asks for one by its marker (``-m production``, ``-m galera``) or by naming its
directory or a file in it. Otherwise its tests are deselected, not skipped: a skip in the
default run would read as something missing on the machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def asked_for(config: pytest.Config, marker: str, directory: Path | None = None) -> bool:
    """Whether this run asked for the marker's tests: by marker, or by path under directory."""
    if marker in (config.option.markexpr or ""):
        return True
    if directory is None:
        return False
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if path == directory or directory in path.parents:
            return True
    return False


def deselect_unless_asked(
    config: pytest.Config, items: list[pytest.Item], marker: str, directory: Path | None = None
) -> None:
    """Deselect every test carrying the marker unless the run asked for them."""
    if asked_for(config, marker, directory):
        return
    left_out = [item for item in items if item.get_closest_marker(marker) is not None]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item.get_closest_marker(marker) is None]
