"""What the Alembic environment needs: where the scripts are, and which URL, table and schema.

The settings come, first match wins, from ``-x key=value`` on the Alembic command line, from
``Config.attributes`` (set by ``typed-session-sql migrate`` and by tests), from the
environment (``TYPED_SESSION_SQL_URL``, ``TYPED_SESSION_SQL_TABLE``,
``TYPED_SESSION_SQL_SCHEMA``), else the defaults. An application that runs our revisions
from its own Alembic environment sets the environment variables, or nothing for the
defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config

from typed_session_sql.backends.sql_engine import DEFAULT_URL, URL_ENV
from typed_session_sql.backends.sql_table import DEFAULT_TABLE

# Our own version table, so our revisions never mix with an application's ``alembic_version``.
VERSION_TABLE = "typed_session_sql_alembic_version"
BRANCH_LABEL = "typed_session_sql"

_ENV = {"url": URL_ENV, "table": "TYPED_SESSION_SQL_TABLE", "schema": "TYPED_SESSION_SQL_SCHEMA"}
_ATTRIBUTE_PREFIX = "typed_session_sql."


@dataclass(frozen=True, slots=True)
class MigrationOptions:
    url: str
    table: str
    schema: str | None


def script_location() -> Path:
    """The migration scripts: shipped in the wheel, or the checkout's top-level directory."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the typed-session-sql migration scripts are not installed")


def make_config(
    url: str | None = None, table: str | None = None, schema: str | None = None
) -> Config:
    """An Alembic config for our scripts; None leaves a setting to ``-x``/env/defaults."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    for key, value in (("url", url), ("table", table), ("schema", schema)):
        if value is not None:
            config.attributes[_ATTRIBUTE_PREFIX + key] = value
    return config


def options(config: Config, x_arguments: dict[str, str]) -> MigrationOptions:
    """Resolve the settings for one Alembic run (called from ``env.py``)."""

    def setting(key: str) -> str | None:
        value = x_arguments.get(key) or config.attributes.get(_ATTRIBUTE_PREFIX + key)
        return value or os.environ.get(_ENV[key]) or None

    ini_url = config.get_main_option("sqlalchemy.url")
    return MigrationOptions(
        url=setting("url") or ini_url or DEFAULT_URL,
        table=setting("table") or DEFAULT_TABLE,
        schema=setting("schema"),
    )
