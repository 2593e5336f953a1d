"""Which database, table and schema the SQL wing works on, decided in one place
(`resolve`): what the caller was given, then the environment, then a default. Every
caller asks it: `SqlBackend.from_url`, the CLI, our Alembic ``env.py`` and revisions
(`options`: ``-x key=value``, then ``Config.attributes`` as `make_config` sets them, then
the environment, then ``sqlalchemy.url`` for the URL; never a default database) and
`typed_session_sql.alembic_support.exclude_session_tables`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from typed_session_sql.backends.sql.table import DEFAULT_TABLE

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "ATTRIBUTE_PREFIX",
    "SCHEMA_ENV",
    "TABLE_ENV",
    "URL_ENV",
    "DatabaseSettings",
    "MigrationOptions",
    "options",
    "resolve",
]

URL_ENV = "TYPED_SESSION_SQL_URL"
TABLE_ENV = "TYPED_SESSION_SQL_TABLE"
SCHEMA_ENV = "TYPED_SESSION_SQL_SCHEMA"
ATTRIBUTE_PREFIX = "typed_session_sql."
"""Where `make_config` leaves a setting in an Alembic ``Config.attributes``."""


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """The database, table and schema one caller works on, and where the URL came from."""

    url: str | None
    """None if nothing names a database and the caller has no default one."""
    table: str
    schema: str | None
    url_from: str | None
    """Where ``url`` came from: the caller's name for what it was given (``--url``),
    ``$TYPED_SESSION_SQL_URL``, or the caller's name for its default; None without a
    URL."""


def resolve(
    url: str | None = None,
    table: str | None = None,
    schema: str | None = None,
    *,
    given_as: str = "url",
    default_url: str | None = None,
    default_url_as: str = "default",
) -> DatabaseSettings:
    """Each setting as given (None or empty: not given), else from its environment
    variable (unset, empty or blank: not there), else its default: ``default_url`` (none
    unless the caller has one), `DEFAULT_TABLE`, no schema."""

    def environment(name: str) -> str | None:
        value = os.environ.get(name, "")
        return value if value.strip() else None

    env_url = environment(URL_ENV)
    if url:
        found: tuple[str | None, str | None] = url, given_as
    elif env_url is not None:
        found = env_url, f"${URL_ENV}"
    elif default_url:
        found = default_url, default_url_as
    else:
        found = None, None
    return DatabaseSettings(
        url=found[0],
        table=table or environment(TABLE_ENV) or DEFAULT_TABLE,
        schema=schema or environment(SCHEMA_ENV),
        url_from=found[1],
    )


# The name until issue 18 gave every caller `resolve`: what an Alembic run resolves.
MigrationOptions = DatabaseSettings


def options(config: Config, x_arguments: Mapping[str, str]) -> DatabaseSettings:
    """Resolve the settings for one Alembic run (called from ``env.py`` and revisions):
    given as ``-x key=value`` or in ``Config.attributes``; the URL's default is the
    ini file's ``sqlalchemy.url``."""

    def given(key: str) -> str | None:
        value = x_arguments.get(key) or config.attributes.get(ATTRIBUTE_PREFIX + key)
        return str(value) if value else None

    return resolve(
        given("url"),
        given("table"),
        given("schema"),
        given_as="-x url",
        default_url=config.get_main_option("sqlalchemy.url"),
        default_url_as="sqlalchemy.url",
    )
