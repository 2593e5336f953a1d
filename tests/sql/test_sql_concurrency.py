"""Concurrent requests on real databases: no lost update, no resurrection, one rotation winner,
and several SQLite processes writing at once without "database is locked"."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.clock import FakeClock
from typed_session_sql import (
    SessionConflictError,
    SessionDeletedError,
    SessionStore,
    SetCookie,
    SqlBackend,
)

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Counter:
    count: int = 0
    tags: list[str] = field(default_factory=list)


@pytest.fixture
def store(sql_backend: SqlBackend, clock: FakeClock) -> SessionStore[Counter]:
    return SessionStore(Counter, sql_backend, clock=clock)


async def stored(store: SessionStore[Counter]) -> str:
    result = await store.save(store.new(Counter(tags=["start"])))
    assert isinstance(result, SetCookie)
    return result.value


async def outcomes(*saves: object) -> list[object]:
    return list(await asyncio.gather(*saves, return_exceptions=True))  # type: ignore[call-overload]


async def test_two_requests_changing_one_session_give_exactly_one_conflict(
    store: SessionStore[Counter],
) -> None:
    cookie = await stored(store)
    first, second = await store.load(cookie), await store.load(cookie)
    assert first is not None
    assert second is not None
    first.data.tags.append("first")  # changed in place, not through modify(): not replayable
    second.data.tags.append("second")
    results = await outcomes(store.save(first), store.save(second))
    conflicts = [r for r in results if isinstance(r, SessionConflictError)]
    assert len(conflicts) == 1
    final = await store.load(cookie)
    assert final is not None
    assert final.data.tags in (["start", "first"], ["start", "second"])


async def test_fifty_concurrent_modify_increments_are_all_kept(
    store: SessionStore[Counter],
) -> None:
    cookie = await stored(store)

    async def increment() -> None:
        session = await store.load(cookie)
        assert session is not None

        def bump(data: Counter) -> None:
            data.count += 1

        session.modify(bump)
        await store.save(session)

    # 50 tasks share the engine's pool: several connections race on one row.
    await asyncio.gather(*(increment() for _ in range(50)))
    final = await store.load(cookie)
    assert final is not None
    assert final.data.count == 50


async def test_a_save_racing_a_delete_never_brings_the_session_back(
    store: SessionStore[Counter],
) -> None:
    for _ in range(5):
        cookie = await stored(store)
        writer, logout = await store.load(cookie), await store.load(cookie)
        assert writer is not None
        assert logout is not None
        writer.data.tags.append("late write")
        logout.delete()
        results = await outcomes(store.save(writer), store.save(logout))
        assert all(
            not isinstance(r, BaseException) or isinstance(r, SessionDeletedError) for r in results
        ), results
        assert await store.load(cookie) is None


async def test_a_rotation_racing_a_save_has_exactly_one_winner(
    store: SessionStore[Counter],
) -> None:
    cookie = await stored(store)
    rotating, writing = await store.load(cookie), await store.load(cookie)
    assert rotating is not None
    assert writing is not None
    rotating.regenerate()
    rotating.data.tags.append("signed in")
    writing.data.tags.append("other")
    rotated, written = await outcomes(store.save(rotating), store.save(writing))
    winners = [r for r in (rotated, written) if not isinstance(r, BaseException)]
    assert len(winners) == 1
    old = await store.load(cookie)
    if isinstance(rotated, SetCookie):  # the rotation won: the old id is dead
        assert isinstance(written, SessionConflictError)
        assert old is None
        new = await store.load(rotated.value)
        assert new is not None
        assert new.data.tags == ["start", "signed in"]
    else:
        assert isinstance(rotated, SessionConflictError)
        assert old is not None
        assert old.data.tags == ["start", "other"]


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from dataclasses import dataclass
    from typed_session_sql import SessionStore, SqlBackend

    @dataclass
    class Counter:
        count: int = 0

    async def main(url: str) -> None:
        async with SqlBackend.from_url(url) as backend:
            store = SessionStore(Counter, backend)
            for _ in range(40):
                result = await store.save(store.new(Counter(count=1)))
                session = await store.load(result.value)
                session.modify(lambda data: setattr(data, "count", data.count + 1))
                await store.save(session)
                session.delete()
                await store.save(session)
            await store.save(store.new(Counter(count=7)))

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_sqlite_processes_writing_at_once_never_see_database_is_locked(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    async with SqlBackend.from_url(url) as backend:
        await backend.create_schema()
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, url, cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(6)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    errors = [stderr.decode() for _, stderr in outputs]
    assert [p.returncode for p in processes] == [0] * 6, "\n".join(errors)
    assert not any("locked" in e for e in errors)
    async with SqlBackend.from_url(url) as backend, backend.engine.connect() as conn:
        rows = (await conn.execute(select(func.count()).select_from(backend.table))).scalar()
    assert rows == 6  # each process's last, undeleted session
