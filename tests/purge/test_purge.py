"""Purging on the real databases: SQLite files and the PostgreSQL server.

Expiry is judged by an injected :class:`FakeClock`; rows are bulk-inserted with one
executemany, not saved one by one.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import select, text

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.purge_support import (
    Events,
    FlakyBackend,
    SteppedSleep,
    StuckBackend,
    count_rows,
    insert_rows,
    rows,
)
from tests.sql_backends import SqlTarget, statements_seen
from typed_session_sql import (
    MemoryBackend,
    PurgeScheduler,
    SessionStore,
    SqlBackend,
    StoreUnavailableError,
)
from typed_session_sql.backend import Backend, ForwardingBackend, Record, stats_of
from typed_session_sql.purge import PurgeProgress, purge_pass

pytestmark = pytest.mark.anyio

EXPIRED, LIVE, FOREVER, BATCH = 20_000, 1_000, 25, 1_000


def same_table(target: SqlTarget, backend: SqlBackend) -> AbstractAsyncContextManager[SqlBackend]:
    """Another backend, with its own engine (another app instance), on the same table."""
    url = backend.engine.url.render_as_string(hide_password=False)
    return target.open(url, schema=False, table_name=backend.table.name)


async def test_removes_exactly_the_expired_rows_in_the_expected_batches(
    sql_backend: SqlBackend, clock: FakeClock
) -> None:
    await insert_rows(sql_backend, rows(clock.now, expired=EXPIRED, live=LIVE, forever=FOREVER))
    events = Events()
    store = SessionStore(dict, sql_backend, clock=clock, on_event=events)
    progress: list[PurgeProgress] = []
    with statements_seen(sql_backend) as seen:
        removed = await store.purge_expired(batch_size=BATCH, on_batch=progress.append)
    assert removed == EXPIRED
    # 20 full batches, then one that finds nothing and ends the pass; one statement each.
    assert len(progress) == EXPIRED // BATCH + 1
    assert seen.count("DELETE") == len(progress)
    assert [p.removed for p in progress] == [BATCH] * (EXPIRED // BATCH) + [0]
    assert progress[-1].total == EXPIRED
    async with sql_backend.engine.connect() as conn:
        left = (await conn.execute(select(sql_backend.table.c.id_hash))).scalars().all()
    assert sorted({bytes(key)[:1] for key in left}) == [b"f", b"l"]  # live, never-expiring
    assert len(left) == LIVE + FOREVER
    assert sum(e.count for e in events.seen if e.kind == "purged") == EXPIRED
    assert events.kinds()[-1] == "purge_finished"


async def test_rows_expiring_exactly_now_go_and_a_microsecond_later_stay(
    sql_backend: SqlBackend, clock: FakeClock
) -> None:
    now, created = clock.now, clock.now - timedelta(hours=1)
    at_now = Record(b"{}", 1, created, now)
    later = Record(b"{}", 1, created, now + timedelta(microseconds=1))
    await insert_rows(sql_backend, [(b"a" * 32, at_now), (b"b" * 32, later)])
    store = SessionStore(dict, sql_backend, clock=clock)
    assert await store.purge_expired() == 1
    clock.advance(timedelta(microseconds=1))
    assert await store.purge_expired() == 1


@pytest.mark.parametrize("exclusive", [True, False], ids=["advisory-lock", "skip-locked-only"])
async def test_two_purgers_at_once_neither_fails_nor_double_counts(
    sql_target: SqlTarget, sql_backend: SqlBackend, clock: FakeClock, exclusive: bool
) -> None:
    await insert_rows(sql_backend, rows(clock.now, expired=EXPIRED, live=LIVE))
    removed: list[int] = []

    async def purge(backend: SqlBackend) -> None:
        removed.append((await purge_pass(backend, clock(), 500, exclusive=exclusive)).removed)

    async with same_table(sql_target, sql_backend) as other, anyio.create_task_group() as tg:
        tg.start_soon(purge, sql_backend)
        tg.start_soon(purge, other)
    assert len(removed) == 2
    assert sum(removed) == EXPIRED
    assert await count_rows(sql_backend) == LIVE


@pytest.mark.sql(database=["postgres", "mariadb"])  # pg_try_advisory_lock, GET_LOCK
async def test_a_pass_is_skipped_while_another_instance_holds_the_lock(
    sql_target: SqlTarget, sql_backend: SqlBackend, clock: FakeClock
) -> None:
    backend = sql_backend
    async with same_table(sql_target, backend) as other:
        await insert_rows(backend, rows(clock.now, expired=30))
        events = Events()
        store = SessionStore(dict, other, clock=clock, on_event=events)
        async with backend.purge_lock() as got:
            assert got
            result = await purge_pass(other, clock(), on_event=events)
            assert result.skipped
            assert result.removed == 0
            assert await store.purge_expired() == 0
            assert await count_rows(backend) == 30
        assert events.kinds() == ["purge_skipped", "purge_skipped"]
        # released at the end of the holder's pass: now the other instance purges
        assert await store.purge_expired() == 30


@pytest.mark.sql(database=["postgres", "mariadb"])
async def test_a_wrapped_backend_keeps_the_purge_lock(
    sql_target: SqlTarget, sql_backend: SqlBackend, clock: FakeClock
) -> None:
    # The contract suite's recorder, and an application's decorator written with the one
    # hook: both used to lose the lock, so two purgers worked at once.
    class Timed(ForwardingBackend):
        calls = 0

        async def _call(self, operation: str, call: Any) -> Any:
            Timed.calls += 1
            return await call()

    async with same_table(sql_target, sql_backend) as other:
        await insert_rows(sql_backend, rows(clock.now, expired=30))
        for wrapped in (RecordingBackend(other), Timed(RecordingBackend(other))):
            async with sql_backend.purge_lock() as got:
                assert got
                assert (await purge_pass(wrapped, clock())).skipped
            async with wrapped.purge_lock() as got:
                assert got
                async with sql_backend.purge_lock() as again:
                    assert not again
        assert Timed.calls == 0  # skipped passes: no batch ran
        assert (await purge_pass(Timed(other), clock())).removed == 30


@pytest.mark.sql(database="sqlite")
async def test_sqlite_takes_no_lock(sql_backend: SqlBackend) -> None:
    async with (
        sql_backend.purge_lock() as got,
        sql_backend.purge_lock() as again,
    ):
        assert got
        assert again  # single host: SQLite's own write lock serialises the statements


@pytest.mark.sql(database="postgres")
async def test_postgres_stop_during_a_blocked_batch_is_prompt_and_releases_the_lock(
    sql_target: SqlTarget, sql_backend: SqlBackend, clock: FakeClock
) -> None:
    backend = sql_backend
    async with same_table(sql_target, backend) as other:
        await insert_rows(backend, rows(clock.now, expired=3_000))
        tracked = _Announcing(backend)
        store = SessionStore(dict, tracked, clock=clock)
        table = backend.engine.dialect.identifier_preparer.format_table(backend.table)
        async with other.engine.connect() as blocker:
            await blocker.execute(text("BEGIN"))
            # Even SKIP LOCKED waits for a table lock: the batch statement hangs.
            await blocker.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            with anyio.fail_after(10):
                async with PurgeScheduler(store, first_delay=timedelta(0), batch_size=1000):
                    await tracked.entered.wait()
                    await _wait_until_blocked(other)
            await blocker.execute(text("ROLLBACK"))
        assert await count_rows(other) == 3_000  # the cancelled statement did nothing
        async with other.purge_lock() as got:
            assert got  # the purge lock went with the cancelled pass
        # Once in about ten loaded runs, a connection of the cancelled pass was closed by
        # asyncpg in the background after it went back to the pool, and the next raw use of
        # it failed ("connection is closed"; the store's statements retry such a connection,
        # the purge lock's checkout does not). That race wants a test of its own; this one
        # is about a prompt stop and the lock, so the pool starts afresh.
        await backend.engine.dispose()
        assert await store.purge_expired() == 3_000  # and the backend still works


class _Announcing(StuckBackend):
    """Runs the real purge statement, announcing when it starts."""

    async def purge(self, now: Any, batch_size: int) -> int:
        self.entered.set()
        return await self.inner.purge(now, batch_size)


async def _wait_until_blocked(observer: SqlBackend) -> None:
    """Until our DELETE waits on a lock in pg_stat_activity (a state, not a time)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM ' || :table || '%'"
    )
    while True:
        async with observer.engine.connect() as conn:
            if (await conn.execute(query, {"table": observer.table.name})).scalar_one():
                return
        await anyio.lowlevel.checkpoint()


