"""What the SQL backend says when something is wrong, on every database x executor.

Refused data is not an outage; a missing table says how to create it; an outage names its
cause; rows that cannot be read back are skipped or undecodable; no error text carries a
statement's parameters; the SQLite file is its owner's alone.
"""

from __future__ import annotations

import os
import stat
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from tests.asgi_apps import Cart
from tests.clock import FakeClock
from tests.mariadb.server import require_mariadb
from tests.sql_backends import SqlTarget, require_postgres, unique_name
from typed_session_sql import (
    SessionStore,
    SetCookie,
    SqlBackend,
    StoreUnavailableError,
    ids,
)
from typed_session_sql.backend import Record, UnreadableRecordError
from typed_session_sql.backends.sql import create_engine
from typed_session_sql.errors import DataRejectedError, SessionTableMissingError

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(**changes: object) -> Record:
    fields: dict[str, object] = {
        "data": b"{}",
        "version": 1,
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
    }
    fields.update(changes)
    return Record(**fields)  # type: ignore[arg-type]


def full_text(error: BaseException) -> str:
    """Everything a logged traceback of ``error`` shows, causes included."""
    return "".join(traceback.format_exception(error))


@pytest.mark.sql(database="postgres")
async def test_data_the_database_refuses_is_data_rejected_not_an_outage(
    sql_backend: SqlBackend,
) -> None:
    # PostgreSQL's text type cannot hold NUL (SQLSTATE 22021); SQLite stores it.
    id_hash = b"n" * 32
    principal = "refused\x00principal"
    with pytest.raises(DataRejectedError) as caught:
        await sql_backend.create(id_hash, record(principal=principal, authenticated_at=NOW))
    assert not isinstance(caught.value, StoreUnavailableError)
    text = full_text(caught.value)
    assert "SQLSTATE 22" in str(caught.value)
    assert "refused" not in text.replace("refused a value", "")
    assert id_hash.hex() not in text
    assert await sql_backend.read(id_hash) is None  # nothing written


async def test_a_missing_table_says_how_to_create_it(
    sql_target: SqlTarget, clock: FakeClock
) -> None:
    async with sql_target.open(schema=False) as backend:
        store = SessionStore(Cart, backend, clock=clock)
        for attempt in (store.load(ids.new_cookie_value()), store.save(store.new(Cart()))):
            with pytest.raises(SessionTableMissingError) as caught:
                await attempt
            message = str(caught.value)
            assert backend.table.name in message
            assert "typed-session-sql migrate upgrade head" in message
            assert "await backend.migrate()" in message


async def test_an_outage_names_its_cause(sql_target: SqlTarget) -> None:
    if sql_target.database == "postgres":
        url = make_url(require_postgres()).set(port=1).render_as_string(hide_password=False)
        cause = "ConnectionRefusedError"
    elif sql_target.database == "mariadb":
        url = make_url(require_mariadb()).set(port=1).render_as_string(hide_password=False)
        cause = "Can't connect to MySQL server"
    else:
        url = f"sqlite+aiosqlite:///{Path('/nonexistent-dir') / 'sessions.db'}"
        cause = "OperationalError"
    async with sql_target.open(url, schema=False) as backend:
        with pytest.raises(StoreUnavailableError) as caught:
            await backend.read(b"x" * 32)
    message = str(caught.value)
    assert cause in message, message
    assert message.count(":") >= 2  # the cause's own first line follows its type


async def test_timestamps_out_of_range_make_a_row_unreadable_and_unlisted(
    sql_backend: SqlBackend, clock: FakeClock
) -> None:
    good, bad = b"g" * 32, b"b" * 32
    assert await sql_backend.create(good, record(principal="alice", authenticated_at=NOW))
    raw = {
        "id_hash": bad,
        "data": b"{}",
        "version": 1,
        "principal": "alice",
        "created_at": NOW,
        "expires_at": None,
    }
    async with sql_backend.engine.begin() as conn:
        # Written behind the backend's back: microseconds far past the year 9999.
        await conn.execute(insert(sql_backend.table), [raw])
        await conn.exec_driver_sql(
            f"UPDATE {sql_backend.table.name} SET created_at = {2**62} WHERE principal = 'alice'"
            " AND expires_at IS NULL"
        )
    with pytest.raises(UnreadableRecordError):
        await sql_backend.read(bad)
    assert await sql_backend.read(good) is not None
    listed = await sql_backend.list_by_principal("alice", live_at=NOW, created_after=None, limit=10)
    assert [row.id_hash for row in listed] == [good]


async def test_no_error_text_carries_parameters(sql_target: SqlTarget, clock: FakeClock) -> None:
    # On an engine that does not hide parameters too: the library chains the driver's
    # error, never SQLAlchemy's wrapper, whose text lists the parameters.
    marker = "parameter-marker-4711"
    async with sql_target.url() as url:
        engine = create_engine(url, hide_parameters=False)
        backend = SqlBackend(
            engine, table_name=unique_name("absent"), execution=sql_target.execution
        )
        try:
            store = SessionStore(Cart, backend, clock=clock)
            session = store.new(Cart(items=[marker]))
            with pytest.raises(StoreUnavailableError) as caught:
                await store.save(session)
            text = full_text(caught.value)
            assert marker not in text
            assert "[parameters:" not in text  # SQLAlchemy's listing of them
        finally:
            await engine.dispose()
    async with sql_target.open() as owned:
        assert owned.engine.sync_engine.hide_parameters


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.sql(database="sqlite")
@pytest.mark.usefixtures("umask_022")
async def test_the_sqlite_file_and_its_wal_are_the_owners_alone(
    sql_target: SqlTarget, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "sessions.db"
    async with sql_target.open(f"sqlite+aiosqlite:///{path}") as backend:
        store = SessionStore(Cart, backend, clock=clock)
        assert isinstance(await store.save(store.new(Cart(items=["1"]))), SetCookie)
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(file.exists() for file in files)
        assert [stat.S_IMODE(file.stat().st_mode) for file in files] == [0o600] * 3
