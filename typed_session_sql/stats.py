"""What a session table holds: live and expired rows, the oldest expiry, its size.

Table statistics are a capability a backend may offer (:class:`ReportsStats`):
:meth:`SqlBackend.stats <typed_session_sql.backends.sql.SqlBackend.stats>` counts its
table, :meth:`MemoryBackend.stats <typed_session_sql.MemoryBackend.stats>` its dict. They
back ``typed-session-sql stats``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = ["ReportsStats", "TableStats"]


@dataclass(frozen=True, slots=True)
class TableStats:
    """What a session table holds, as of one moment."""

    live: int
    """Rows not expired at that moment, never-expiring ones included."""
    never_expire: int
    expired: int
    """Rows a purge would remove."""
    oldest_expiry: datetime | None
    """The earliest expiry in the table (None if no row expires); in the past, it says how
    far behind cleanup is."""
    size_bytes: int | None
    """The table's size on disk, where the database can tell; see ``size_of``."""
    size_of: str


@runtime_checkable
class ReportsStats(Protocol):
    """A backend that can say what it holds."""

    async def stats(self, now: datetime) -> TableStats:
        """The backend's rows as of ``now``."""
        ...
