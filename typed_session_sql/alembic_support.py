"""Alembic for the session table, as an application's own ``env.py`` and revisions use it:
the hooks that keep the session tables out of autogenerate (`exclude_session_tables`,
`include_name`, `render_item`), and, under the names apps already import, the settings
(`.backends.sql.settings`) and the migration runner (`.backends.sql.migrate`, which
documents the version records and the lock).

Settings come, first match wins, from ``-x key=value`` on the Alembic command line, from
``Config.attributes`` (set by `make_config`), from the environment
(``TYPED_SESSION_SQL_URL``, ``TYPED_SESSION_SQL_TABLE``, ``TYPED_SESSION_SQL_SCHEMA``), else
the defaults; the URL has none (``sqlalchemy.url`` in the ini file also names one): a
migration never picks a database nobody named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from typed_session_sql.backends.sql.migrate import (
    BRANCH_LABEL,
    LEGACY_VERSION_TABLE,
    Transition,
    current,
    downgrade,
    head,
    make_config,
    refuse_a_table_recorded_elsewhere,
    script_location,
    serialised,
    upgrade,
    version_table,
)
from typed_session_sql.backends.sql.settings import (
    SCHEMA_ENV,
    TABLE_ENV,
    URL_ENV,
    MigrationOptions,
    options,
    resolve,
)
from typed_session_sql.backends.sql.table import EpochMicros, Utf8Bytes

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext

__all__ = [
    "BRANCH_LABEL",
    "LEGACY_VERSION_TABLE",
    "SCHEMA_ENV",
    "TABLE_ENV",
    "URL_ENV",
    "MigrationOptions",
    "Transition",
    "current",
    "downgrade",
    "exclude_session_tables",
    "head",
    "include_name",
    "make_config",
    "options",
    "refuse_a_table_recorded_elsewhere",
    "render_item",
    "script_location",
    "serialised",
    "upgrade",
    "version_table",
]

# -- for an application's own env.py ------------------------------------------------------

IncludeName = Callable[[str | None, str, Mapping[str, str | None]], bool]


def exclude_session_tables(*tables: str) -> IncludeName:
    """An ``include_name`` hook for ``context.configure(...)`` that hides ``tables`` (the
    session tables; default: ``$TYPED_SESSION_SQL_TABLE`` or ``typed_sessions``), their
    version tables and the pre-0.2 shared one from autogenerate, so it never writes a
    ``drop_table`` for them. Everything else is included."""

    def include(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
        if type_ != "table" or name is None:
            return True
        names = tables or (resolve().table,)
        hidden = {LEGACY_VERSION_TABLE, *names, *(version_table(t) for t in names)}
        return name not in hidden

    return include


include_name: IncludeName = exclude_session_tables()
"""``include_name`` for the default table (or ``$TYPED_SESSION_SQL_TABLE``)."""


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """A ``render_item`` hook: writes our timestamp type as ``sa.BigInteger()`` and our
    MySQL principal type as ``sa.VARBINARY(...)`` (the columns they are), so a generated
    revision needs no import of this package."""
    if type_ == "type" and isinstance(obj, EpochMicros):
        return "sa.BigInteger()"
    if type_ == "type" and isinstance(obj, Utf8Bytes):
        return f"sa.VARBINARY(length={obj.impl.length})"
    return False
