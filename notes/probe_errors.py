"""Probe: the errors a session backend meets on MariaDB, as asyncmy raises them and as
SQLAlchemy wraps them; and the asyncmy API a driver-level executor would use. Run:
    .venv/bin/python -m notes.probe_errors > notes/out/errors.txt
"""

# ruff: noqa: E501, S608  (throwaway probe: long SQL, scratch names)

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from notes.probe_common import connect, describe, scratch, show

URL = "mysql+asyncmy://root@127.0.0.1:3306/test"


async def through_sqlalchemy(
    label: str, run: Callable[[AsyncConnection], Awaitable[Any]], **engine_options: Any
) -> None:
    engine = create_async_engine(URL, isolation_level="AUTOCOMMIT", **engine_options)
    try:
        async with engine.connect() as conn:
            await run(conn)
        print(f"[SA {label}] -> no error")
    except DBAPIError as error:
        print(
            f"[SA {label}] -> sqlalchemy.exc.{type(error).__name__}"
            f" connection_invalidated={error.connection_invalidated}; orig: {describe(error.orig)}"[
                :230
            ]
        )
    except Exception as error:
        print(f"[SA {label}] -> {type(error).__module__}.{type(error).__name__}: {error}"[:200])
    finally:
        await engine.dispose()


async def errors(table: str) -> None:
    print("## errors, raw asyncmy\n")
    conn = await connect()
    await show(conn, f"SELECT * FROM `{table}_missing`", label="table missing")
    await show(conn, f"INSERT INTO `{table}` (id, p) VALUES (1, %s)", ("p" * 256,), "too long")
    await show(
        conn, f"INSERT INTO `{table}` (id, b) VALUES (2, %s)", (b"x" * 70_000,), "too long for BLOB"
    )
    await show(
        conn,
        f"INSERT INTO `{table}` (id, m) VALUES (3, %s)",
        ("\U0001f600",),
        "4-byte char into utf8mb3",
    )
    await show(conn, f"INSERT INTO `{table}` (id, p) VALUES (4, %s)", ("\ud800",), "lone surrogate")
    await show(conn, f"INSERT INTO `{table}` (id, n) VALUES (5, NULL)", None, "NULL into NOT NULL")
    await show(conn, "SELECT @@max_allowed_packet, @@wait_timeout, @@innodb_lock_wait_timeout")
    await show(
        conn,
        f"INSERT INTO `{table}` (id, lb) VALUES (6, %s)",
        (b"x" * (17 * 2**20),),
        "17 MiB value",
    )
    conn = await connect()  # the packet error may have closed it
    await show(conn, f"INSERT INTO `{table}` (id) VALUES (10), (11)")

    print("\n-- lock wait timeout (1205)")
    a, b = await connect(autocommit=False), await connect()
    await show(a, "BEGIN")
    await show(a, f"UPDATE `{table}` SET p = 'a' WHERE id = 10", label="A holds row 10")
    await show(b, "SET SESSION innodb_lock_wait_timeout = 1")
    await show(b, f"UPDATE `{table}` SET p = 'b' WHERE id = 10", label="B, autocommit")
    await show(a, "ROLLBACK")

    print("\n-- deadlock (1213)")
    b2 = await connect(autocommit=False)
    await show(a, "BEGIN")
    await show(b2, "BEGIN")
    await show(a, f"UPDATE `{table}` SET p = 'a' WHERE id = 10", label="A locks 10")
    await show(b2, f"UPDATE `{table}` SET p = 'b' WHERE id = 11", label="B locks 11")
    waiting = asyncio.create_task(
        show(a, f"UPDATE `{table}` SET p = 'a' WHERE id = 11", label="A wants 11")
    )
    await asyncio.sleep(0.2)  # a probe: let A's request reach the server and wait
    await show(b2, f"UPDATE `{table}` SET p = 'b' WHERE id = 10", label="B wants 10")
    await waiting
    await show(a, "ROLLBACK")
    await show(b2, "ROLLBACK")

    print("\n-- a connection killed by the server (KILL), then used")
    victim = await connect()
    killer = await connect()
    await show(killer, "KILL %s", (victim.thread_id(),), "KILL")
    await asyncio.sleep(0.1)  # let the event loop read the close
    print(f"victim.connected without a round trip: {victim.connected}")
    await show(victim, "SELECT 1", label="after KILL")
    print(f"victim.connected after: {victim.connected}")

    print("\n-- idle past wait_timeout (4031 on MariaDB)")
    idle = await connect()
    await show(idle, "SET SESSION wait_timeout = 1")
    await asyncio.sleep(2.5)  # a probe: wait out the server's idle timeout
    print(f"idle.connected without a round trip: {idle.connected}")
    await show(idle, "SELECT 1", label="after wait_timeout")
    for c in (a, b, b2, killer, conn):
        await c.ensure_closed()

    print("\n## errors through SQLAlchemy (mysql+asyncmy, AUTOCOMMIT)\n")

    async def missing(c: AsyncConnection) -> None:
        await c.execute(text(f"SELECT * FROM `{table}_missing`"))

    async def duplicate(c: AsyncConnection) -> None:
        await c.execute(text(f"INSERT INTO `{table}` (id) VALUES (10)"))

    async def too_long(c: AsyncConnection) -> None:
        await c.execute(text(f"INSERT INTO `{table}` (id, p) VALUES (20, :p)"), {"p": "p" * 256})

    async def utf8mb3(c: AsyncConnection) -> None:
        await c.execute(text(f"INSERT INTO `{table}` (id, m) VALUES (21, :m)"), {"m": "\U0001f600"})

    async def surrogate(c: AsyncConnection) -> None:
        await c.execute(text(f"INSERT INTO `{table}` (id, p) VALUES (22, :p)"), {"p": "\ud800"})

    async def killed(c: AsyncConnection) -> None:
        raw = await c.get_raw_connection()
        thread_id = raw.driver_connection.thread_id()  # type: ignore[union-attr]
        async with await connect() as k, k.cursor() as cur:
            await cur.execute("KILL %s", (thread_id,))
        await asyncio.sleep(0.1)
        await c.execute(text("SELECT 1"))

    async def lock_wait(c: AsyncConnection) -> None:
        holder = await connect(autocommit=False)
        async with holder.cursor() as cur:
            await cur.execute("BEGIN")
            await cur.execute(f"UPDATE `{table}` SET p = 'h' WHERE id = 10")
        try:
            await c.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
            await c.execute(text(f"UPDATE `{table}` SET p = 'c' WHERE id = 10"))
        finally:
            await holder.rollback()
            await holder.ensure_closed()

    for label, run in (
        ("table missing", missing),
        ("duplicate key", duplicate),
        ("data too long", too_long),
        ("4-byte char into utf8mb3", utf8mb3),
        ("lone surrogate", surrogate),
        ("killed connection", killed),
        ("lock wait timeout", lock_wait),
    ):
        await through_sqlalchemy(label, run)

    async def rowcount_same_value(c: AsyncConnection) -> None:
        await c.execute(text(f"UPDATE `{table}` SET p = 'same' WHERE id = 11"))
        result = await c.execute(text(f"UPDATE `{table}` SET p = 'same' WHERE id = 11"))
        print(
            f"[SA] UPDATE to the same value: rowcount={result.rowcount} (FOUND_ROWS set by the dialect)"
        )

    await through_sqlalchemy("rowcount", rowcount_same_value)


