"""Probe: the statements a MariaDB session backend needs, against the shared server.

Run: .venv/bin/python -m notes.probe_semantics > notes/out/semantics.txt
Every table it makes is randomly named and dropped at the end.
"""

# ruff: noqa: E501, S608  (throwaway probe: long SQL, scratch names)

from __future__ import annotations

import asyncio

from notes.probe_common import connect, scratch, show

ID_A = b"\x00" * 31 + b"\x01"
ID_B = b"\x00" * 31 + b"\x02"
ID_C = b"\x27\x5c" + b"\xff" * 30  # quote, backslash, invalid UTF-8


def ddl(table: str) -> str:
    return (
        f"CREATE TABLE `{table}` ("
        " id_hash VARBINARY(32) NOT NULL PRIMARY KEY,"
        " data LONGBLOB NOT NULL,"
        " expires_at BIGINT NULL,"
        " created_at BIGINT NOT NULL,"
        " version INTEGER NOT NULL,"
        " principal VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NULL,"
        " authenticated_at BIGINT NULL,"
        f" INDEX ix_{table}_expires_at (expires_at),"
        f" INDEX ix_{table}_principal (principal)"
        ") ENGINE=InnoDB"
    )


async def create_section(table: str) -> None:
    print("\n## create\n")
    conn = await connect()
    fr = await connect(found_rows=True)
    ins = f"INSERT INTO `{table}` (id_hash, data, expires_at, created_at, version) VALUES (%s, %s, %s, %s, 1)"
    await show(conn, ins, (ID_A, b"one", 10, 1), "plain")
    await show(conn, ins, (ID_A, b"two", 10, 1), "plain, same id")
    await show(fr, ins, (ID_A, b"two", 10, 1), "plain, same id, FOUND_ROWS")
    ign = ins.replace("INSERT", "INSERT IGNORE")
    await show(conn, ign, (ID_A, b"three", 10, 1), "IGNORE, same id")
    # INSERT IGNORE also turns data errors into warnings and writes mangled values:
    ign_p = f"INSERT IGNORE INTO `{table}` (id_hash, data, created_at, version, principal) VALUES (%s, %s, 1, 1, %s)"
    await show(conn, ign_p, (ID_B, b"x", "p" * 300), "IGNORE, principal too long")
    await show(conn, f"SELECT CHAR_LENGTH(principal) FROM `{table}` WHERE id_hash = %s", (ID_B,))
    ign_n = (
        f"INSERT IGNORE INTO `{table}` (id_hash, data, created_at, version) VALUES (%s, NULL, 1, 1)"
    )
    await show(conn, ign_n, (ID_C,), "IGNORE, NULL data")
    await show(conn, f"SELECT HEX(data) FROM `{table}` WHERE id_hash = %s", (ID_C,))
    odku = ins + " ON DUPLICATE KEY UPDATE id_hash = id_hash"
    await show(conn, f"DELETE FROM `{table}` WHERE id_hash IN (%s, %s)", (ID_B, ID_C))
    await show(conn, odku, (ID_B, b"new", 10, 1), "ODKU, new id")
    await show(conn, odku, (ID_B, b"again", 10, 1), "ODKU, same id")
    await show(fr, odku, (ID_C, b"new", 10, 1), "ODKU, new id, FOUND_ROWS")
    await show(fr, odku, (ID_C, b"again", 10, 1), "ODKU, same id, FOUND_ROWS")
    await show(
        conn, f"SELECT data FROM `{table}` WHERE id_hash IN (%s, %s) ORDER BY id_hash", (ID_B, ID_C)
    )
    # A data error under ODKU is still an error (strict mode):
    odku_p = (
        f"INSERT INTO `{table}` (id_hash, data, created_at, version, principal) VALUES (%s, %s, 1, 1, %s)"
        " ON DUPLICATE KEY UPDATE id_hash = id_hash"
    )
    await show(conn, odku_p, (b"\x09" * 32, b"x", "p" * 300), "ODKU, principal too long")
    await conn.ensure_closed()
    await fr.ensure_closed()


async def update_section(table: str) -> None:
    print("\n## update, rotation, touch; affected vs found rows\n")
    for found_rows in (False, True):
        conn = await connect(found_rows=found_rows)
        tag = "FOUND_ROWS" if found_rows else "default flags"
        await show(conn, f"DELETE FROM `{table}`")
        await show(
            conn,
            f"INSERT INTO `{table}` (id_hash, data, expires_at, created_at, version) VALUES (%s, 'd', 100, 1, 1), (%s, 'd', 100, 1, 1)",
            (ID_A, ID_B),
        )
        upd = f"UPDATE `{table}` SET data = %s, expires_at = %s, version = version + 1 WHERE id_hash = %s AND version = %s"
        await show(conn, upd, (b"d2", 200, ID_A, 1), f"versioned update, {tag}")
        await show(conn, upd, (b"d3", 200, ID_A, 1), f"stale version, {tag}")
        same = f"UPDATE `{table}` SET expires_at = %s WHERE id_hash = %s"
        await show(conn, same, (200, ID_A), f"UPDATE to the same value, {tag}")
        touch = (
            f"UPDATE `{table}` SET expires_at = %s WHERE id_hash = %s AND version = %s"
            " AND expires_at > %s AND expires_at < %s"
        )
        await show(conn, touch, (300, ID_A, 2, 150, 300), f"touch later, {tag}")
        await show(conn, touch, (300, ID_A, 2, 150, 300), f"touch to the same expiry, {tag}")
        rot = (
            f"UPDATE `{table}` SET id_hash = %s, data = %s, expires_at = %s, version = version + 1"
            " WHERE id_hash = %s AND version = %s"
        )
        await show(conn, rot, (ID_B, b"moved", 400, ID_A, 2), f"rotation onto a taken id, {tag}")
        await show(conn, f"SELECT HEX(id_hash), data, version FROM `{table}` ORDER BY id_hash")
        await show(conn, rot, (ID_C, b"moved", 400, ID_A, 2), f"rotation onto a free id, {tag}")
        await show(conn, f"SELECT HEX(id_hash), data, version FROM `{table}` ORDER BY id_hash")
        await conn.ensure_closed()


