"""What differs on MySQL and MariaDB, on the shared MariaDB server, on both executors.

The contract suite and the other SQL modules run here too (``mariadb-driver``,
``mariadb-sqlalchemy``); this module covers what only this family has: its column types,
the FOUND_ROWS client flag, its error numbers (a deadlock retried, a lock wait, a packet
too big, a connection killed by the server), a duplicate key whose message quotes the id
hash, and GET_LOCK.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from asyncmy.constants import CLIENT
from blake3 import blake3
from sqlalchemy import event, make_url, text

from tests.clock import FakeClock
from tests.mariadb.server import connect, require_mariadb
from tests.models import Cart
from tests.sql.test_sql_connections import connected
from tests.sql.test_sql_failures import saves_go_on
from tests.sql_backends import SqlTarget
from typed_session_sql import (
    IdCollisionError,
    SessionStore,
    SetCookie,
    SqlBackend,
    StoreUnavailableError,
    ids,
)
from typed_session_sql.backend import Record, Update, UpdateOutcome
from typed_session_sql.backends.sql import locks
from typed_session_sql.backends.sql.failures import (
    StatementFailed,
    classify,
    mysql_error_code,
    store_error,
    store_error_cause,
)
from typed_session_sql.backends.sql.locks import lock_name
from typed_session_sql.errors import DataRejectedError

pytestmark = [pytest.mark.anyio, pytest.mark.mariadb, pytest.mark.sql(database="mariadb")]

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def record(version: int = 1, **changes: Any) -> Record:
    fields: dict[str, Any] = {
        "data": b"{}",
        "version": version,
        "created_at": NOW,
        "expires_at": NOW + HOUR,
    }
    fields.update(changes)
    return Record(**fields)


def full_text(error: BaseException) -> str:
    """Everything a logged traceback of ``error`` shows, causes included."""
    return "".join(traceback.format_exception(error))


async def admin(*statements: str) -> list[Any]:
    """Run ``statements`` on a connection of the test's own; the last one's rows."""
    rows: list[Any] = []
    async with connect(require_mariadb()) as conn, conn.cursor() as cursor:
        for statement in statements:
            await cursor.execute(statement)
            rows = list(await cursor.fetchall())
    return rows


# -- the table ------------------------------------------------------------------------------


async def test_the_table_has_binary_keys_long_data_and_exact_principals(
    sql_backend: SqlBackend,
) -> None:
    rows = await admin(
        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS"
        f" WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{sql_backend.table.name}'"
    )
    assert dict(rows) == {
        "id_hash": "varbinary(32)",
        "data": "longblob",
        "expires_at": "bigint(20)",
        "created_at": "bigint(20)",
        "version": "int(11)",
        "principal": "varbinary(1020)",
        "authenticated_at": "bigint(20)",
        "expiry_pinned": "tinyint(1)",
    }


async def test_a_session_over_64_kib_is_kept_whole(sql_backend: SqlBackend) -> None:
    data = bytes(range(256)) * 400  # 100 KiB: more than a BLOB holds
    assert await sql_backend.create(b"b" * 32, record(data=data))
    stored = await sql_backend.read(b"b" * 32)
    assert stored is not None
    assert stored.data == data


# -- affected rows and found rows -----------------------------------------------------------


@asynccontextmanager
async def connected_as(
    sql_target: SqlTarget, *, found_rows: bool, prepared: bool
) -> AsyncIterator[SqlBackend]:
    """A backend whose connections carry the CLIENT_FOUND_ROWS flag (as SQLAlchemy's MySQL
    dialects always set it) or not (as a raw asyncmy connection by default), and run their
    statements prepared (create_engine's default) or in the text protocol."""
    async with sql_target.open() as backend:

        def options(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
            if found_rows:
                cparams["client_flag"] = cparams.get("client_flag", 0) | CLIENT.FOUND_ROWS
            else:
                cparams["client_flag"] = cparams.get("client_flag", 0) & ~CLIENT.FOUND_ROWS
            cparams["stmt_cache_size"] = 32 if prepared else 0

        event.listen(backend.engine.sync_engine, "do_connect", options)
        await backend.engine.dispose()  # every connection from now on is made so
        yield backend


async def counts_of_every_write(backend: SqlBackend) -> list[object]:
    """What each write reports, in the cases where the two flags could differ: a write that
    matches a row and changes nothing in it."""
    row, other = b"r" * 32, b"o" * 32
    seen: list[object] = [
        await backend.create(row, record()),
        await backend.create(row, record()),  # taken
        await backend.create(other, record(principal="alice", authenticated_at=NOW)),
    ]
    same = Update(row, 1, b"{}", NOW + HOUR)  # the very values the row holds
    seen += [await backend.update(same), await backend.update(same)]  # updated, then stale
    seen += [
        await backend.touch(row, 2, NOW + HOUR, NOW),  # same expiry: nothing to do
        await backend.touch(row, 2, NOW + 2 * HOUR, NOW),
        await backend.touch(row, 2, NOW + 2 * HOUR, NOW),  # again: same expiry
        await backend.update(Update(row, 2, b"{}", NOW + 2 * HOUR, new_id_hash=other)),
        await backend.delete_by_principal("alice", keep=other),
        await backend.delete(b"missing" * 4 + b"xxxx"),
        await backend.purge(NOW + 3 * HOUR, 10),
        await backend.purge(NOW + 3 * HOUR, 10),
    ]
    return seen


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "text"])
@pytest.mark.parametrize("found_rows", [True, False], ids=["found-rows", "affected-rows"])
async def test_every_write_counts_the_same_whichever_rows_the_server_reports(
    sql_target: SqlTarget, found_rows: bool, prepared: bool
) -> None:
    async with connected_as(sql_target, found_rows=found_rows, prepared=prepared) as backend:
        drivers = connected(backend)
        # The flag is in force: an UPDATE that changes nothing reports the row it found, or
        # none.
        async with backend.engine.connect() as conn:
            await conn.execute(backend.table.insert(), [{"id_hash": b"p" * 32, **PROBE_ROW}])
            result = await conn.execute(
                text(f"UPDATE {backend.table.name} SET version = 1 WHERE version = 1")
            )
            assert result.rowcount == (1 if found_rows else 0)
            await conn.execute(backend.table.delete())
        assert await counts_of_every_write(backend) == [
            True,
            False,
            True,
            UpdateOutcome.UPDATED,
            UpdateOutcome.STALE,
            False,
            True,
            False,
            UpdateOutcome.ID_TAKEN,
            0,
            False,
            2,
            0,
        ]
        assert drivers
        assert all(bool(driver._stmt_cache) is prepared for driver in drivers)


