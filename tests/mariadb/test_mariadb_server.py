"""The shared-server fixtures: scratch tables of a test's own, bytes that survive the
driver, the SQLAlchemy dialect in autocommit, and skip-or-fail without a server."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.mariadb.server import connect, require_mariadb, scratch_table

pytestmark = [pytest.mark.anyio, pytest.mark.mariadb]

# Every byte value, and the ones a client-side escaper must get right: NUL, quote,
# backslash, Ctrl-Z, and sequences that are not UTF-8.
AWKWARD = bytes(range(256)) + b"\x00'\\\x1a\"\xc3\x28\xff\xfe"


async def test_a_scratch_table_keeps_every_byte(mariadb_url: str, mariadb_table: str) -> None:
    id_hash = bytes(range(32))
    async with connect(mariadb_url) as conn, conn.cursor() as cursor:
        await cursor.execute(
            f"CREATE TABLE `{mariadb_table}` (id_hash VARBINARY(32) PRIMARY KEY,"
            " data LONGBLOB NOT NULL)"
        )
        await cursor.execute(
            f"INSERT INTO `{mariadb_table}` (id_hash, data) VALUES (%s, %s)", (id_hash, AWKWARD)
        )
        await cursor.execute("SHOW WARNINGS")
        assert list(await cursor.fetchall()) == []
        await cursor.execute(f"SELECT data FROM `{mariadb_table}` WHERE id_hash = %s", (id_hash,))
        assert [tuple(row) for row in await cursor.fetchall()] == [(AWKWARD,)]


async def test_scratch_tables_are_distinct_and_dropped(mariadb_url: str) -> None:
    async with scratch_table(mariadb_url) as first, scratch_table(mariadb_url) as second:
        assert first != second
        async with connect(mariadb_url) as conn, conn.cursor() as cursor:
            await cursor.execute(f"CREATE TABLE `{first}` (x INT)")
    async with connect(mariadb_url) as conn, conn.cursor() as cursor:
        await cursor.execute(
            "SELECT COUNT(*) FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_name IN (%s, %s)",
            (first, second),
        )
        assert await cursor.fetchone() == (0,)


async def test_sqlalchemy_runs_on_asyncmy_in_autocommit(mariadb_url: str) -> None:
    engine = create_async_engine(mariadb_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT @@autocommit"))).scalar() == 1
            version = (await conn.execute(text("SELECT VERSION()"))).scalar()
            assert "MariaDB" in str(version)
    finally:
        await engine.dispose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(("required", "outcome"), [(False, "skip"), (True, "fail")])
def test_no_server_skips_or_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, required: bool, outcome: str
) -> None:
    monkeypatch.setenv("TYPED_SESSION_SQL_REQUIRE_MARIADB", "1" if required else "0")
    url = f"mysql+asyncmy://root@127.0.0.1:{_closed_port()}/test"
    expected = pytest.skip.Exception if outcome == "skip" else pytest.fail.Exception
    with pytest.raises(expected, match="does not answer"):
        require_mariadb(url)
