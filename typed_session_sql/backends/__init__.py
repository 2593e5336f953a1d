"""Storage backends: each is a small module implementing
:class:`~typed_session_sql.backend.Backend`."""