async def test_purge_failure_raises_store_unavailable_and_emits_an_event(
    clock: FakeClock,
) -> None:
    events = Events()
    async with SqlBackend.from_url("postgresql+asyncpg://root@127.0.0.1:1/test") as down:
        store = SessionStore(dict, down, clock=clock, on_event=events)
        with pytest.raises(StoreUnavailableError):
            await store.purge_expired()
    assert events.kinds() == ["purge_failed", "store_unavailable"]
    assert "ConnectionRefusedError" in events.seen[0].detail


async def test_table_stats_counts_and_sizes(sql_backend: SqlBackend, clock: FakeClock) -> None:
    await insert_rows(sql_backend, rows(clock.now, expired=40, live=7, forever=3))
    stats = await sql_backend.stats(clock.now)
    assert (stats.live, stats.never_expire, stats.expired) == (10, 3, 40)
    assert stats.oldest_expiry == clock.now - timedelta(seconds=40)
    assert stats.size_bytes is not None
    assert stats.size_bytes > 0
    await SessionStore(dict, sql_backend, clock=clock).purge_expired()
    stats = await sql_backend.stats(clock.now)
    assert (stats.live, stats.expired) == (10, 0)
    assert stats.oldest_expiry == clock.now + timedelta(hours=1)


async def test_memory_backend_purges_the_same_way(clock: FakeClock) -> None:
    memory = MemoryBackend()
    await insert_rows(memory, rows(clock.now, expired=2_500, live=10, forever=2))
    result = await purge_pass(memory, clock(), 1_000)
    assert (result.removed, result.batches, result.skipped) == (2_500, 3, False)
    assert len(memory.rows) == 12


