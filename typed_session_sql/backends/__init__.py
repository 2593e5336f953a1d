"""Storage backends. Each one is a small module that implements :class:`~typed_session_sql.backend.Backend`."""
