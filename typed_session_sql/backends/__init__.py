"""Storage backends, each implementing :class:`~typed_session_sql.backend.Backend`:
:mod:`.memory` for development and tests, :mod:`.sql` for everything else."""
