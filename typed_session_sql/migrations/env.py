"""Alembic environment for the typed-session-sql table (async engines, run through run_sync).

Settings: ``-x url=... -x table=... -x schema=...``, or TYPED_SESSION_SQL_URL /
TYPED_SESSION_SQL_TABLE / TYPED_SESSION_SQL_SCHEMA. The table definition (the autogenerate
target) is the backend's own: `typed_session_sql.backends.sql.table.session_table`.
Each session table has its own version table (`
version_table`), and every online run holds the migration lock
(`serialised`).
"""

from __future__ import annotations

import asyncio

from alembic import context
from alembic.util import CommandError
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection

from typed_session_sql.backends.sql.engine import create_engine
from typed_session_sql.backends.sql.migrate import serialised, version_table
from typed_session_sql.backends.sql.settings import options
from typed_session_sql.backends.sql.table import session_table
from typed_session_sql.urls import async_url

settings = options(context.config, context.get_x_argument(as_dictionary=True))
target_metadata = MetaData()
session_table(target_metadata, settings.table, settings.schema)

_CONFIGURE = {
    "target_metadata": target_metadata,
    "version_table": version_table(settings.table),
    "version_table_schema": settings.schema,
    "compare_type": True,
}


def _url() -> str:
    if settings.url is None:  # never a default database: a lost variable must not "succeed"
        raise CommandError(
            "no database given: pass -x url=..., set $TYPED_SESSION_SQL_URL or sqlalchemy.url"
        )
    return settings.url


def run_offline() -> None:
    context.configure(url=async_url(_url()), literal_binds=True, **_CONFIGURE)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    # The caller holds the lock in a transaction of its own, which Alembic leaves alone.
    context.configure(connection=connection, **_CONFIGURE)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        await serialised(engine, settings.table, settings.schema, _run)
    finally:
        await engine.dispose()


shared = context.config.attributes.get("connection")
if context.is_offline_mode():
    run_offline()
elif isinstance(shared, Connection):
    _run(shared)  # migrate.upgrade()/downgrade(): lock held, in a greenlet
else:
    asyncio.run(run_online())  # plain `alembic -c alembic.ini ...` from a checkout
