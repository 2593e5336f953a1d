"""Micro-benchmark: the floor phase 2 builds on. PK SELECT and version-checked UPDATE on the
shared MariaDB at concurrency 1 and 16: raw asyncmy (a connection per worker; text
protocol and prepared statements), asyncmy's pool, and SQLAlchemy Core in autocommit.
Run: .venv/bin/python -m notes.bench_mariadb [seconds]
"""

# ruff: noqa: S608, S311, B023  (throwaway probe: long SQL, scratch names)

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable

import asyncmy
from sqlalchemy import bindparam, column, literal_column, select, table, update
from sqlalchemy.ext.asyncio import create_async_engine

from notes.probe_common import SHARED, connect, scratch

ROWS = 10_000
DATA = b"d" * 200
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0


def uid(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8


Op = Callable[[int, int], Awaitable[None]]  # (worker, iteration) -> one operation


async def run(label: str, concurrency: int, make_op: Callable[[int], Awaitable[Op]]) -> float:
    ops = [await make_op(w) for w in range(concurrency)]
    done = 0
    deadline = time.perf_counter() + SECONDS

    async def worker(w: int) -> None:
        nonlocal done
        op = ops[w]
        i = 0
        while time.perf_counter() < deadline:
            await op(w, i)
            i += 1
        done += i

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    rate = done / (time.perf_counter() - start)
    print(f"{label:<44} c={concurrency:<3} {rate:>8.0f} ops/s")
    return rate


async def main() -> None:
    name = scratch("bench")
    setup = await connect()
    async with setup.cursor() as cur:
        await cur.execute(
            f"CREATE TABLE `{name}` (id_hash VARBINARY(32) PRIMARY KEY, data LONGBLOB NOT NULL,"
            " expires_at BIGINT NULL, version INT NOT NULL) ENGINE=InnoDB"
        )
        await cur.executemany(
            f"INSERT INTO `{name}` (id_hash, data, expires_at, version) VALUES (%s, %s, 1, 1)",
            [(uid(i), DATA) for i in range(ROWS)],
        )
    sel_sql = f"SELECT data, version, expires_at FROM `{name}` WHERE id_hash = %s"
    upd_sql = (
        f"UPDATE `{name}` SET data = %s, version = version + 1 WHERE id_hash = %s AND version = %s"
    )
    versions = dict.fromkeys(range(ROWS), 1)

    def row_for(w: int, i: int, c: int) -> int:
        # Workers own disjoint rows, so a version-checked update always matches.
        return (w + c * random.randrange(ROWS // c)) % ROWS

    conns: list[asyncmy.Connection] = []
    try:
        for c in (1, 16):
            while len(conns) < c:
                conns.append(await connect())

            async def raw_select(w: int, c: int = c) -> Op:
                conn = conns[w]

                async def op(w: int, i: int) -> None:
                    async with conn.cursor() as cur:
                        await cur.execute(sel_sql, (uid(row_for(w, i, c)),))
                        await cur.fetchone()

                return op

            async def raw_update(w: int, c: int = c) -> Op:
                conn = conns[w]

                async def op(w: int, i: int) -> None:
                    r = row_for(w, i, c)
                    async with conn.cursor() as cur:
                        n = await cur.execute(upd_sql, (DATA, uid(r), versions[r]))
                    versions[r] += n

                return op

            async def prepared_select(w: int, c: int = c) -> Op:
                stmt = await conns[w].prepare(sel_sql.replace("%s", "?"))

                async def op(w: int, i: int) -> None:
                    await stmt.execute((uid(row_for(w, i, c)),))

                return op

            async def prepared_update(w: int, c: int = c) -> Op:
                stmt = await conns[w].prepare(upd_sql.replace("%s", "?"))

                async def op(w: int, i: int) -> None:
                    r = row_for(w, i, c)
                    result = await stmt.execute((DATA, uid(r), versions[r]))
                    versions[r] += int(result.affected_rows)

                return op

            await run("asyncmy, own connection, text: SELECT", c, raw_select)
            await run("asyncmy, own connection, text: UPDATE", c, raw_update)
            await run("asyncmy, own connection, prepared: SELECT", c, prepared_select)
            await run("asyncmy, own connection, prepared: UPDATE", c, prepared_update)

            pool = await asyncmy.create_pool(**SHARED, autocommit=True, minsize=c, maxsize=c)

            async def pool_select(w: int, c: int = c) -> Op:
                async def op(w: int, i: int) -> None:
                    async with pool.acquire() as conn, conn.cursor() as cur:
                        await cur.execute(sel_sql, (uid(row_for(w, i, c)),))
                        await cur.fetchone()

                return op

            async def pool_update(w: int, c: int = c) -> Op:
                async def op(w: int, i: int) -> None:
                    r = row_for(w, i, c)
                    async with pool.acquire() as conn, conn.cursor() as cur:
                        n = await cur.execute(upd_sql, (DATA, uid(r), versions[r]))
                    versions[r] += n

                return op

            await run("asyncmy pool, text: SELECT", c, pool_select)
            await run("asyncmy pool, text: UPDATE", c, pool_update)
            pool.close()
            await pool.wait_closed()

            for label, options in (
                ("SQLAlchemy Core", {}),
                ("SQLAlchemy Core, no rollback", {"skip_autocommit_rollback": True}),
                (
                    "SQLAlchemy Core, no rollback, prepared",
                    {"skip_autocommit_rollback": True, "connect_args": {"stmt_cache_size": 64}},
                ),
            ):
                engine = create_async_engine(
                    "mysql+asyncmy://root@127.0.0.1:3306/test",
                    isolation_level="AUTOCOMMIT",
                    pool_reset_on_return=None,
                    pool_size=c,
                    **options,
                )
                t = table(
                    name, column("id_hash"), column("data"), column("version"), column("expires_at")
                )
                sel = select(t.c.data, t.c.version, t.c.expires_at).where(
                    t.c.id_hash == bindparam("p_id")
                )
                upd = (
                    update(t)
                    .where(
                        (t.c.id_hash == bindparam("p_id")) & (t.c.version == bindparam("p_version"))
                    )
                    .values(data=bindparam("p_data"), version=t.c.version + literal_column("1"))
                )

                async def sa_select(w: int, c: int = c, engine=engine, sel=sel) -> Op:  # type: ignore[no-untyped-def]
                    async def op(w: int, i: int) -> None:
                        async with engine.connect() as conn:
                            (await conn.execute(sel, {"p_id": uid(row_for(w, i, c))})).first()

                    return op

                async def sa_update(w: int, c: int = c, engine=engine, upd=upd) -> Op:  # type: ignore[no-untyped-def]
                    async def op(w: int, i: int) -> None:
                        r = row_for(w, i, c)
                        async with engine.connect() as conn:
                            result = await conn.execute(
                                upd, {"p_id": uid(r), "p_version": versions[r], "p_data": DATA}
                            )
                        versions[r] += result.rowcount

                    return op

                await run(f"{label}: SELECT", c, sa_select)
                await run(f"{label}: UPDATE", c, sa_update)
                await engine.dispose()
    finally:
        async with setup.cursor() as cur:
            await cur.execute(f"DROP TABLE IF EXISTS `{name}`")
        for conn in [setup, *conns]:
            await conn.ensure_closed()


if __name__ == "__main__":
    asyncio.run(main())
