"""Which database, table and schema the SQL wing works on: the environment's names for
them, and how one Alembic run resolves them (``-x key=value``, then ``Config.attributes``
as `make_config` sets them, then the environment, then ``sqlalchemy.url`` for the URL and
the default table; never a default database).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from typed_session_sql.backends.sql.table import DEFAULT_TABLE

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["ATTRIBUTE_PREFIX", "SCHEMA_ENV", "TABLE_ENV", "URL_ENV", "MigrationOptions", "options"]

URL_ENV = "TYPED_SESSION_SQL_URL"
TABLE_ENV = "TYPED_SESSION_SQL_TABLE"
SCHEMA_ENV = "TYPED_SESSION_SQL_SCHEMA"
ATTRIBUTE_PREFIX = "typed_session_sql."
"""Where `make_config` leaves a setting in an Alembic ``Config.attributes``."""

_ENV = {"url": URL_ENV, "table": TABLE_ENV, "schema": SCHEMA_ENV}


@dataclass(frozen=True, slots=True)
class MigrationOptions:
    url: str | None
    """None if nothing names a database: there is no default one to migrate by mistake."""
    table: str
    schema: str | None


def options(config: Config, x_arguments: Mapping[str, str]) -> MigrationOptions:
    """Resolve the settings for one Alembic run (called from ``env.py`` and revisions)."""

    def setting(key: str) -> str | None:
        value = x_arguments.get(key) or config.attributes.get(ATTRIBUTE_PREFIX + key)
        return value or os.environ.get(_ENV[key]) or None

    ini_url = config.get_main_option("sqlalchemy.url")
    return MigrationOptions(
        url=setting("url") or ini_url or None,
        table=setting("table") or DEFAULT_TABLE,
        schema=setting("schema"),
    )
