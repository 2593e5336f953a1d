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
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from typed_session_sql.backends.sql_engine import DEFAULT_URL, URL_ENV
from typed_session_sql.backends.sql_table import DEFAULT_TABLE
from typed_session_sql.errors import StoreUnavailableError

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


async def upgrade(
    engine: AsyncEngine, table: str, schema: str | None, revision: str = "head"
) -> None:
    """Upgrade ``table`` to ``revision`` with the packaged migrations, over ``engine``."""
    from alembic import command

    config = make_config(table=table, schema=schema)

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    # Migrations want a transaction (DDL is transactional on PostgreSQL); the backend's
    # statements run in autocommit, so this one connection switches back.
    isolation = "SERIALIZABLE" if engine.dialect.name == "sqlite" else "READ COMMITTED"
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level=isolation)
            await conn.run_sync(run)
            await conn.commit()
    except (SQLAlchemyError, OSError) as error:
        raise StoreUnavailableError(
            f"could not migrate the session table: {type(error).__name__}"
        ) from error
