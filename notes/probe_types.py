"""Probe: what SQLAlchemy renders for the session table on MySQL/MariaDB, and what the
server does with it; collations for exact principal matching. Run:
    .venv/bin/python -m notes.probe_types > notes/out/types.txt
"""

# ruff: noqa: E501, S608  (throwaway probe: long SQL, scratch names)

from __future__ import annotations

import asyncio

from sqlalchemy import Column, LargeBinary, MetaData, String, Table, delete, select
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateIndex, CreateTable

from notes.probe_common import connect, scratch, show
from typed_session_sql.backends.sql_table import session_table


def rendered(table: Table, dialect: mysql.dialect) -> list[str]:
    out = [str(CreateTable(table).compile(dialect=dialect)).strip()]
    out += [
        str(CreateIndex(ix).compile(dialect=dialect))
        for ix in sorted(table.indexes, key=lambda i: i.name or "")
    ]
    return out


async def main() -> None:
    name = scratch("probe_types")
    as_is = session_table(MetaData(), name)
    mariadb = mysql.dialect(is_mariadb=True)
    print("## session_table() as it is today, compiled for MariaDB\n")
    for sql in rendered(as_is, mariadb):
        print(sql + "\n")
    conn = await connect()
    try:
        for sql in rendered(as_is, mariadb):
            await show(conn, sql, label="as is")

        print("\n## with_variant\n")
        md = MetaData()
        fixed = Table(
            name,
            md,
            Column(
                "id_hash",
                LargeBinary(32).with_variant(mysql.VARBINARY(32), "mysql", "mariadb"),
                primary_key=True,
            ),
            Column(
                "data",
                LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
                nullable=False,
            ),
            Column(
                "principal",
                String(255).with_variant(mysql.VARBINARY(1020), "mysql", "mariadb"),
                nullable=True,
            ),
            mysql_engine="InnoDB",
        )
        from sqlalchemy.ext.asyncio import create_async_engine

        for url in ("mysql+asyncmy://root@127.0.0.1/test", "mariadb+asyncmy://root@127.0.0.1/test"):
            dialect = create_async_engine(url).dialect
            label = url
            print(f"-- {label}: dialect.name = {dialect.name!r}")
            print(str(CreateTable(fixed).compile(dialect=dialect)).strip() + "\n")
        print(
            "-- plain LargeBinary() is BLOB (64 KiB - 1):", LargeBinary().compile(dialect=mariadb)
        )
        print("-- LargeBinary(2**24) is:", LargeBinary(2**24).compile(dialect=mariadb))
        print("-- LargeBinary(32) is:", LargeBinary(32).compile(dialect=mariadb))

        print("\n## collations: does 'alice' equal 'Alice' or 'alice '?\n")
        for collation in (
            "utf8mb4_general_ci",
            "utf8mb4_bin",
            "utf8mb4_nopad_bin",
            "utf8mb4_unicode_520_nopad_ci",
        ):
            await show(
                conn,
                f"SELECT 'alice' = 'Alice' COLLATE {collation}, 'alice' = 'alice ' COLLATE {collation},"
                f" 'e\u0301' = '\u00e9' COLLATE {collation}",
            )
        await show(
            conn,
            "SELECT CAST('alice' AS BINARY) = CAST('alice ' AS BINARY), CAST('alice' AS BINARY) = CAST('Alice' AS BINARY)",
        )
        await show(conn, "SHOW COLLATION LIKE 'utf8mb4%bin'")

        print("\n## a principal index on a nullable column, and a 4-byte character\n")
        t2 = scratch("probe_principal")
        await show(
            conn,
            f"CREATE TABLE `{t2}` (id INT PRIMARY KEY, principal VARCHAR(255) CHARACTER SET utf8mb4"
            f" COLLATE utf8mb4_nopad_bin NULL, INDEX ix_p (principal)) ENGINE=InnoDB",
        )
        await show(
            conn,
            f"INSERT INTO `{t2}` VALUES (1, NULL), (2, NULL), (3, 'alice'), (4, 'alice '), (5, %s)",
            ("\U0001f600" * 255,),
        )
        await show(conn, f"SELECT id FROM `{t2}` WHERE principal = 'alice'")
        await show(conn, f"ALTER TABLE `{t2}` MODIFY principal VARBINARY(1020) NULL")
        await show(conn, f"SELECT id FROM `{t2}` WHERE principal = %s", ("alice",))
        await show(conn, f"SELECT id FROM `{t2}` WHERE principal = %s", ("alice ",))
        await show(conn, f"EXPLAIN SELECT id FROM `{t2}` WHERE principal = 'alice'")
        await show(
            conn, f"SELECT CHAR_LENGTH(principal), LENGTH(principal) FROM `{t2}` WHERE id = 5"
        )
        await show(conn, f"DROP TABLE `{t2}`")

        print("\n## the purge as SQLAlchemy renders it (mysql dialect)\n")
        c = fixed.c
        victims = (
            select(c.id_hash)
            .where(c.data.is_not(None))
            .limit(10)
            .with_for_update(skip_locked=True)
            .subquery("v")
        )
        stmt = delete(fixed).where(c.id_hash == victims.c.id_hash)
        print(stmt.compile(dialect=mariadb))
        old = delete(fixed).where(c.id_hash.in_(select(c.id_hash).limit(10).scalar_subquery()))
        print(old.compile(dialect=mariadb))
    finally:
        await show(conn, f"DROP TABLE IF EXISTS `{name}`")
        await conn.ensure_closed()


if __name__ == "__main__":
    asyncio.run(main())
