"""The SQL backend: sessions in one table, through SQLAlchemy's asyncio engine.

The public names are here; the package's modules each hold one part:
`.table` (the table and its timestamp type), `.dialects` (what differs between
PostgreSQL, MySQL and SQLite: one module each), `.engine` (the engine it makes),
`.statements` (the statements, built once), `.executor` (what runs them:
SQLAlchemy, or the driver itself), `.connections` (the connections a backend holds,
shared in turn by `.fair_slots`), `.failures` (what a failure means), `.locks` (the
purge and migration locks), `.settings` (which database, table and schema), `.migrate`
(the migration runner), `.maintenance` (table stats), `.readiness` (can it serve now?)
and `.backend` (the backend itself).
"""

from typed_session_sql.backends.sql.backend import SqlBackend
from typed_session_sql.backends.sql.connections import HeldConnections
from typed_session_sql.backends.sql.dialects import UnsupportedDialectError
from typed_session_sql.backends.sql.engine import create_engine
from typed_session_sql.backends.sql.table import DEFAULT_TABLE, EpochMicros, session_table

__all__ = [
    "DEFAULT_TABLE",
    "EpochMicros",
    "HeldConnections",
    "SqlBackend",
    "UnsupportedDialectError",
    "create_engine",
    "session_table",
]
