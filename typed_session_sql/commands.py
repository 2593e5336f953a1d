"""The old name of `typed_session_sql.cookie_commands` ("commands" read as the CLI's): each
name still imports from here, with a DeprecationWarning naming the new module."""

from __future__ import annotations

import warnings

from typed_session_sql import cookie_commands


def __getattr__(name: str) -> object:
    if name.startswith("_") or not hasattr(cookie_commands, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    found = getattr(cookie_commands, name)
    warnings.warn(
        f"typed_session_sql.commands is now typed_session_sql.cookie_commands: import {name}"
        " from there",
        DeprecationWarning,
        stacklevel=2,
    )
    return found
