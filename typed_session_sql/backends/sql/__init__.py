"""The SQL backend: sessions in one table, through SQLAlchemy's asyncio engine.

The public names are here; the package's modules each hold one part:
:mod:`.table` (the table and its timestamp type), :mod:`.engine` (the engine it makes),
:mod:`.statements` (the statements, built once), :mod:`.executor` (what runs them:
SQLAlchemy, or the driver itself), :mod:`.connections` (the connections a backend holds),
:mod:`.failures` (what a failure means), :mod:`.maintenance` (purge lock, table stats),
:mod:`.readiness` (can it serve now?) and :mod:`.backend` (the backend itself).
"""

from typed_session_sql.backends.sql.backend import SqlBackend
from typed_session_sql.backends.sql.connections import HeldConnections
from typed_session_sql.backends.sql.engine import create_engine
from typed_session_sql.backends.sql.table import DEFAULT_TABLE, EpochMicros, session_table

__all__ = [
    "DEFAULT_TABLE",
    "EpochMicros",
    "HeldConnections",
    "SqlBackend",
    "create_engine",
    "session_table",
]
