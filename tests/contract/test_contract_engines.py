"""The contract's slice for every way an engine is made and every driver setting.

The whole contract suite runs on engines the application made where it costs least
(SQLite: ``APP_ENGINE_TARGETS`` in tests/sql_backends.py). Here, on the servers, the part
of it the holes of issue 16 came through runs for each combination that costs more: how the
engine was made (the library's ``from_url``; the app's ``create_async_engine`` with its
defaults, with ``AUTOCOMMIT``, with a ``NullPool``) x prepared statements on and off, and on
MariaDB every charset asyncmy connects with x ``NO_BACKSLASH_ESCAPES``, on the text protocol,
where values are inlined in the statement.

The slice: every write reported done is committed (seen from another engine); principals
holding quotes and SQL reach no one else's sessions; session data holding SQL stays data;
id hashes of any bytes round-trip; nothing of them reaches a log.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import make_url

from tests.sql_backends import Made, SqlTarget
from tests.support.names import unique_name
from typed_session_sql import SqlBackend
from typed_session_sql.backend import Record, SignIn, Update, UpdateOutcome

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)

MADE: tuple[Made, ...] = ("library", "app", "app-autocommit", "app-nullpool")

# Every charset asyncmy connects with to MariaDB: the 9 others it names have no Python
# codec (LookupError at connect), and MariaDB refuses gb18030 (1115).
ASYNCMY_CHARSETS = (
    *("ascii", "big5", "cp1250", "cp1251", "cp1256", "cp1257", "cp850", "cp852", "cp866"),
    *("cp932", "euckr", "gb2312", "gbk", "greek", "hebrew", "koi8r", "koi8u", "latin1"),
    *("latin2", "latin5", "latin7", "macroman", "sjis", "tis620", "ujis", "utf8", "utf8mb4"),
)
ATTACK_CHARSETS = ("gbk", "big5", "sjis", "cp932", "utf8mb4")
NO_BACKSLASH_ESCAPES = (
    ("init_command", "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')"),
)


def _marks(database: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.mariadb] if database == "mariadb" else [pytest.mark.postgres]


def _param(target: SqlTarget) -> object:
    ident = target.id.replace(NO_BACKSLASH_ESCAPES[0][1], "NO_BACKSLASH_ESCAPES")
    return pytest.param(target, id=ident, marks=_marks(target.database))


# Each way of making an engine x prepared statements on and off, on both servers: the
# whole slice, on a fresh table.
ENGINE_TARGETS = [
    _param(SqlTarget(database, "auto", made, prepared))
    for database in ("postgres", "mariadb")
    for made in MADE
    for prepared in (True, False)
]
# Every charset x NO_BACKSLASH_ESCAPES on the text protocol (prepared_statements=false: the
# driver executor); the attack's charsets and the default also on an engine the app made
# (asyncmy's default is the text protocol; SQLAlchemy's execution) and on the binary
# protocol. The injection part of the slice, on one table for them all.
CHARSET_AXES: tuple[tuple[Made, bool | None, tuple[str, ...]], ...] = (
    ("library", False, ASYNCMY_CHARSETS),
    ("app", None, ATTACK_CHARSETS),
    ("library", True, ATTACK_CHARSETS),
)
CHARSET_TARGETS = [
    *(
        _param(SqlTarget("mariadb", "auto", made, prepared, f"charset={charset}", args))
        for made, prepared, charsets in CHARSET_AXES
        for charset in charsets
        for args in ((), NO_BACKSLASH_ESCAPES)
    ),
]

# A character whose UTF-8 bytes end in a lead byte of a multibyte charset (gbk and big5:
# 0x81-0xFE; sjis and cp932: 0x81-0x9F, 0xE0-0xFC). A value holding it, then a quote, was
# inlined as ``...<lead byte>\\'``: the server read the lead byte and the backslash as one
# character, and the quote ended the literal, so what followed it was SQL.
SWALLOWERS = ("\u2026", "\u3042", "\u5341", "a\u5341")
ALICE = "alice"
ALICE_HEX = "0x" + ALICE.encode().hex()  # a literal needing no quote to inject

# Principals that, inlined, would match every session: `sessions_of`/`revoke_all` of them
# listed and revoked everyone's.
PRINCIPALS = [
    "O'Brien",
    "' OR 1=1 #",
    "\\' OR 1=1 -- ",
    *(f"{swallower}' OR 1=1 #" for swallower in SWALLOWERS),
]
# Session data that, inlined in the INSERT or the UPDATE, would sign the session in as alice
# (or every session, the UPDATE's WHERE commented out).
DATA = [
    b"\x00'\\\"\x1a%_\xff\x81\\'",
    *(
        f'{{"note": "{swallower}{tail}"}}'.encode()
        for swallower in SWALLOWERS
        for tail in (
            f"', NULL, 0, 1, {ALICE_HEX}, 0) #",
            f"', principal = {ALICE_HEX} #",
        )
    ),
]
# Id hashes of the bytes escaping handles: quote, backslash, NUL, lead bytes before them.
IDS = [
    b"'" * 32,
    b"\\" * 32,
    b"\x00" * 32,
    b"\x81\\'\xa6\\'\xe3\x81\x82'" * 3 + b"\xfe\\",
    bytes(range(224, 256)),
]


def test_the_payloads_really_swallow_the_backslash_under_the_attacks_charsets() -> None:
    # The server's lexer reads the inlined bytes as Python's codecs for the same charsets
    # do: for each charset the issue names, some principal and some data end a literal.
    for charset in ("gbk", "big5", "sjis", "cp932"):
        for values in ([value.encode() for value in PRINCIPALS], DATA):
            assert any(_ends_the_literal(value, charset) for value in values), charset


def _ends_the_literal(value: bytes, charset: str) -> bool:
    """Whether ``value``, inlined with backslash escapes, has a quote no backslash escapes
    once read in ``charset``."""
    inlined = value.replace(b"\\", b"\\\\").replace(b"'", b"\\'")
    return re.search(r"(?<!\\)'", inlined.decode(charset, errors="replace")) is not None


@pytest.mark.parametrize("target", ENGINE_TARGETS)
async def test_what_is_reported_done_is_committed_and_values_stay_values(
    target: SqlTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with target.open() as backend, observer(backend) as other:
        await writes_are_committed(backend, other)
        await principals_reach_no_one_else(backend, other)
        await data_stays_data(backend, other)
        await ids_of_any_bytes_round_trip(backend, other)
    assert_no_value_in(caplog.text)


@pytest.fixture(scope="module")
def charset_table() -> Iterator[str]:
    """One MariaDB table for every charset's run (each leaves it empty): a table's DDL costs
    more than the statements of the slice."""
    name = unique_name("sessions")

    async def schema(create: bool) -> None:
        async with (
            SqlTarget("mariadb", "auto").open(table_name=name, schema=False) as backend,
            backend.engine.begin() as conn,
        ):
            build = backend.metadata.create_all if create else backend.metadata.drop_all
            await conn.run_sync(build)

    asyncio.run(schema(create=True))
    try:
        yield name
    finally:
        asyncio.run(schema(create=False))


@pytest.mark.parametrize("target", CHARSET_TARGETS)
async def test_no_charset_or_sql_mode_lets_a_value_out_of_its_literal(
    target: SqlTarget, charset_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        target.open(table_name=charset_table, schema=False) as backend,
        observer(backend) as other,
    ):
        try:
            await principals_reach_no_one_else(backend, other)
            await data_stays_data(backend, other)
        finally:
            await other.clear()
    assert_no_value_in(caplog.text)


def assert_no_value_in(logged: str) -> None:
    for secret in [*IDS, *DATA, *(p.encode() for p in PRINCIPALS if not p.isascii())]:
        assert secret.hex() not in logged.lower()
        assert repr(secret)[2:-1] not in logged


@asynccontextmanager
async def observer(backend: SqlBackend) -> AsyncIterator[SqlBackend]:
    """A backend of its own (another engine, its own connections) on ``backend``'s table:
    what it reads was committed."""
    url = backend.engine.url.set(query={})
    if backend.engine.dialect.name == "sqlite":
        url = make_url(f"sqlite+aiosqlite:///{backend.engine.url.database}")
    other = SqlBackend.from_url(
        url.render_as_string(hide_password=False),
        table_name=backend.table.name,
        held_connections=0,
    )
    try:
        yield other
    finally:
        await other.dispose()


def record(principal: str | None = None, data: bytes = b"{}", version: int = 1) -> Record:
    return Record(data, version, NOW, NOW + HOUR, principal, NOW if principal else None)


async def sessions_of(backend: SqlBackend, principal: str) -> int:
    rows = await backend.list_by_principal(principal, live_at=NOW, created_after=None, limit=50)
    return len(rows)


async def writes_are_committed(backend: SqlBackend, other: SqlBackend) -> None:
    ids = [bytes([n]) * 32 for n in range(1, 4)]
    for id_hash in ids:
        assert await backend.create(id_hash, record(ALICE))
    assert await sessions_of(other, ALICE) == 3, "a create reported done was rolled back"
    change = Update(ids[0], 1, b'{"n": 1}', NOW + 2 * HOUR, new_id_hash=b"\x09" * 32)
    assert await backend.update(change) is UpdateOutcome.UPDATED
    moved = await other.read(b"\x09" * 32)
    assert moved is not None
    assert moved.data == b'{"n": 1}', "an update was rolled back"
    assert await backend.touch(ids[1], 1, NOW + 3 * HOUR, NOW)
    touched = await other.read(ids[1])
    assert touched is not None
    assert touched.expires_at == NOW + 3 * HOUR
    assert await backend.delete(ids[2])
    assert await other.read(ids[2]) is None, "a delete was rolled back"
    assert await backend.delete_by_principal(ALICE) == 2
    assert await sessions_of(other, ALICE) == 0, "revoke_all was rolled back"
    assert await backend.create(b"\x08" * 32, Record(b"{}", 1, NOW - 2 * HOUR, NOW - HOUR))
    assert await backend.purge(NOW, 10) == 1
    assert await other.read(b"\x08" * 32) is None, "a purge was rolled back"


async def principals_reach_no_one_else(backend: SqlBackend, other: SqlBackend) -> None:
    for n, principal in enumerate([ALICE, ALICE, "bob"]):
        assert await backend.create(bytes([0x10 + n]) * 32, record(principal))
    for n, principal in enumerate(PRINCIPALS):
        assert await sessions_of(backend, principal) == 0, principal
        assert await backend.delete_by_principal(principal) == 0, principal
        id_hash = bytes([0x20 + n]) * 32
        assert await backend.create(id_hash, record(principal))
        stored = await other.read(id_hash)
        assert stored is not None
        assert stored.principal == principal
        assert await sessions_of(backend, principal) == 1, principal
        assert await backend.delete_by_principal(principal, keep=id_hash) == 0, principal
        assert await backend.delete_by_principal(principal) == 1, principal
    assert (await sessions_of(other, ALICE), await sessions_of(other, "bob")) == (2, 1)
    signed_in = Update(b"\x12" * 32, 1, b"{}", NOW + HOUR, sign_in=SignIn(PRINCIPALS[-1], NOW))
    assert await backend.update(signed_in) is UpdateOutcome.UPDATED
    assert await backend.delete_by_principal(ALICE) == 2
    assert await sessions_of(other, "bob") == 0
    assert await sessions_of(other, PRINCIPALS[-1]) == 1


async def data_stays_data(backend: SqlBackend, other: SqlBackend) -> None:
    for n, data in enumerate(DATA):
        id_hash = bytes([0x40 + n]) * 32
        assert await backend.create(id_hash, record(data=data))
        stored = await other.read(id_hash)
        assert stored is not None
        assert (stored.data, stored.principal) == (data, None)
        assert await backend.update(Update(id_hash, 1, data, NOW + HOUR)) is UpdateOutcome.UPDATED
        stored = await other.read(id_hash)
        assert stored is not None
        assert (stored.data, stored.principal) == (data, None)
        assert stored.version == 2
    assert await sessions_of(other, ALICE) == 0


async def ids_of_any_bytes_round_trip(backend: SqlBackend, other: SqlBackend) -> None:
    for id_hash in IDS:
        assert await backend.create(id_hash, record("carol", data=id_hash))
        stored = await other.read(id_hash)
        assert stored is not None
        assert stored.data == id_hash
    assert await backend.delete_by_principal("carol", only=IDS[0]) == 1
    assert await backend.delete_by_principal("carol", keep=IDS[1]) == len(IDS) - 2
    assert [await other.read(id_hash) is not None for id_hash in IDS] == [
        False,
        True,
        *([False] * (len(IDS) - 2)),
    ]
