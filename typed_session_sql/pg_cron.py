"""The purge run inside PostgreSQL by ``pg_cron``: no application process involved.

`install_pg_cron_purge` creates a procedure next to the session table that runs the
same pass as `purge_pass` (one cutoff for the pass, batches
of at most ``batch_size`` rows each deleted with ``FOR UPDATE SKIP LOCKED`` and committed on
its own, the pass ending with the first short batch), and schedules it with
``cron.schedule``; `remove_pg_cron_purge` undoes both. `pg_cron_purge_script`
gives the same SQL as text, for a DBA to review and run by hand.

The procedure takes the purge lock the application's purgers take (the same advisory-lock
key, derived from the table's name), so an in-database pass and an application pass never
run at once: whichever comes second skips its pass. The application holds it as a
transaction-level lock; the procedure commits between batches, so it holds it as a
session-level lock, released at the end of the pass or, should the pass fail, when the
session ends (pg_cron opens one for each run).

Every name goes into the SQL quoted as an identifier, every value as a literal, and the
procedure's body in a dollar quote that the table's name cannot close: a table name cannot
inject SQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from blake3 import blake3
from sqlalchemy import Table, TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from typed_session_sql.backends.sql.backend import SqlBackend
from typed_session_sql.backends.sql.locks import lock_key

__all__ = [
    "DEFAULT_SCHEDULE",
    "PgCronPurge",
    "install_pg_cron_purge",
    "pg_cron_purge",
    "pg_cron_purge_script",
    "remove_pg_cron_purge",
]

DEFAULT_SCHEDULE = "*/5 * * * *"
"""Every five minutes: a steady-state pass deletes what expired since the last one."""

_MAX_BATCH_SIZE = 1_000_000  # as the CLI's --batch-size
_MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names (NAMEDATALEN - 1 bytes)

# The pass, as purge_pass runs it. The cutoff is the database's clock at the start of the
# pass (clock_timestamp: now() would be the start of the transaction, which moves at each
# COMMIT), in the table's microseconds since 1970. A session-level lock because it must
# survive the COMMITs; pg_try_*: a purger that cannot take it skips its pass at once.
_BODY = """
DECLARE
    cutoff bigint := CAST(floor(extract(epoch FROM clock_timestamp()) * 1000000) AS bigint);
    removed bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > {max_batch} THEN
        RAISE EXCEPTION 'batch_size must be between 1 and {max_batch}';
    END IF;
    IF NOT pg_try_advisory_lock({key}) THEN
        RAISE NOTICE 'purge pass skipped: another purger holds the purge lock';
        RETURN;
    END IF;
    LOOP
        DELETE FROM {table} WHERE id_hash IN (
            SELECT id_hash FROM {table} WHERE expires_at <= cutoff
            LIMIT batch_size FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS removed = ROW_COUNT;
        COMMIT;
        EXIT WHEN removed < batch_size;
    END LOOP;
    PERFORM pg_advisory_unlock({key});
END
"""


@dataclass(frozen=True, slots=True)
class PgCronPurge:
    """The SQL that installs and removes the in-database purge of one table."""

    job_name: str
    """The pg_cron job's name (``cron.job.jobname``): ``typed_session_sql purge <table>``,
    or a digest of the table's name where that would be over 63 bytes. Scheduling a job of
    the same name again replaces it."""
    procedure: str
    """The procedure's quoted, schema-qualified name."""
    create: str
    """``CREATE OR REPLACE PROCEDURE ...``."""
    schedule: str
    """``SELECT cron.schedule(...)``, which adds the job or replaces its schedule."""
    unschedule: str
    """``SELECT cron.unschedule(...)`` of the job, where there is one."""
    drop: str
    """``DROP PROCEDURE IF EXISTS ...``."""


def _literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings, on since 9.1)."""
    return "'" + value.replace("'", "''") + "'"


def _dollar_quote(body: str) -> str:
    """``body`` in a dollar quote whose tag it does not contain (a quoted table name may
    contain ``$purge$``, which would otherwise end the quote and run the rest as SQL)."""
    tag, n = "$purge$", 0
    while tag in body:
        n += 1
        tag = f"$purge{n}$"
    return f"{tag}{body}{tag}"


def pg_cron_purge(
    table: Table, *, schedule: str = DEFAULT_SCHEDULE, batch_size: int = 1000
) -> PgCronPurge:
    """The SQL for purging ``table`` with pg_cron every ``schedule`` (cron syntax, as
    ``cron.schedule`` takes it), ``batch_size`` rows a batch.

    Raises `ValueError` for a ``batch_size`` outside 1-1,000,000, a table name too
    long to name its procedure (``<table>_purge`` must fit in 63 bytes), or a table or
    schema name with control characters (a line break in it would end a comment of
    `pg_cron_purge_script`).
    """
    if not 1 <= batch_size <= _MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {_MAX_BATCH_SIZE:,}")
    if not str(table.fullname).isprintable():
        # A line break would end the script's "--" comments and run what follows.
        raise ValueError("a table or schema name with control characters cannot be scheduled")
    name = f"{table.name}_purge"
    if len(name.encode()) > _MAX_IDENTIFIER:
        raise ValueError(f"table name too long for a procedure name: {name!r} over 63 bytes")
    quote = _quote_identifier
    procedure = (quote(table.schema) + "." if table.schema else "") + quote(name)
    target = (quote(table.schema) + "." if table.schema else "") + quote(table.name)
    body = _BODY.format(key=lock_key(str(table.fullname)), table=target, max_batch=_MAX_BATCH_SIZE)
    job = f"typed_session_sql purge {table.fullname}"
    if len(job.encode()) > _MAX_IDENTIFIER:  # cron.job.jobname is a name: cut, not refused
        job = f"typed_session_sql purge {blake3(str(table.fullname).encode()).hexdigest(8)}"
    return PgCronPurge(
        job_name=job,
        procedure=procedure,
        create=(
            f"CREATE OR REPLACE PROCEDURE {procedure}(batch_size integer DEFAULT 1000)\n"
            f"LANGUAGE plpgsql AS {_dollar_quote(body)}"
        ),
        schedule=(
            f"SELECT cron.schedule({_literal(job)}, {_literal(schedule)},"
            f" {_literal(f'CALL {procedure}({batch_size})')})"
        ),
        unschedule=(
            "SELECT cron.unschedule(jobid) FROM cron.job"  # noqa: S608 (a literal, quoted)
            f" WHERE jobname = {_literal(job)} AND username = current_user"
        ),
        drop=f"DROP PROCEDURE IF EXISTS {procedure}(integer)",
    )


def _quote_identifier(name: str) -> str:
    """Always quoted (not only where needed): the name is then taken exactly as spelt."""
    return '"' + name.replace('"', '""') + '"'


def _verbatim(sql: str) -> TextClause:
    """``sql`` as SQLAlchemy sends it unchanged: colons escaped (no ``:name`` bind), and the
    driver's placeholders (psycopg's ``%s``) escaped by SQLAlchemy, as in any text(); a
    table name with either in it is then just a name, through every driver."""
    return text(sql.replace(":", "\\:"))


@asynccontextmanager
async def _transaction(backend: SqlBackend) -> AsyncIterator[AsyncConnection]:
    """A transaction, committed at the end: the backend's engine runs in autocommit, where
    a failed schedule would leave the procedure behind."""
    async with backend.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="READ COMMITTED")
        async with conn.begin():
            yield conn


def _of(backend: SqlBackend) -> None:
    if backend.engine.dialect.name != "postgresql":
        raise ValueError(f"pg_cron is PostgreSQL's; this backend is {backend.engine.dialect.name}")


def pg_cron_purge_script(
    backend: SqlBackend, *, schedule: str = DEFAULT_SCHEDULE, batch_size: int = 1000
) -> str:
    """The install script, for a DBA to review and run in the table's database (with psql,
    as a role that owns the table and may use the ``cron`` schema); the removal
    statements follow as comments."""
    _of(backend)
    sql = pg_cron_purge(backend.table, schedule=schedule, batch_size=batch_size)
    return (
        f"-- typed-session-sql: purge {backend.table.fullname} with pg_cron\n"
        f"{sql.create};\n\n{sql.schedule};\n\n"
        f"-- to remove it:\n-- {sql.unschedule};\n-- {sql.drop};\n"
    )


async def install_pg_cron_purge(
    backend: SqlBackend, *, schedule: str = DEFAULT_SCHEDULE, batch_size: int = 1000
) -> PgCronPurge:
    """Create the purge procedure and schedule it with pg_cron, in one transaction;
    running it again replaces both (a new schedule or batch size). Returns what it ran.

    Needs the ``pg_cron`` extension in the table's database (``CREATE EXTENSION pg_cron``,
    where ``cron.database_name`` names it) and a role that may create the procedure and use
    the ``cron`` schema. The job runs as this role. Raises `ValueError` for a
    backend that is not PostgreSQL and the bad arguments `pg_cron_purge` refuses;
    the database's own error where pg_cron is missing or the schedule is not cron syntax.
    """
    _of(backend)
    sql = pg_cron_purge(backend.table, schedule=schedule, batch_size=batch_size)
    async with _transaction(backend) as conn:
        await conn.execute(_verbatim(sql.create))
        await conn.execute(_verbatim(sql.schedule))
    return sql


async def remove_pg_cron_purge(backend: SqlBackend) -> bool:
    """Unschedule the job and drop the procedure; whether there was a job. Safe to run when
    neither exists (the ``cron`` schema must, though)."""
    _of(backend)
    sql = pg_cron_purge(backend.table)
    async with _transaction(backend) as conn:
        removed = (await conn.execute(_verbatim(sql.unschedule))).all()
        await conn.execute(_verbatim(sql.drop))
    return bool(removed)
