"""The scheduler tells when the purge falls behind: one WARNING and the
``typed_session.purge.behind`` gauge, on SQLite and PostgreSQL, with the real OpenTelemetry
SDK (its in-memory reader) and a hand-driven clock.

A pass purges what expired between the previous pass's cutoff and its own; one that takes
longer than that span leaves more for the next. `SlowPurge` makes each pass take as long as
the test says, on the store's fake clock, so nothing waits for real time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import anyio
import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.purge_support import SteppedSleep, insert_rows, rows
from tests.test_telemetry import Otel, otel  # noqa: F401 - the SDK fixture
from typed_session_sql import PurgeScheduler, SessionStore, SqlBackend
from typed_session_sql.scheduler import BEHIND_AFTER

pytestmark = [pytest.mark.anyio, pytest.mark.sql(database=["sqlite", "postgres"])]

EVERY = timedelta(minutes=1)


class SlowPurge(RecordingBackend):
    """Purges for real, then moves the store's clock by ``seconds`` per batch."""

    def __init__(self, inner: SqlBackend, clock: FakeClock) -> None:
        super().__init__(inner)
        self.clock = clock
        self.seconds = 1.0

    async def purge(self, now: datetime, batch_size: int) -> int:
        removed = await self.inner.purge(now, batch_size)
        self.clock.advance(timedelta(seconds=self.seconds))
        return removed


def behind_gauge(telemetry: Otel) -> list[int]:
    return [value for _, value in telemetry.points().get("typed_session.purge.behind", [])]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "falls behind" in r.getMessage()
    ]


async def test_one_warning_when_passes_fall_behind_and_one_more_after_a_recovery(
    sql_backend: SqlBackend,
    clock: FakeClock,
    otel: Otel,  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="typed_session_sql")
    slow = SlowPurge(sql_backend, clock)
    store = SessionStore(dict, slow, clock=clock)
    sleep = SteppedSleep(clock)
    # rng 0.5: every wait is exactly EVERY; unpaced, so a pass sleeps only between passes.
    scheduler = PurgeScheduler(
        store, every=EVERY, first_delay=timedelta(0), sleep=sleep, rng=lambda: 0.5, pacing=None
    )
    assert BEHIND_AFTER == 2
    # How long each pass takes, and what the scheduler should make of it: the span a pass
    # purges is the previous pass's duration plus the 60 s wait.
    plan = [
        (10, False),  # the first pass: nothing to judge by
        (65, False),  # 65 s for a span of 70 s: keeps up
        (200, False),  # 200 s > 125 s: slow, once
        (300, True),  # 300 s > 260 s: slow twice in a row: behind, one WARNING
        (400, True),  # 400 s > 360 s: still behind, no second WARNING
        (30, False),  # 30 s < 460 s: caught up
        (100, False),  # 100 s > 90 s: slow, once
        (200, True),  # 200 s > 160 s: behind again, a WARNING again
    ]
    seen: list[tuple[bool, list[int], int]] = []
    with anyio.fail_after(30):
        async with scheduler:
            for seconds, _ in plan:
                await insert_rows(sql_backend, rows(clock.now, expired=3))
                slow.seconds = seconds
                await sleep.step()  # the wait, then one pass
                seen.append((scheduler.behind, behind_gauge(otel), len(warnings_of(caplog))))
    assert [behind for behind, _, _ in seen] == [behind for _, behind in plan]
    # The gauge says the same from the second pass on (the first has no span to judge).
    assert [gauge for _, gauge, _ in seen] == [[]] + [[int(b)] for _, b in plan[1:]]
    assert [count for _, _, count in seen] == [0, 0, 0, 1, 1, 1, 1, 2]
    assert warnings_of(caplog)[0].startswith(
        "the purge falls behind: its last 2 passes each took longer than the span of "
        "expiries it purged (the last: 300.0 s for 260.0 s)"
    )
    assert any(r.getMessage() == "the purge keeps up again" for r in caplog.records)
    assert scheduler.passes == len(plan)
    assert scheduler.removed == 3 * len(plan)