PROBE_ROW: dict[str, Any] = {"data": b"", "version": 1, "created_at": NOW, "expires_at": None}


# -- errors ---------------------------------------------------------------------------------


async def test_a_taken_id_never_shows_its_hash_in_an_error_or_a_log(
    sql_target: SqlTarget, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MySQL's duplicate-key message quotes the key: "Duplicate entry '\x9b\x91...' for key
    # 'PRIMARY'", the id hash itself.
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy.engine", "typed_session_sql"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.DEBUG)
    async with sql_target.open() as backend:
        store = SessionStore(Cart, backend, clock=FakeClock(), max_id_collision_retries=1)
        saved = await store.save(store.new(Cart(items=[1])))
        assert isinstance(saved, SetCookie)
        taken = saved.value
        with monkeypatch.context() as patch:
            patch.setattr(ids, "new_cookie_value", lambda: taken)
            with pytest.raises(IdCollisionError) as collided:  # a create, twice
                await store.save(store.new(Cart(items=[2])))
        # A rotation onto a taken id, straight on the backend.
        assert await backend.create(b"a" * 32, record())
        moved = await backend.update(Update(b"a" * 32, 1, b"{}", NOW + HOUR, new_id_hash=b"a" * 32))
        assert moved is UpdateOutcome.UPDATED  # onto itself: no conflict
        assert await backend.create(b"b" * 32, record())
        moved = await backend.update(Update(b"b" * 32, 1, b"{}", NOW + HOUR, new_id_hash=b"a" * 32))
        assert moved is UpdateOutcome.ID_TAKEN
    seen = caplog.text + full_text(collided.value)
    assert "Duplicate entry" not in seen
    assert ids.IdHasher()(taken).hex() not in seen.lower()
    assert "aaaaaaaa" not in seen


async def test_a_syntax_error_is_reported_without_the_statement_it_quotes() -> None:
    # The server's 1064 message quotes the statement from where parsing failed: inlined by
    # the text protocol, id hashes and session data. Reported like a taken key: the error
    # number, not the text, and no chained driver error.
    secret = b"\x9b\x91secret-id-hash"
    async with connect(require_mariadb()) as conn, conn.cursor() as cursor:
        with pytest.raises(Exception) as refused:  # noqa: PT011 - asyncmy's, checked below
            await cursor.execute("SELECT * FROM %s", [secret])
    assert mysql_error_code(refused.value) == 1064
    assert "secret-id-hash" in str(refused.value)  # what must not come out
    failed = StatementFailed(classify(refused.value))
    failed.__cause__ = refused.value
    error = store_error(failed, "typed_sessions")
    error.__cause__ = store_error_cause(failed)  # as the backend raises it
    assert isinstance(error, StoreUnavailableError)
    assert "error 1064" in str(error)
    assert "secret-id-hash" not in full_text(error)


async def test_a_value_bigger_than_max_allowed_packet_is_refused_data(
    sql_target: SqlTarget,
) -> None:
    # The server refuses the packet (error 1153) and closes the connection: the value is at
    # fault, not the store, and the one connection there is gets replaced. (A statement
    # just over 16 MiB goes as two protocol packets, and the server answers after both;
    # one of three or more packets is answered early, and asyncmy reports that as a
    # protocol error instead: docs/mysql-notes.md.)
    async with sql_target.open(held_connections=1, pool_size=2, max_overflow=0) as backend:
        (limit,) = (await admin("SELECT @@max_allowed_packet"))[0]
        # Sent as hex digits (two a byte): a statement 1 MiB over the limit.
        too_big = record(data=b"x" * ((int(limit) + (1 << 20)) // 2))
        with pytest.raises(DataRejectedError) as caught:
            await backend.create(b"x" * 32, too_big)
        assert not isinstance(caught.value, StoreUnavailableError)
        assert "error 1153" in str(caught.value)
        assert await backend.read(b"x" * 32) is None  # nothing written
        assert await backend.create(b"y" * 32, record())  # a write on a fresh connection


async def test_a_killed_connection_is_replaced_unseen(
    sql_backend: SqlBackend, clock: FakeClock
) -> None:
    drivers = connected(sql_backend)
    await sql_backend.engine.dispose()  # from now on every connection is seen
    store = SessionStore(Cart, sql_backend, clock=clock)
    saved = await store.save(store.new(Cart(items=[1])))
    assert isinstance(saved, SetCookie)
    loaded = await asyncio.gather(*(store.load(saved.value) for _ in range(5)))
    assert drivers
    await admin(*(f"KILL CONNECTION {driver.thread_id()}" for driver in drivers))
    while True:  # until the client has read every close (a state, polled)
        if all(driver._stream_broken for driver in drivers):
            break
        await asyncio.sleep(0.01)
    session = loaded[0]
    assert session is not None
    session.data.items.append(2)
    await store.save(session)  # a write first: not idempotent, so never sent twice
    await saves_go_on(store, saved.value)


async def lock_waits(table: str) -> None:
    """Return once a statement on ``table`` waits for a row lock (the server's word)."""
    query = (
        "SELECT 1 FROM information_schema.INNODB_TRX"
        f" WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE '%{table}%'"
    )
    while True:
        if await admin(query):
            break
        # InnoDB refreshes what INNODB_TRX shows only once nobody has read it for 0.1 s: a
        # poll any faster would read the same stale copy for ever.
        await asyncio.sleep(0.11)


async def test_a_deadlock_is_rolled_back_and_run_again(sql_backend: SqlBackend) -> None:
    # What a lost Galera certification reports too: error 1213, the statement rolled back
    # whole. Here a real InnoDB deadlock, with the backend's rotation as its victim.
    table = sql_backend.table.name
    row, new = b"r" * 32, b"n" * 32
    assert await sql_backend.create(row, record())
    async with connect(require_mariadb()) as blocker, blocker.cursor() as cursor:
        await cursor.execute(f"CREATE TEMPORARY TABLE ballast_{table} (n INT PRIMARY KEY)")
        await cursor.execute("BEGIN")
        # InnoDB rolls back the transaction that changed fewer rows: make that the rotation.
        values = ", ".join(f"({n})" for n in range(200))
        await cursor.execute(f"INSERT INTO ballast_{table} VALUES {values}")
        # Lock the gap the new id goes into; the rotation locks its row, then waits here.
        await cursor.execute(f"SELECT id_hash FROM {table} WHERE id_hash = %s FOR UPDATE", (new,))
        rotation = asyncio.create_task(
            sql_backend.update(Update(row, 1, b"{}", NOW + HOUR, new_id_hash=new))
        )
        await lock_waits(table)
        # Now ask for the row the rotation holds: a cycle. This UPDATE goes through only
        # once the rotation has been rolled back (1213); the backend runs it again, and it
        # goes through once this transaction ends.
        await cursor.execute(f"UPDATE {table} SET data = data WHERE id_hash = %s", (row,))
        await cursor.execute("COMMIT")
    assert await rotation is UpdateOutcome.UPDATED
    assert await sql_backend.read(row) is None
    moved = await sql_backend.read(new)
    assert moved is not None
    assert moved.version == 2


async def test_a_lock_wait_timeout_is_unavailable_and_the_backend_goes_on(
    sql_target: SqlTarget,
) -> None:
    timeout = {"init_command": "SET SESSION innodb_lock_wait_timeout = 1"}
    async with sql_target.open(connect_args=timeout) as backend:
        table, row = backend.table.name, b"r" * 32
        assert await backend.create(row, record())
        change = Update(row, 1, b"{}", NOW + HOUR)
        async with connect(require_mariadb()) as blocker, blocker.cursor() as cursor:
            await cursor.execute("BEGIN")
            await cursor.execute(f"UPDATE {table} SET data = data WHERE id_hash = %s", (row,))
            with pytest.raises(StoreUnavailableError, match=r"unavailable.*1205"):
                await backend.update(change)  # waits a second for the row, then gives up
            await cursor.execute("ROLLBACK")
        assert await backend.update(change) is UpdateOutcome.UPDATED


async def test_a_read_timeout_bounds_a_statement_stuck_behind_a_lock(
    sql_target: SqlTarget,
) -> None:
    # asyncmy's read_timeout (docs/sql-store.md): the wait ends, the connection is replaced.
    async with sql_target.open(connect_args={"read_timeout": 1}) as backend:
        table, row = backend.table.name, b"r" * 32
        assert await backend.create(row, record())
        async with connect(require_mariadb()) as blocker, blocker.cursor() as cursor:
            await cursor.execute("BEGIN")
            await cursor.execute(f"UPDATE {table} SET data = data WHERE id_hash = %s", (row,))
            with pytest.raises(StoreUnavailableError, match="read timeout"):
                await backend.update(Update(row, 1, b"{}", NOW + HOUR))
            await cursor.execute("ROLLBACK")
        # The abandoned UPDATE may still have run once the lock went: an unknown outcome,
        # as the error said. Either way the backend goes on, on a fresh connection.
        stored = await backend.read(row)
        assert stored is not None
        assert await backend.touch(row, stored.version, NOW + 2 * HOUR, NOW)


# -- GET_LOCK: server-wide names --------------------------------------------------------------


def migration_lock_name(backend: SqlBackend) -> str:
    """The migration lock's name, as anyone on the server can work it out."""
    place = f"typed_session_sql migrate {backend.engine.url.database}.{backend.table.name}"
    return f"typed_session_sql_migrate_{blake3(place.encode()).hexdigest(8)}"


@asynccontextmanager
async def holding(lock: str, database: str) -> AsyncIterator[None]:
    """``lock`` held by a connection of the test's own to ``database``."""
    url = str(make_url(require_mariadb()).set(database=database))
    async with connect(url) as conn, conn.cursor() as cursor:
        await cursor.execute("SELECT GET_LOCK(%s, 0)", [lock])
        assert list(await cursor.fetchall()) == [(1,)]
        yield


@pytest.mark.sql(execution="driver")
async def test_a_connection_to_another_database_cannot_stop_the_purges(
    sql_backend: SqlBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # GET_LOCK names are server-wide: any user of the server, in any database, can take the
    # purge lock's (it is not secret). Passes go on without it, with a warning.
    lock = lock_name(sql_backend.engine.url.database, sql_backend.table.name)
    async with holding(lock, "mysql"), sql_backend.purge_lock() as got:
        assert got
    assert "held by a connection to another database" in caplog.text


@pytest.mark.sql(execution="driver")
async def test_a_pass_skipped_for_a_lock_held_too_long_warns(
    sql_backend: SqlBackend, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = lock_name(sql_backend.engine.url.database, sql_backend.table.name)
    async with holding(lock, str(sql_backend.engine.url.database)):
        async with sql_backend.purge_lock() as got:  # another purger, just now: its turn
            assert not got
        assert "purge" not in caplog.text
        monkeypatch.setattr(locks, "PURGE_LOCK_HELD_TOO_LONG", 0)
        async with sql_backend.purge_lock() as got:
            assert not got
    assert "purge pass skipped: another purger has held the purge lock" in caplog.text


@pytest.mark.sql(execution="driver")
async def test_a_connection_to_another_database_cannot_stop_migrate(
    sql_target: SqlTarget, caplog: pytest.LogCaptureFixture
) -> None:
    async with sql_target.open(schema=False) as backend:
        try:
            with anyio.fail_after(30):  # it waited forever
                async with holding(migration_lock_name(backend), "mysql"):
                    await backend.migrate()
        finally:
            async with backend.engine.begin() as conn:
                await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {backend.table.name}")
                await conn.exec_driver_sql(
                    f"DROP TABLE IF EXISTS {backend.table.name}_alembic_version"
                )
    assert "migration lock" in caplog.text


@pytest.mark.sql(execution="driver")
async def test_migrate_waits_for_the_lock_a_bounded_time(
    sql_target: SqlTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks, "MIGRATION_LOCK_WAIT", 0)
    async with sql_target.open(schema=False) as backend:
        database = str(backend.engine.url.database)
        with anyio.fail_after(30):  # it waited forever
            async with holding(migration_lock_name(backend), database):
                with pytest.raises(StoreUnavailableError, match="within 0 s"):
                    await backend.migrate()