async def purge_section(table: str) -> None:
    print("\n## purge statements\n")
    conn = await connect()
    await show(conn, f"DELETE FROM `{table}`")
    values = ", ".join(f"(UNHEX(SHA2('{i}', 256)), 'd', {i}, 1, 1)" for i in range(100))
    await show(
        conn,
        f"INSERT INTO `{table}` (id_hash, data, expires_at, created_at, version) VALUES {values}",
    )
    variants = [
        (
            "ORDER BY LIMIT",
            f"DELETE FROM `{table}` WHERE expires_at <= %s ORDER BY expires_at LIMIT %s",
        ),
        ("LIMIT", f"DELETE FROM `{table}` WHERE expires_at <= %s LIMIT %s"),
        (
            "IN (subquery LIMIT)",
            f"DELETE FROM `{table}` WHERE id_hash IN (SELECT id_hash FROM `{table}` WHERE expires_at <= %s LIMIT %s)",
        ),
        (
            "DELETE ... SKIP LOCKED",
            f"DELETE FROM `{table}` WHERE expires_at <= %s ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED",
        ),
        (
            "multi-table DELETE, derived LIMIT",
            f"DELETE t FROM `{table}` t JOIN (SELECT id_hash FROM `{table}` WHERE expires_at <= %s"
            " ORDER BY expires_at LIMIT %s) v ON t.id_hash = v.id_hash",
        ),
        (
            "multi-table DELETE, derived SKIP LOCKED",
            f"DELETE t FROM `{table}` t JOIN (SELECT id_hash FROM `{table}` WHERE expires_at <= %s"
            " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) v ON t.id_hash = v.id_hash",
        ),
        (
            "IN (derived SKIP LOCKED)",
            f"DELETE FROM `{table}` WHERE id_hash IN (SELECT id_hash FROM (SELECT id_hash FROM `{table}`"
            " WHERE expires_at <= %s ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) v)",
        ),
    ]
    for cutoff, (label, sql) in zip(range(10, 80, 10), variants, strict=True):
        await show(conn, sql, (cutoff, 10), label)
    await show(
        conn,
        f"DELETE FROM `{table}` WHERE id_hash IN (SELECT id_hash FROM `{table}` WHERE expires_at <= %s)",
        (80,),
        "IN (subquery of the same table, no LIMIT)",
    )
    await show(conn, f"SELECT COUNT(*), MIN(expires_at) FROM `{table}`")
    await show(
        conn,
        f"EXPLAIN DELETE FROM `{table}` WHERE expires_at <= %s ORDER BY expires_at LIMIT %s",
        (90, 10),
    )
    await conn.ensure_closed()


async def lock_section() -> None:
    print("\n## GET_LOCK\n")
    name = scratch("tss_purge")
    a = await connect()
    b = await connect()
    await show(a, "SELECT GET_LOCK(%s, 0)", (name,), "A")
    await show(b, "SELECT GET_LOCK(%s, 0)", (name,), "B")
    await show(a, "SELECT GET_LOCK(%s, 0)", (name,), "A again (re-entrant)")
    await show(
        b, "SELECT IS_USED_LOCK(%s) = %s", (name, a.thread_id()), "B: held by A's connection id"
    )
    await show(a, "SELECT RELEASE_LOCK(%s)", (name,), "A")
    await show(b, "SELECT GET_LOCK(%s, 0)", (name,), "B (A still holds its second acquisition)")
    await show(a, "SELECT RELEASE_LOCK(%s)", (name,), "A")
    await show(a, "SELECT RELEASE_LOCK(%s)", (name,), "A (nothing left)")
    await show(b, "SELECT GET_LOCK(%s, 0)", (name,), "B")
    await b.ensure_closed()
    await show(a, "SELECT GET_LOCK(%s, 0)", (name,), "A after B's connection closed")
    await show(a, "SELECT RELEASE_ALL_LOCKS()", None, "A")
    await show(a, "SELECT GET_LOCK(%s, 0)", ("x" * 65,), "A, 65-character name")
    await show(a, "SELECT GET_LOCK(%s, 0)", ("x" * 64,), "A, 64-character name")
    await show(a, "SELECT RELEASE_ALL_LOCKS()", None, "A")
    await a.ensure_closed()


async def main() -> None:
    table = scratch("probe_sessions")
    conn = await connect()
    await show(conn, "SELECT VERSION(), @@sql_mode, @@character_set_server, @@collation_server")
    await show(conn, ddl(table))
    try:
        await create_section(table)
        await update_section(table)
        await purge_section(table)
        await lock_section()
    finally:
        await show(conn, f"DROP TABLE IF EXISTS `{table}`")
        await conn.ensure_closed()


if __name__ == "__main__":
    asyncio.run(main())
