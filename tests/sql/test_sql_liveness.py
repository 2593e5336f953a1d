"""Connection liveness is the driver module's answer, for both executors: under SQLAlchemy's
execution too, a pooled connection the server closed while idle is replaced at checkout,
at no round trip, by asking the same `Driver.is_closed` the driver executor asks.

On MariaDB this is what the old duck-typed check missed: asyncmy's connection has neither
``is_closed()`` nor ``closed``, so the killed connection was handed out and its first
statement failed with error 2006.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from tests.mariadb.server import require_mariadb
from tests.sql.test_sql_mysql import admin
from typed_session_sql.backends.sql.engine import create_engine
from typed_session_sql.backends.sql.sqlalchemy_executor import SqlAlchemyExecutor

pytestmark = [pytest.mark.anyio, pytest.mark.mariadb]


async def test_sqlalchemy_execution_replaces_a_killed_mysql_connection_at_checkout() -> None:
    engine = create_engine(require_mariadb(), pool_size=1, max_overflow=0)
    try:
        SqlAlchemyExecutor(engine)  # installs the pool's checkout listener
        SqlAlchemyExecutor(engine)  # a second executor on the engine adds none
        async with engine.connect() as conn:
            killed = (await conn.get_raw_connection()).driver_connection
            assert killed is not None
            (thread,) = (await conn.execute(text("SELECT CONNECTION_ID()"))).one()
        await admin(f"KILL CONNECTION {thread}")
        while True:  # until the client has read the close (a state, polled)
            if killed._stream_broken:
                break
            await asyncio.sleep(0.01)
        async with engine.connect() as conn:
            assert (await conn.get_raw_connection()).driver_connection is not killed
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()
