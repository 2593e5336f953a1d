"""Where other modules imported the table's names from before the SQL backend became a
package; :mod:`typed_session_sql.backends.sql.table` is their home. To retire once nothing
imports it."""

from typed_session_sql.backends.sql.table import DEFAULT_TABLE, EpochMicros, session_table

__all__ = ["DEFAULT_TABLE", "EpochMicros", "session_table"]
