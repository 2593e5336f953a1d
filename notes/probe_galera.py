"""Probe: Galera behaviour for sessions, on a 3-node cluster of its own (tests/mariadb/galera.py).
Run: .venv/bin/python -m notes.probe_galera > notes/out/galera.txt
"""

# ruff: noqa: E501, ASYNC110  (throwaway probe: long SQL, scratch names)

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from typing import Any

import asyncmy

from notes.probe_common import describe, show
from tests.mariadb.galera import GaleraCluster, galera_cluster


async def node(cluster: GaleraCluster, n: int, **options: Any) -> asyncmy.Connection:
    params: dict[str, Any] = {"autocommit": True, **options}
    return await asyncmy.connect(
        host="127.0.0.1", port=cluster.node(n).port, database="test", **{"user": "root", **params}
    )


def outcome(result: Any) -> str:
    return describe(result)[:70] if isinstance(result, Exception) else f"rowcount={result}"


async def execute(conn: asyncmy.Connection, sql: str, args: Any = None) -> Any:
    async with conn.cursor() as cur:
        try:
            return await cur.execute(sql, args)
        except Exception as error:
            return error


async def locks(cluster: GaleraCluster) -> None:
    print("\n## GET_LOCK on two nodes\n")
    a, b = await node(cluster, 1), await node(cluster, 2)
    await show(a, "SELECT GET_LOCK('tss_purge', 0)", label="node1")
    await show(b, "SELECT GET_LOCK('tss_purge', 0)", label="node2")
    await show(a, "SELECT RELEASE_LOCK('tss_purge')", label="node1")
    await show(b, "SELECT RELEASE_LOCK('tss_purge')", label="node2")
    print("\n## a lease row instead: both nodes try to take it at once\n")
    await show(
        a,
        "CREATE TABLE lease (name VARCHAR(64) PRIMARY KEY, holder VARCHAR(64), until BIGINT NOT NULL)",
    )
    await show(a, "INSERT INTO lease VALUES ('purge', NULL, 0)")
    c = await node(cluster, 2, init_command="SET SESSION wsrep_sync_wait = 1")
    await show(c, "SELECT * FROM lease", label="node2 sees")
    take = "UPDATE lease SET holder = %s, until = %s WHERE name = 'purge' AND until < %s"
    tally: Counter[str] = Counter()
    for round_ in range(50):
        now = 1000 * (round_ + 1)
        r1, r2 = await asyncio.gather(
            execute(a, take, ("node1", now + 500, now)), execute(b, take, ("node2", now + 500, now))
        )
        tally[f"node1 {outcome(r1)} | node2 {outcome(r2)}"] += 1
    for key, count in tally.most_common():
        print(f"    {count:>3} x {key}")
    for conn in (a, b, c):
        await conn.ensure_closed()


async def conflicts(cluster: GaleraCluster, retry_autocommit: int, rounds: int) -> None:
    print(
        f"\n## one row updated through node1 and node2 at once, wsrep_retry_autocommit={retry_autocommit}\n"
    )
    init = f"SET SESSION wsrep_retry_autocommit = {retry_autocommit}"
    a, b = await node(cluster, 1, init_command=init), await node(cluster, 2, init_command=init)
    await show(a, "SELECT @@wsrep_retry_autocommit", label="node1")
    await execute(a, "DROP TABLE IF EXISTS s")
    await execute(
        a,
        "CREATE TABLE s (id_hash VARBINARY(32) PRIMARY KEY, data LONGBLOB NOT NULL, version INT NOT NULL)",
    )
    await execute(a, "INSERT INTO s VALUES (%s, 'd', 1)", (b"\x01" * 32,))
    sync = await node(cluster, 1, init_command="SET SESSION wsrep_sync_wait = 1")
    upd = "UPDATE s SET data = %s, version = version + 1 WHERE id_hash = %s AND version = %s"
    tally: Counter[str] = Counter()
    acknowledged = 0
    for _ in range(rounds):
        async with sync.cursor() as cur:
            await cur.execute("SELECT version FROM s WHERE id_hash = %s", (b"\x01" * 32,))
            (version,) = await cur.fetchone()
        r1, r2 = await asyncio.gather(
            execute(a, upd, (b"from node1", b"\x01" * 32, version)),
            execute(b, upd, (b"from node2", b"\x01" * 32, version)),
        )
        acknowledged += sum(1 for r in (r1, r2) if r == 1)
        tally[" | ".join(sorted((f"node1 {outcome(r1)}", f"node2 {outcome(r2)}")))] += 1
    for key, count in tally.most_common():
        print(f"    {count:>3} x {key}")
    async with sync.cursor() as cur:
        await cur.execute("SELECT version FROM s")
        (final,) = await cur.fetchone()
    print(
        f"    final version {final} = 1 + acknowledged updates {acknowledged}: {final == 1 + acknowledged}"
    )
    if retry_autocommit == 0:
        print("\n-- the same in an explicit transaction (BEGIN; UPDATE; COMMIT) on each node")
        ta = await node(cluster, 1, autocommit=False)
        tb = await node(cluster, 2, autocommit=False)
        async with sync.cursor() as cur:
            await cur.execute("SELECT version FROM s")
            (version,) = await cur.fetchone()
        for t in (ta, tb):
            await execute(t, "BEGIN")
        ra = await execute(ta, upd, (b"tx node1", b"\x01" * 32, version))
        rb = await execute(tb, upd, (b"tx node2", b"\x01" * 32, version))
        print(
            f"    UPDATE: node1 {outcome(ra)}, node2 {outcome(rb)} (each node checks its own copy)"
        )
        ca, cb = await asyncio.gather(execute(ta, "COMMIT"), execute(tb, "COMMIT"))
        print(f"    COMMIT: node1 {outcome(ca)}, node2 {outcome(cb)}")
        for t in (ta, tb):
            await t.ensure_closed()
    for conn in (a, b, sync):
        await conn.ensure_closed()


