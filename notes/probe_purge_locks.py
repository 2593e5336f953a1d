"""Probe: what a purge batch locks on MariaDB, and who waits for it.

Part 1 holds one purge batch open in a transaction (as a slow batch would be) and tries,
with innodb_lock_wait_timeout = 1, a second purger (plain and SKIP LOCKED forms) and the
writes a request makes. Part 2 runs two purgers in autocommit loops beside a request
writer and reports the writer's latencies. Run:
    .venv/bin/python -m notes.probe_purge_locks > notes/out/purge_locks.txt
"""

# ruff: noqa: E501, S608, S311  (throwaway probe: long SQL, scratch names)

from __future__ import annotations

import asyncio
import random
import statistics
import time

from notes.probe_common import connect, describe, scratch, show

EXPIRED = 20_000
LIVE = 2_000
FAR = 10**15
BATCH = 1_000


def plain(table: str) -> str:
    return f"DELETE FROM `{table}` WHERE expires_at <= %s ORDER BY expires_at LIMIT %s"


def skip_locked(table: str) -> str:
    return (
        f"DELETE FROM `{table}` WHERE id_hash IN (SELECT id_hash FROM (SELECT id_hash FROM `{table}`"
        " WHERE expires_at <= %s ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) v)"
    )


def uid(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8


async def fill(table: str) -> None:
    conn = await connect()
    async with conn.cursor() as cur:
        await cur.execute(f"DELETE FROM `{table}`")
        rows = [(uid(i), b"x" * 200, i + 1, 1) for i in range(EXPIRED)]
        rows += [(uid(EXPIRED + i), b"x" * 200, FAR + i, 1) for i in range(LIVE)]
        for start in range(0, len(rows), 2000):
            await cur.executemany(
                f"INSERT INTO `{table}` (id_hash, data, expires_at, created_at, version)"
                " VALUES (%s, %s, %s, 0, %s)",
                rows[start : start + 2000],
            )
    await conn.ensure_closed()


async def timed(conn: object, sql: str, args: object, label: str) -> None:
    t = time.perf_counter()
    result = await show(conn, sql, args, label)  # type: ignore[arg-type]
    outcome = describe(result) if isinstance(result, Exception) else f"rowcount={result}"
    print(f"    == {label}: {(time.perf_counter() - t) * 1000:.0f} ms, {outcome[:60]}")


async def part1(table: str, isolation: str) -> None:
    print(f"\n### one purge batch held open, purger's isolation {isolation}\n")
    await fill(table)
    holder = await connect(autocommit=False)
    await show(holder, f"SET SESSION TRANSACTION ISOLATION LEVEL {isolation}")
    await show(holder, "BEGIN")
    await show(holder, plain(table), (EXPIRED, BATCH), "A: first batch, not committed")
    other = await connect()
    await show(other, "SET SESSION innodb_lock_wait_timeout = 1")
    await show(other, f"SET SESSION TRANSACTION ISOLATION LEVEL {isolation}")
    await timed(other, plain(table), (EXPIRED, BATCH), "B: plain batch")
    await timed(other, skip_locked(table), (EXPIRED, BATCH), "B: SKIP LOCKED batch")
    multi = (
        f"DELETE t FROM `{table}` t JOIN (SELECT id_hash FROM `{table}` WHERE expires_at <= %s"
        " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) v ON t.id_hash = v.id_hash"
    )
    await timed(other, multi, (EXPIRED, BATCH), "B: multi-table DELETE, derived SKIP LOCKED")
    await show(other, "BEGIN")
    await timed(
        other,
        f"SELECT COUNT(*), MIN(expires_at) FROM (SELECT expires_at FROM `{table}` WHERE expires_at <= %s"
        " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) v",
        (EXPIRED, BATCH),
        "B: SELECT ... FOR UPDATE SKIP LOCKED in a transaction",
    )
    await timed(
        other,
        f"SELECT COUNT(*), MIN(expires_at) FROM `{table}` WHERE expires_at <= %s",
        (EXPIRED,),
        "B: what B sees",
    )
    await show(other, "ROLLBACK")
    req = await connect()
    await show(req, "SET SESSION innodb_lock_wait_timeout = 1")
    upd = (
        f"UPDATE `{table}` SET data = %s, expires_at = %s, version = version + 1"
        " WHERE id_hash = %s AND version = %s"
    )
    await timed(req, upd, (b"new", FAR, uid(EXPIRED + 5), 1), "request: update a live row")
    await timed(
        req,
        f"INSERT INTO `{table}` (id_hash, data, expires_at, created_at, version) VALUES (%s, 'n', %s, 0, 1)",
        (b"\xee" * 32, FAR + 10**9),
        "request: insert a new session",
    )
    await timed(
        req,
        f"INSERT INTO `{table}` (id_hash, data, expires_at, created_at, version) VALUES (%s, 'n', %s, 0, 1)",
        (b"\xef" * 32, BATCH + 5),
        "request: insert with an expiry just past the batch",
    )
    await timed(req, upd, (b"new", FAR, uid(3), 1), "request: update an expired row in the batch")
    await timed(
        req, upd, (b"new", FAR, uid(BATCH + 3), 1), "request: update an expired row past the batch"
    )
    await timed(
        req,
        f"SELECT version FROM `{table}` WHERE id_hash = %s",
        (uid(3),),
        "request: read a row in the batch",
    )
    await show(holder, "ROLLBACK")
    for c in (holder, other, req):
        await c.ensure_closed()


async def purger(table: str, sql: str, stats: dict[str, int]) -> None:
    conn = await connect()
    async with conn.cursor() as cur:
        while True:
            try:
                n = await cur.execute(sql, (EXPIRED, BATCH))
            except Exception as error:  # deadlock, lock wait timeout
                key = f"error {error.args[0]}"
                stats[key] = stats.get(key, 0) + 1
                continue
            stats["batches"] = stats.get("batches", 0) + 1
            stats["rows"] = stats.get("rows", 0) + n
            if n == 0:
                break
    await conn.ensure_closed()


async def writer(table: str, stop: asyncio.Event, latencies: list[float]) -> None:
    conn = await connect()
    versions = dict.fromkeys(range(LIVE), 1)
    async with conn.cursor() as cur:
        while not stop.is_set():
            i = random.randrange(LIVE)
            t = time.perf_counter()
            n = await cur.execute(
                f"UPDATE `{table}` SET data = %s, version = version + 1 WHERE id_hash = %s AND version = %s",
                (b"y" * 200, uid(EXPIRED + i), versions[i]),
            )
            latencies.append(time.perf_counter() - t)
            versions[i] += n
    await conn.ensure_closed()


async def part2(table: str, label: str, sql: str | None, purgers: int) -> None:
    await fill(table)
    stop = asyncio.Event()
    latencies: list[float] = []
    stats: dict[str, int] = {}
    w = asyncio.create_task(writer(table, stop, latencies))
    t = time.perf_counter()
    if sql is None:
        await asyncio.sleep(2)
    else:
        await asyncio.gather(*(purger(table, sql, stats) for _ in range(purgers)))
    elapsed = time.perf_counter() - t
    stop.set()
    await w
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{label}: {elapsed:.2f} s, purgers {stats}, writer {len(latencies)} updates,"
        f" p50 {q[49] * 1000:.2f} ms, p99 {q[98] * 1000:.2f} ms, max {max(latencies) * 1000:.1f} ms"
    )


async def main() -> None:
    table = scratch("probe_purge")
    conn = await connect()
    await show(
        conn,
        f"CREATE TABLE `{table}` (id_hash VARBINARY(32) PRIMARY KEY, data LONGBLOB NOT NULL,"
        " expires_at BIGINT NULL, created_at BIGINT NOT NULL, version INT NOT NULL,"
        f" INDEX ix_{table}_expires_at (expires_at)) ENGINE=InnoDB",
    )
    try:
        for isolation in ("REPEATABLE READ", "READ COMMITTED"):
            await part1(table, isolation)
        print(
            f"\n### two purgers in autocommit loops ({EXPIRED} expired rows, batch {BATCH}) beside a writer\n"
        )
        await part2(table, "no purger (baseline)", None, 0)
        await part2(table, "one purger, plain", plain(table), 1)
        await part2(table, "two purgers, plain", plain(table), 2)
        await part2(table, "two purgers, SKIP LOCKED", skip_locked(table), 2)
    finally:
        await show(conn, f"DROP TABLE IF EXISTS `{table}`")
        await conn.ensure_closed()


if __name__ == "__main__":
    asyncio.run(main())
