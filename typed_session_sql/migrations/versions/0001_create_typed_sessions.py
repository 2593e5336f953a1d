"""Create the session table, its expiry index and its (partial) principal index.

Written out column by column, not built from the backend's current table definition: a
revision must keep meaning what it meant when later revisions change the table. A test
compares the migrated database with the backend's definition (autogenerate finds no diff).

On MySQL and MariaDB (dialect name ``mysql`` or ``mariadb``, by the URL) three columns take
types of their own: a binary key (a BLOB cannot be a key), LONGBLOB data (a BLOB holds 64
KiB) and the principal as UTF-8 bytes, compared exactly (their text collations ignore case
and trailing spaces). The principal index is a plain one there: no partial indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

from typed_session_sql.backends.sql.migrate import BRANCH_LABEL, refuse_a_table_recorded_elsewhere
from typed_session_sql.backends.sql.settings import options

revision = "0001"
down_revision = None
branch_labels = (BRANCH_LABEL,)
depends_on = None

MYSQL = ("mysql", "mariadb")


def upgrade() -> None:
    settings = options(context.config, context.get_x_argument(as_dictionary=True))
    refuse_a_table_recorded_elsewhere(settings.table, settings.schema)
    op.create_table(
        settings.table,
        sa.Column(
            "id_hash", sa.LargeBinary(32).with_variant(mysql.VARBINARY(32), *MYSQL), nullable=False
        ),
        sa.Column("data", sa.LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL), nullable=False),
        # Microseconds since 1970-01-01 UTC; NULL = never expires.
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        # Who signed in, and when (microseconds, as above); NULL = anonymous.
        sa.Column(
            "principal", sa.String(255).with_variant(mysql.VARBINARY(1020), *MYSQL), nullable=True
        ),
        sa.Column("authenticated_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id_hash"),
        schema=settings.schema,
    )
    op.create_index(
        f"ix_{settings.table}_expires_at",
        settings.table,
        ["expires_at"],
        schema=settings.schema,
    )
    # Partial: anonymous sessions never enter it (a plain index on MySQL and MariaDB).
    op.create_index(
        f"ix_{settings.table}_principal",
        settings.table,
        ["principal"],
        schema=settings.schema,
        postgresql_where=sa.text("principal IS NOT NULL"),
        sqlite_where=sa.text("principal IS NOT NULL"),
    )


def downgrade() -> None:
    settings = options(context.config, context.get_x_argument(as_dictionary=True))
    op.drop_index(f"ix_{settings.table}_principal", settings.table, schema=settings.schema)
    op.drop_index(f"ix_{settings.table}_expires_at", settings.table, schema=settings.schema)
    op.drop_table(settings.table, schema=settings.schema)
