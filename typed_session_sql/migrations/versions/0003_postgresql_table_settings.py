"""PostgreSQL: vacuum the session table once 2 % of its rows are dead, not 20 %.

Every renewal and save of a session is an UPDATE of ``expires_at``, an indexed column, so
none is a HOT update: each leaves a dead row version behind, and an entry in every index,
until VACUUM clears them. The server's default ``autovacuum_vacuum_scale_factor`` (0.2)
waits for a fifth of the table to be dead: at 10 million live sessions, 2 million dead
row versions and their index entries between two vacuums. This revision sets the table's
own factor to 0.02 (docs/operations.md, "The table at 10 million rows", has the
measurement). It is a storage parameter: ``ALTER TABLE ... SET`` changes the catalogue
only, under a SHARE UPDATE EXCLUSIVE lock that loads and saves do not wait for.

MySQL, MariaDB and SQLite have no such setting: there the revision does nothing (InnoDB
purges old row versions on its own). Downgrade RESETs the parameter to the server's value.

The values are written out here, not read from the backend's table definition, so the
revision keeps meaning what it meant; a test holds a migrated table's settings equal to a
created one's (``POSTGRESQL_TABLE_SETTINGS``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from typed_session_sql.backends.sql.settings import options

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SETTINGS = {"autovacuum_vacuum_scale_factor": "0.02"}


def upgrade() -> None:
    if context.get_context().dialect.name != "postgresql":
        return
    assigned = ", ".join(f"{name} = {value}" for name, value in SETTINGS.items())
    op.execute(_literal(f"ALTER TABLE {_quoted()} SET ({assigned})"))


def downgrade() -> None:
    if context.get_context().dialect.name != "postgresql":
        return
    op.execute(_literal(f"ALTER TABLE {_quoted()} RESET ({', '.join(SETTINGS)})"))


def _quoted() -> str:
    # Quoted by hand, not by the dialect's preparer: the preparer of a driver with the
    # pyformat parameter style (psycopg) doubles a percent sign in a name, which text
    # executed without parameters then keeps, naming a table that does not exist.
    settings = options(context.config, context.get_x_argument(as_dictionary=True))
    names = (settings.schema, settings.table) if settings.schema else (settings.table,)
    return ".".join('"' + name.replace('"', '""') + '"' for name in names)


def _literal(statement: str) -> sa.TextClause:
    """``statement`` as text with no bind parameters: a table name may hold a colon, which
    `sa.text` (what `op.execute` makes of a string) would take for one."""
    return sa.text(statement.replace(":", "\\:"))
