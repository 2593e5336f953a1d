"""Which tests run: slow suites only when asked for, and what a missing server means.

A slow suite that starts servers of its own runs only when a run asks for it, by its marker
(``-m production``, ``-m galera``) or by naming its directory or a file in it. Otherwise its
tests are deselected, not skipped: a skip in the default run would read as something
missing on the machine.

A test whose server, tool or package is missing skips with the reason, unless
``TYPED_SESSION_SQL_REQUIRE_<WHAT>=1`` says the machine must have it (``.ci/run`` sets
them), where it fails instead.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.servers import SERVER_USER, which


def unavailable(reason: str, requirement: str) -> NoReturn:
    """Skip the calling test for ``reason``, or fail it where
    ``TYPED_SESSION_SQL_REQUIRE_<requirement>=1`` (read now, so a test can set it)."""
    variable = f"TYPED_SESSION_SQL_REQUIRE_{requirement}"
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason} and {variable}=1")
    pytest.skip(reason)


def require_tools(*names: str) -> None:
    """Skip (or, in CI, fail) a production test when a server binary or the postgres user
    is missing."""
    missing = [name for name in names if which(name) is None]
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        missing.append(f"the {SERVER_USER!r} user")
    if os.geteuid() != 0:
        missing.append("root (to run servers as the postgres user)")
    if not missing:
        return
    unavailable("missing: " + ", ".join(missing), "PRODUCTION")


def require_module(name: str) -> None:
    """Skip (or, in CI, fail) a production test when a Python package it needs is missing."""
    try:
        __import__(name)
    except ImportError:
        unavailable(
            f"the {name!r} package is missing (the nox production session installs it)",
            "PRODUCTION",
        )


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
