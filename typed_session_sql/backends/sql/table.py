"""The session table, and how its timestamps are stored.

One definition serves the backend, the migrations and Alembic's autogenerate, so they
cannot drift apart.

Timestamps are stored as integer microseconds since the Unix epoch (UTC). Integers compare
the same on every dialect whatever the database session's time zone, SQLite included
(where DATETIME is text), cost nothing to convert, and make it impossible to mix in the
database's own clock: every ``now`` comes from the store.

On MySQL and MariaDB three columns take types of their own (the other dialects' DDL is
unchanged): the key is ``VARBINARY(32)`` (a key on a BLOB needs a prefix length), the data
``LONGBLOB`` (a BLOB holds 64 KiB at most) and the principal ``VARBINARY(1020)``: its UTF-8
bytes, compared exactly, where every text collation MariaDB and MySQL share ignores case or
trailing spaces (``'alice' = 'Alice '`` is true under the server's default).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
    false,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from typed_session_sql.backend import MAX_PRINCIPAL_LENGTH

__all__ = [
    "DEFAULT_TABLE",
    "MYSQL_DIALECTS",
    "POSTGRESQL_TABLE_SETTINGS",
    "EpochMicros",
    "Utf8Bytes",
    "session_table",
]

DEFAULT_TABLE = "typed_sessions"

MYSQL_DIALECTS = ("mysql", "mariadb")
"""SQLAlchemy's names for the MySQL family: ``mysql+asyncmy://`` says ``mysql`` whatever the
server, ``mariadb+asyncmy://`` says ``mariadb``; types and statements cover both."""

POSTGRESQL_TABLE_SETTINGS: dict[str, str] = {
    "autovacuum_vacuum_scale_factor": "0.02",
}
"""The session table's storage parameters on PostgreSQL (an ``ALTER TABLE ... SET`` right after
`create_schema`'s ``CREATE TABLE``, and revision 0003's); the other dialects have none.

Every renewal and save is an UPDATE of ``expires_at``, an indexed column, so none is a HOT
update: each leaves a dead row version and a new entry in every index until VACUUM. The
server's default (vacuum once 20 % of the rows are dead) lets a table of 10 million live
sessions carry 2 million dead ones between two vacuums; 2 % keeps that near 200,000
(benchmarks/bloat.py measures it; docs/operations.md has the figures). A ``fillfactor``
below 100 would only leave room for HOT updates that never happen here, so it stays at
the default."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class EpochMicros(TypeDecorator[datetime]):
    """An aware datetime stored as a BIGINT of microseconds since 1970-01-01 UTC.

    Reading a value outside the years 1-9999 raises `OverflowError`: such a row was
    not written by this library.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        return _to_micros(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> datetime | None:
        return _from_micros(value)

    # Every load converts three timestamps: where the integer type has no conversion of its
    # own on this dialect (none has today), the conversion is the function itself, not
    # TypeDecorator's wrapper calling it (one Python call less per value, both executors).

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if self.impl_instance.dialect_impl(dialect).bind_processor(dialect) is None:
            return _to_micros
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if self.impl_instance.dialect_impl(dialect).result_processor(dialect, coltype) is None:
            return _from_micros
        return super().result_processor(dialect, coltype)


def _to_micros(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("session timestamps must be timezone-aware")
    return (value - _EPOCH) // _MICROSECOND


def _from_micros(value: int | None) -> datetime | None:
    # Exact integer arithmetic, and the cheapest spelling: the timedelta constructor parses
    # and normalises its arguments (half as much again); out of range, both raise
    # OverflowError.
    return None if value is None else _EPOCH + _MICROSECOND * value


class Utf8Bytes(TypeDecorator[str]):
    """Text stored as its UTF-8 bytes in a ``VARBINARY``: compared byte for byte, whatever
    the server's collation. The principal's type on MySQL and MariaDB (see the module
    docstring); 4 bytes a character at most, so ``length`` is 4 times the characters."""

    impl = mysql.VARBINARY
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else value.encode()

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> str | None:
        # A row written by hand with bytes that are not UTF-8 raises UnicodeDecodeError (a
        # ValueError): the backend's unreadable-row path.
        return None if value is None else bytes(value).decode()


def session_table(
    metadata: MetaData, name: str = DEFAULT_TABLE, schema: str | None = None
) -> Table:
    """The session table, defined once: the backend, migrations and autogenerate use this."""
    table = Table(
        name,
        metadata,
        # blake3 of the session id: uniformly distributed, so a fine key for range-sharded
        # distributed SQL too (no sequence, no hot spot).
        Column(
            "id_hash",
            LargeBinary(32).with_variant(mysql.VARBINARY(32), *MYSQL_DIALECTS),
            primary_key=True,
        ),
        Column(
            "data",
            LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL_DIALECTS),
            nullable=False,
        ),
        # NULL = never expires (never purged).
        Column("expires_at", EpochMicros, nullable=True),
        Column("created_at", EpochMicros, nullable=False),
        Column("version", Integer, nullable=False),
        # Who signed in (set only by Session.sign_in), and when; NULL = anonymous.
        Column(
            "principal",
            String(MAX_PRINCIPAL_LENGTH).with_variant(
                Utf8Bytes(4 * MAX_PRINCIPAL_LENGTH), *MYSQL_DIALECTS
            ),
            nullable=True,
        ),
        Column("authenticated_at", EpochMicros, nullable=True),
        # The application set expires_at itself: renewal never moves it (revision 0002).
        # The server default lets rows written by code that predates it read as unpinned.
        Column("expiry_pinned", Boolean, nullable=False, server_default=false()),
        Index(f"ix_{name}_expires_at", "expires_at"),
        # Partial: anonymous sessions (most rows, most writes) never enter it. MySQL and
        # MariaDB have no partial indexes: there it is a plain one.
        Index(
            f"ix_{name}_principal",
            "principal",
            postgresql_where=text("principal IS NOT NULL"),
            sqlite_where=text("principal IS NOT NULL"),
        ),
        schema=schema,
    )
    event.listen(table, "after_create", _set_storage_parameters)
    return table


# Where the table has storage parameters to set when it is created.
_STORAGE_PARAMETERS = {"postgresql": POSTGRESQL_TABLE_SETTINGS}


def _set_storage_parameters(target: Table, connection: Connection, **_: Any) -> None:
    """Revision 0003's settings on a table `create_schema` just created: an ``ALTER TABLE``
    right after the ``CREATE`` (SQLAlchemy 2.0, the floor, has no ``postgresql_with``).

    The name is quoted by hand and colons escaped, as in revision 0003: a dialect's preparer
    doubles a percent sign for psycopg, which text run without parameters keeps, and
    `text` would take ``:name`` in a table name for a bind parameter."""
    settings = _STORAGE_PARAMETERS.get(connection.dialect.name)
    if not settings:
        return
    schema = connection.schema_for_object(target)  # after any schema_translate_map
    names = (schema, target.name) if schema else (target.name,)
    quoted = ".".join('"' + part.replace('"', '""') + '"' for part in names)
    assigned = ", ".join(f"{key} = {value}" for key, value in settings.items())
    connection.execute(text(f"ALTER TABLE {quoted} SET ({assigned})".replace(":", "\\:")))