async def read_your_writes(cluster: GaleraCluster, rounds: int) -> None:
    print("\n## written on node1, read at once on node2\n")
    w = await node(cluster, 1)
    await execute(w, "DROP TABLE IF EXISTS r")
    await execute(w, "CREATE TABLE r (id INT PRIMARY KEY, v INT NOT NULL)")
    await execute(w, "INSERT INTO r VALUES (1, 0)")
    for sync_wait in (0, 1):
        reader = await node(cluster, 2, init_command=f"SET SESSION wsrep_sync_wait = {sync_wait}")
        stale = 0
        latencies = []
        for i in range(1, rounds + 1):
            await execute(w, "UPDATE r SET v = %s WHERE id = 1", (i + sync_wait * rounds,))
            t = time.perf_counter()
            async with reader.cursor() as cur:
                await cur.execute("SELECT v FROM r WHERE id = 1")
                (v,) = await cur.fetchone()
            latencies.append(time.perf_counter() - t)
            stale += v != i + sync_wait * rounds
        print(
            f"    wsrep_sync_wait={sync_wait}: {stale}/{rounds} reads missed the write just acknowledged;"
            f" read latency median {statistics.median(latencies) * 1e3:.2f} ms,"
            f" p99 {statistics.quantiles(latencies, n=100)[98] * 1e3:.2f} ms"
        )
        await reader.ensure_closed()
    await w.ensure_closed()


async def purgers(cluster: GaleraCluster) -> None:
    print("\n## two purgers on two nodes at once (the SKIP LOCKED multi-table DELETE)\n")
    a, b = await node(cluster, 1), await node(cluster, 2)
    await execute(a, "DROP TABLE IF EXISTS p")
    await execute(
        a,
        "CREATE TABLE p (id_hash VARBINARY(32) PRIMARY KEY, expires_at BIGINT, INDEX (expires_at))",
    )
    async with a.cursor() as cur:
        await cur.executemany(
            "INSERT INTO p VALUES (%s, %s)", [(i.to_bytes(4, "big") * 8, i) for i in range(5000)]
        )
    purge = (
        "DELETE t FROM p t JOIN (SELECT id_hash FROM p WHERE expires_at <= %s ORDER BY expires_at"
        " LIMIT %s FOR UPDATE SKIP LOCKED) v ON t.id_hash = v.id_hash"
    )
    tally: Counter[str] = Counter()
    for _ in range(10):
        r1, r2 = await asyncio.gather(
            execute(a, purge, (5000, 500)), execute(b, purge, (5000, 500))
        )
        tally[f"node1 {outcome(r1)} | node2 {outcome(r2)}"] += 1
    for key, count in tally.most_common():
        print(f"    {count:>3} x {key}")
    await show(a, "SELECT COUNT(*) FROM p")
    for conn in (a, b):
        await conn.ensure_closed()


async def limits(cluster: GaleraCluster) -> None:
    print("\n## too many connections (node3, max_connections lowered, a user without SUPER)\n")
    cluster.sql(3, "CREATE USER IF NOT EXISTS 'app'@'127.0.0.1'")
    cluster.sql(3, "GRANT ALL ON test.* TO 'app'@'127.0.0.1'")
    cluster.sql(3, "SET GLOBAL max_connections = 10")  # its minimum
    held = []
    try:
        for _ in range(13):
            held.append(await node(cluster, 3, user="app"))
    except Exception as error:
        print(f"    connection {len(held) + 1}: {describe(error)}")
    for conn in held:
        await conn.ensure_closed()
    cluster.sql(3, "SET GLOBAL max_connections = 200")

    print("\n## quorum lost: nodes 2 and 3 killed, node1 alone\n")
    a = await node(cluster, 1)
    cluster.kill(2)
    cluster.kill(3)
    deadline = time.monotonic() + 30
    while (
        cluster.status(1).get("wsrep_cluster_status") == "Primary" and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.1)  # polling a state
    status = cluster.status(1)
    print(
        f"    node1: cluster_status={status.get('wsrep_cluster_status')} ready={status.get('wsrep_ready')}"
    )
    await show(a, "SELECT COUNT(*) FROM r", label="node1 read")
    await show(a, "UPDATE r SET v = v + 1 WHERE id = 1", label="node1 write")
    await a.ensure_closed()


async def main() -> None:
    t = time.monotonic()
    with galera_cluster(3) as cluster:
        print(
            f"cluster of 3 up in {time.monotonic() - t:.1f} s; ports {[n.port for n in cluster.nodes]}"
        )
        conn = await node(cluster, 1)
        await show(
            conn,
            "SELECT VERSION(), @@wsrep_sync_wait, @@wsrep_retry_autocommit, @@wsrep_provider_options LIKE '%evs.suspect_timeout = PT2S%'",
        )
        await conn.ensure_closed()
        await locks(cluster)
        await conflicts(cluster, retry_autocommit=1, rounds=200)
        await conflicts(cluster, retry_autocommit=0, rounds=200)
        await read_your_writes(cluster, rounds=500)
        await purgers(cluster)
        await limits(cluster)


if __name__ == "__main__":
    asyncio.run(main())
