"""Readiness: can this backend serve sessions now? For Kubernetes readiness probes and
deployment checks (``typed-session-sql ready``).

Cheap by design: one connection from the pool, a catalogue look-up for the table and one
read of its Alembic version record; the revision history comes from the packaged scripts
once per process. No row of the session table is read.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio
from sqlalchemy import inspect

from typed_session_sql.backends.sql import migrate
from typed_session_sql.errors import describe_error

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Readiness", "ReadinessStatus", "check_ready"]


class ReadinessStatus(enum.Enum):
    READY = "ready"
    UNREACHABLE = "unreachable"
    """The database did not answer (in time), or refused the connection."""
    TABLE_MISSING = "table_missing"
    """The session table does not exist: run ``typed-session-sql migrate upgrade head``."""
    WRONG_REVISION = "wrong_revision"
    """The table exists but its version record is not at (or past) the expected revision:
    none (a table ``create_schema`` made), an older one, or one these scripts do not know."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer of `check_ready`; ``detail`` is one line, never with a password."""

    status: ReadinessStatus
    detail: str
    recorded: tuple[str, ...] = ()
    """The revisions the table's version record holds."""

    @property
    def ready(self) -> bool:
        return self.status is ReadinessStatus.READY


class _Checked(Protocol):
    """What is checked of a ``SqlBackend``: a protocol, since backend.py imports this module
    (``SqlBackend.check_ready``) and the package has no import cycle."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def table(self) -> Table: ...


async def check_ready(
    backend: _Checked, *, revision: str | None = "head", within: float = 5.0
) -> Readiness:
    """Whether ``backend`` can serve: its database answers within ``within`` seconds and
    its table exists, with a version record at ``revision`` or a later one (``"head"``: the
    newest these scripts have; None: any, or none, as for a table ``create_schema`` made).

    Never raises for an outage or a missing table: the status says which.
    """
    table, schema = backend.table.name, backend.table.schema
    try:
        with anyio.fail_after(within):
            async with backend.engine.connect() as conn:
                exists = await conn.run_sync(_has_table, table, schema)
            if not exists:
                return Readiness(
                    ReadinessStatus.TABLE_MISSING,
                    f"the session table {backend.table.fullname} does not exist",
                )
            if revision is None:
                return Readiness(ReadinessStatus.READY, f"{backend.table.fullname} exists")
            recorded = await migrate.current(backend.engine, table, schema)
    except TimeoutError:
        return Readiness(
            ReadinessStatus.UNREACHABLE, f"the database did not answer within {within:g} s"
        )
    except Exception as error:  # any failure to reach it is an answer, not a crash
        return Readiness(
            ReadinessStatus.UNREACHABLE, f"the database cannot be reached: {describe_error(error)}"
        )
    expected = _head() if revision == "head" else revision
    name = backend.table.fullname
    if not recorded:
        detail = f"{name} has no migration record (made by create_schema?); expected {expected}"
        return Readiness(ReadinessStatus.WRONG_REVISION, detail)
    if not all(expected in _ancestry(head) for head in recorded):
        found = ", ".join(recorded)
        return Readiness(
            ReadinessStatus.WRONG_REVISION,
            f"{name} is at revision {found}, not at or past {expected}",
            recorded,
        )
    return Readiness(ReadinessStatus.READY, f"{name} at revision {', '.join(recorded)}", recorded)


@functools.cache
def _head() -> str | None:
    return migrate.head()  # reads the scripts: once per process, not per probe


def _has_table(conn: Connection, table: str, schema: str | None) -> bool:
    return inspect(conn).has_table(table, schema=schema)


@functools.cache
def _ancestry(revision: str) -> frozenset[str]:
    """``revision`` and every revision before it in the packaged scripts; empty if they do
    not know it (a newer release migrated the table: this one cannot vouch for it)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(migrate.script_location()))
    try:
        return frozenset(
            step.revision for step in scripts.iterate_revisions(revision, "base") if step
        )
    except Exception:  # an unknown revision: alembic raises one of several errors
        return frozenset()
