"""The Galera fixture: a 3-node cluster replicates, and keeps taking writes with a node
killed; the killed node rejoins with everything it missed."""

from __future__ import annotations

import anyio
import pytest

from tests.mariadb.galera import GaleraCluster
from tests.mariadb.server import connect
from tests.support.names import unique_name

pytestmark = [pytest.mark.anyio, pytest.mark.galera]

# Reads wait until the node has applied every write the cluster committed before them
# (read-your-writes across nodes; see docs/mysql-notes.md).
CAUSAL = {"init_command": "SET SESSION wsrep_sync_wait = 1"}


async def _rows(url: str, table: str) -> list[tuple[int, str]]:
    async with connect(url, **CAUSAL) as conn, conn.cursor() as cursor:
        await cursor.execute(f"SELECT id, who FROM `{table}` ORDER BY id")
        return [(int(row[0]), str(row[1])) for row in await cursor.fetchall()]


async def _insert(url: str, table: str, row_id: int, who: str) -> None:
    async with connect(url) as conn, conn.cursor() as cursor:
        await cursor.execute(f"INSERT INTO `{table}` (id, who) VALUES (%s, %s)", (row_id, who))


async def test_a_write_on_one_node_reads_on_the_others_and_survives_a_kill(
    galera: GaleraCluster,
) -> None:
    table = unique_name("smoke")
    node1, node2, node3 = galera.urls()
    async with connect(node1) as conn, conn.cursor() as cursor:
        await cursor.execute(f"CREATE TABLE `{table}` (id INT PRIMARY KEY, who VARCHAR(16))")
    await _insert(node1, table, 1, "node1")
    assert await _rows(node2, table) == [(1, "node1")]
    assert await _rows(node3, table) == [(1, "node1")]

    await anyio.to_thread.run_sync(galera.kill, 3)
    await anyio.to_thread.run_sync(galera.wait_for_size, 2)
    await _insert(node1, table, 2, "node1")
    await _insert(node2, table, 3, "node2")
    expected = [(1, "node1"), (2, "node1"), (3, "node2")]
    assert await _rows(node1, table) == expected
    assert await _rows(node2, table) == expected

    await anyio.to_thread.run_sync(galera.restart, 3)
    await anyio.to_thread.run_sync(galera.wait_for_size, 3)
    assert await _rows(node3, table) == expected
