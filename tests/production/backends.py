"""How the production tests open a :class:`SqlBackend`: driver settings and executor.

A :class:`Settings` is what an application would write in its configuration: a driver and
the options it needs behind a given pooler. :func:`open_backend` picks the executor the
test asks for: with ``execution=`` where :class:`SqlBackend` takes it, and until then by
attaching a cursor listener, which sends every statement through SQLAlchemy.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import event

from typed_session_sql.backends.sql import SqlBackend

Execution = Literal["driver", "sqlalchemy"]


@dataclass(frozen=True)
class Settings:
    """A driver and its options, as an application's configuration would carry them."""

    name: str
    driver: Literal["asyncpg", "psycopg"] = "asyncpg"
    query: str = ""
    """Appended to the URL (``?key=value&...``)."""
    connect_args: dict[str, Any] = field(default_factory=dict)

    def url(self, base: str) -> str:
        """``base`` (a ``postgresql+asyncpg://`` URL) for this driver, with the query."""
        url = base.replace("postgresql+asyncpg://", f"postgresql+{self.driver}://", 1)
        if self.query:
            url += ("&" if "?" in url else "?") + self.query
        return url

    @property
    def executions(self) -> tuple[Execution, ...]:
        """The executors this driver has: psycopg only ever runs through SQLAlchemy."""
        return ("driver", "sqlalchemy") if self.driver == "asyncpg" else ("sqlalchemy",)


ASYNCPG_DEFAULT = Settings("asyncpg")
"""asyncpg as it comes: named prepared statements, cached per connection."""

ASYNCPG_UNNAMED = Settings(
    "asyncpg-unnamed",
    query="prepared_statement_cache_size=0",
    connect_args={"statement_cache_size": 0},
)
"""asyncpg with no statement cache (asyncpg's and SQLAlchemy's): unnamed statements only.
asyncpg then describes each statement before binding it (Parse/Describe/Flush, then
Parse/Bind/Execute/Sync): no Sync in between, so PgBouncer keeps the same server
connection for both halves, at two round trips per statement."""

PSYCOPG_UNPREPARED = Settings(
    "psycopg-unprepared", driver="psycopg", connect_args={"prepare_threshold": None}
)
"""psycopg 3 that never prepares: Parse/Bind/Describe/Execute/Sync in one round trip."""


def unique_name(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def _observe(*args: object) -> None:
    """A cursor listener that does nothing: its presence sends statements via SQLAlchemy."""


def open_backend(
    url: str, execution: Execution, settings: Settings = ASYNCPG_DEFAULT, **options: Any
) -> SqlBackend:
    """``SqlBackend.from_url`` for ``settings`` on ``url``, run by ``execution``."""
    connect_args = {**settings.connect_args, **options.pop("connect_args", {})}
    if connect_args:
        options["connect_args"] = connect_args
    if "execution" in inspect.signature(SqlBackend.from_url).parameters:
        options["execution"] = execution
        return SqlBackend.from_url(settings.url(url), **options)
    backend = SqlBackend.from_url(settings.url(url), **options)
    if execution == "sqlalchemy":
        event.listen(backend.engine.sync_engine, "before_cursor_execute", _observe)
    return backend


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
