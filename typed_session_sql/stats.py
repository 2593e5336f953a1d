"""What a session table holds: live and expired rows, the oldest expiry, its size.

Kept so that existing imports work: `TableStats` and `ReportsStats` live in
`typed_session_sql.backend` with the rest of what a backend must and may do.
"""

from __future__ import annotations

from typed_session_sql.backend import ReportsStats, TableStats

__all__ = ["ReportsStats", "TableStats"]
