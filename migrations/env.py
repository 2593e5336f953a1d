"""Alembic environment for the typed-session-sql table (async engines, run through run_sync).

Settings: ``-x url=... -x table=... -x schema=...``, or TYPED_SESSION_SQL_URL /
TYPED_SESSION_SQL_TABLE / TYPED_SESSION_SQL_SCHEMA. The table definition (the autogenerate
target) is the backend's own: :func:`typed_session_sql.backends.sql_table.session_table`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from typed_session_sql.alembic_support import VERSION_TABLE, options
from typed_session_sql.backends.sql_table import session_table

settings = options(context.config, context.get_x_argument(as_dictionary=True))
target_metadata = MetaData()
session_table(target_metadata, settings.table, settings.schema)

_CONFIGURE = {
    "target_metadata": target_metadata,
    "version_table": VERSION_TABLE,
    "version_table_schema": settings.schema,
    "compare_type": True,
}


def run_offline() -> None:
    context.configure(url=settings.url, literal_binds=True, **_CONFIGURE)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_CONFIGURE)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = create_async_engine(settings.url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


shared = context.config.attributes.get("connection")
if context.is_offline_mode():
    run_offline()
elif isinstance(shared, Connection):
    _run(shared)  # SqlBackend.migrate(): the backend's own engine, already in a greenlet
else:
    asyncio.run(run_online())
