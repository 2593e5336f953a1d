"""How the production tests open a :class:`SqlBackend`: driver settings and executor.

A :class:`Settings` is what an application would write in its configuration: a driver and
the URL options it needs behind a given pooler. :func:`open_backend` runs it on the
executor the test asks for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from tests.support.names import unique_name
from typed_session_sql.backends.sql import SqlBackend

Execution = Literal["driver", "sqlalchemy"]


@dataclass(frozen=True)
class Settings:
    """A driver and its options, as an application's configuration would carry them."""

    name: str
    driver: Literal["asyncpg", "psycopg"] = "asyncpg"
    query: str = ""
    """Appended to the URL (``?key=value&...``)."""

    def url(self, base: str) -> str:
        """``base`` (a ``postgresql+asyncpg://`` URL) for this driver, with the query."""
        url = base.replace("postgresql+asyncpg://", f"postgresql+{self.driver}://", 1)
        if self.query:
            url += ("&" if "?" in url else "?") + self.query
        return url

    @property
    def executions(self) -> tuple[Execution, ...]:
        """The executors: each driver has its own, and SQLAlchemy's."""
        return ("driver", "sqlalchemy")


ASYNCPG_DEFAULT = Settings("asyncpg")
"""asyncpg as it comes: named prepared statements, cached per connection."""

ASYNCPG_UNNAMED = Settings("asyncpg-unnamed", query="prepared_statements=false")
"""asyncpg with the backend's documented setting: no statement cache (asyncpg's and
SQLAlchemy's), unnamed statements only. asyncpg then describes each statement before
binding it (Parse/Describe/Flush, then Parse/Bind/Execute/Sync): no Sync in between, so
PgBouncer keeps the same server connection for both halves, at two round trips."""

PSYCOPG_DEFAULT = Settings("psycopg", driver="psycopg")
"""psycopg 3 as it comes: it prepares a statement (named ``_pg3_N``) on its 5th run."""

PSYCOPG_UNNAMED = Settings("psycopg-unnamed", driver="psycopg", query="prepared_statements=false")
"""psycopg 3 with the backend's documented setting (``prepare_threshold=None``): never
prepares, Parse/Bind/Describe/Execute/Sync in one round trip."""

SETTINGS = {s.name: s for s in (ASYNCPG_DEFAULT, ASYNCPG_UNNAMED, PSYCOPG_DEFAULT, PSYCOPG_UNNAMED)}


def open_backend(
    url: str, execution: Execution, settings: Settings = ASYNCPG_DEFAULT, **options: Any
) -> SqlBackend:
    """``SqlBackend.from_url`` for ``settings`` on ``url``, run by ``execution``."""
    return SqlBackend.from_url(settings.url(url), execution=execution, **options)


@asynccontextmanager
async def fresh_backend(
    url: str, execution: Execution, settings: Settings = ASYNCPG_DEFAULT, **options: Any
) -> AsyncIterator[SqlBackend]:
    """A backend on a new, randomly named table, dropped afterwards."""
    options.setdefault("table_name", unique_name("sessions"))
    backend = open_backend(url, execution, settings, **options)
    try:
        await backend.create_schema()
        yield backend
    finally:
        try:
            async with backend.engine.begin() as conn:
                await conn.run_sync(backend.metadata.drop_all)
        finally:
            await backend.dispose()