async def test_scheduler_on_a_failing_database_keeps_going_and_purges_once_it_is_back(
    sql_backend: SqlBackend, clock: FakeClock
) -> None:
    await insert_rows(sql_backend, rows(clock.now, expired=2_500, live=5))
    flaky = FlakyBackend(sql_backend, failures=3)  # an outage of three attempts
    sleep = SteppedSleep(clock)
    store = SessionStore(dict, flaky, clock=clock)
    # Unpaced: a paced pass would pause between its batches on the stepped sleep too.
    scheduler = PurgeScheduler(
        store, first_delay=timedelta(0), sleep=sleep, rng=lambda: 0.5, pacing=None
    )
    with anyio.fail_after(30):
        async with scheduler:
            for _ in range(3):
                await sleep.step()
            assert await count_rows(sql_backend) == 2_505
            await sleep.step()
    assert await count_rows(sql_backend) == 5
    assert (scheduler.failures, scheduler.passes, scheduler.removed) == (3, 1, 2_500)


@pytest.mark.sql(execution="driver")
async def test_lock_and_stats_are_capabilities_every_backend_here_offers(
    sql_backend: SqlBackend, clock: FakeClock
) -> None:
    memory = MemoryBackend()
    await insert_rows(memory, rows(clock.now, expired=4, live=2, forever=1))
    for backend in (memory, sql_backend):
        assert stats_of(backend) is backend
        assert stats_of(RecordingBackend(backend)) is not None  # a wrapper keeps them
    async with memory.purge_lock() as got:
        assert got
    stats = await RecordingBackend(memory).stats(clock.now)
    assert (stats.live, stats.never_expire, stats.expired) == (3, 1, 4)
    assert stats.oldest_expiry == clock.now - timedelta(seconds=4)
    assert stats.size_bytes is None
    assert await stats_of(StuckBackend(memory)).stats(clock.now) == stats  # type: ignore[union-attr]


async def test_a_wrapper_reports_no_stats_its_backend_lacks(clock: FakeClock) -> None:
    class Uncounted(MemoryBackend):  # stands for a backend without statistics
        stats = None  # type: ignore[assignment]

    bare: Backend = Uncounted()
    assert stats_of(bare) is None
    wrapped = RecordingBackend(bare)
    assert stats_of(wrapped) is None
    with pytest.raises(TypeError, match="reports no statistics"):
        await wrapped.stats(clock.now)