async def driver_api(table: str) -> None:
    print("\n## asyncmy: what the text protocol sends for bytes, and prepared statements\n")
    sent: list[str] = []
    conn = await connect(query_callback=lambda cursor, query, ms: sent.append(query))
    async with conn.cursor() as cur:
        value = b"\x00'\\\xff\xfe\xc3\x28 ok"
        print("mogrify:", cur.mogrify("SELECT %s", (value,)))
        await cur.execute(f"INSERT INTO `{table}` (id, b) VALUES (30, %s)", (value,))
        print("sent:", sent[-1])
        await cur.execute(f"SELECT b = %s, HEX(b) FROM `{table}` WHERE id = 30", (value,))
        print("read back equal, hex:", await cur.fetchone())
        print("mogrify str:", cur.mogrify("SELECT %s", ("it's \\ é",)))
    stmt = await conn.prepare(f"SELECT b FROM `{table}` WHERE id = ?")
    result = await stmt.execute((30,))
    print("prepared SELECT rows:", result.rows, "equal:", result.rows[0][0] == value)
    upd = await conn.prepare(f"UPDATE `{table}` SET b = ? WHERE id = ? AND b = ?")
    r1 = await upd.execute((b"\x01\x02", 30, value))
    r2 = await upd.execute((b"\x01\x02", 30, value))
    print("prepared UPDATE affected_rows:", r1.affected_rows, r2.affected_rows)
    ins = await conn.prepare(f"INSERT INTO `{table}` (id) VALUES (?)")
    try:
        await ins.execute((30,))
    except Exception as error:
        print("prepared duplicate INSERT:", describe(error))
    print("after an error the statement still works:", (await stmt.execute((30,))).rows)
    await conn.ensure_closed()


async def main() -> None:
    table = scratch("probe_errors")
    conn = await connect()
    await show(
        conn,
        f"CREATE TABLE `{table}` (id INT PRIMARY KEY, p VARCHAR(255) CHARACTER SET utf8mb4 NULL,"
        " m VARCHAR(10) CHARACTER SET utf8mb3 NULL, b BLOB NULL, lb LONGBLOB NULL,"
        " n INT NOT NULL DEFAULT 0) ENGINE=InnoDB",
    )
    try:
        await errors(table)
        await driver_api(table)
    finally:
        await show(conn, f"DROP TABLE IF EXISTS `{table}`")
        await conn.ensure_closed()


if __name__ == "__main__":
    asyncio.run(main())
