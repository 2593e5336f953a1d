"""What differs between the databases the SQL backend supports, one module per dialect.

Each module (`.postgresql`, `.mysql`, `.sqlite`) makes one `DialectSupport` value: the
statement spellings that differ (inserting past a taken id, the purge batch, binary values
sent as hex digits), the purge and migration locks' SQL, the table-size query, and what the
engine needs on connect. Everything else in the SQL wing asks that value and never names a
dialect: `dialect_for` finds it once, when a backend (or an engine, a migration) is made,
never per statement.

A branch on the *driver* (asyncpg or psycopg on PostgreSQL; asyncmy; aiosqlite) is not a
dialect's: the driver modules, `..executor` (which executor serves which driver),
`..engine` (what each driver is told not to name statements), `..lanes` (which driver's
connections serve any event loop) and `..failures` (an error's meaning, read from the
driver's exception) keep those.

Adding a database is one module here, one line in `SUPPORTED`, the table's type variants
where its types differ (`..table`), and a test target (CONTRIBUTING.md, "Adding a
database").
"""

from __future__ import annotations

from typed_session_sql.backends.sql.dialects import mysql, postgresql, sqlite
from typed_session_sql.backends.sql.dialects.support import (
    DialectSupport,
    MigrationLock,
    PurgeLock,
    UnsupportedDialectError,
)

__all__ = [
    "SUPPORTED",
    "DialectSupport",
    "MigrationLock",
    "PurgeLock",
    "UnsupportedDialectError",
    "dialect_for",
]

SUPPORTED: tuple[DialectSupport, ...] = (postgresql.SUPPORT, mysql.SUPPORT, sqlite.SUPPORT)
"""Every dialect the SQL backend supports: one line per dialect module."""

_BY_NAME = {name: support for support in SUPPORTED for name in support.sqlalchemy_names}


def dialect_for(name: str) -> DialectSupport:
    """The support for the SQLAlchemy dialect ``name`` (``engine.dialect.name``, or a URL's
    ``get_backend_name()``). Raises `UnsupportedDialectError` for any other."""
    support = _BY_NAME.get(name)
    if support is None:
        raise UnsupportedDialectError(
            f"the SQL backend does not support the {name!r} dialect; it supports "
            f"{', '.join(sorted(_BY_NAME))}"
        )
    return support
