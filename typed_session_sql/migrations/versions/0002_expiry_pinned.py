"""Add expiry_pinned: an expiry the application set is a cap that renewal never moves.

A ``NOT NULL`` boolean with the constant default false, added to a live table without
rewriting it, so sessions keep being loaded and saved while it runs:

- PostgreSQL (11 on) stores a constant default in the catalogue: ``ADD COLUMN`` only
  updates metadata, under a lock held for an instant.
- MySQL (8.0.12 on) and MariaDB (10.3 on), Galera included, get ``ALGORITHM=INSTANT``: a
  server that would have to copy the table refuses the statement instead of silently
  locking it for the length of a copy.
- SQLite's ``ADD COLUMN`` only rewrites the schema text.

Every 0001 row reads as not pinned, as do rows written meanwhile by code that predates the
column (the server default). Downgrade drops the column: pinned expiries are renewed again.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from typed_session_sql.backends.sql.settings import options

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MYSQL = ("mysql", "mariadb")
COLUMN = "expiry_pinned"


def upgrade() -> None:
    settings = options(context.config, context.get_x_argument(as_dictionary=True))
    if context.get_context().dialect.name in MYSQL:
        # Alembic's add_column has no way to ask for ALGORITHM=INSTANT.
        op.execute(
            f"ALTER TABLE {_quoted(settings.table, settings.schema)}"
            f" ADD COLUMN {COLUMN} BOOL NOT NULL DEFAULT false, ALGORITHM=INSTANT"
        )
        return
    op.add_column(
        settings.table,
        sa.Column(COLUMN, sa.Boolean(), nullable=False, server_default=sa.false()),
        schema=settings.schema,
    )


def downgrade() -> None:
    settings = options(context.config, context.get_x_argument(as_dictionary=True))
    op.drop_column(settings.table, COLUMN, schema=settings.schema)


def _quoted(table: str, schema: str | None) -> str:
    preparer = context.get_context().dialect.identifier_preparer
    return preparer.format_table(sa.Table(table, sa.MetaData(), schema=schema))
