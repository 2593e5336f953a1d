"""Where other modules imported the engine's names from before the SQL backend became a
package; :mod:`typed_session_sql.backends.sql.engine` is their home. To retire once
nothing imports it."""

from typed_session_sql.backends.sql.engine import DEFAULT_URL, URL_ENV, create_engine

__all__ = ["DEFAULT_URL", "URL_ENV", "create_engine"]
