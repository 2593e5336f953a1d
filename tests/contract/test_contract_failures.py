"""A backend that fails: every failure leaving the store is reported once, where it happens.

Each store call that raises :class:`StoreUnavailableError` emits one ``store_unavailable``
event (``table_missing`` for a missing table) and so logs one line, at WARNING (ERROR),
naming the error and its cause by type and first line, and nothing secret. On an in-memory
backend made to fail, and on SQL backends whose database is not there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.backends import OutageMemoryBackend
from tests.clock import FakeClock
from tests.models import Cart
from tests.sql_backends import aiosqlite_threads_joined, require_postgres
from typed_session_sql import (
    EventKind,
    SessionEvent,
    SessionStore,
    SessionTableMissingError,
    SqlBackend,
    StoreUnavailableError,
    ids,
)
from typed_session_sql.backend import Backend

pytestmark = pytest.mark.anyio


FAILURE_KINDS = (EventKind.STORE_UNAVAILABLE, EventKind.TABLE_MISSING)

StoreCall = Callable[[SessionStore[Cart]], Awaitable[object]]


async def calls_of_every_kind(store: SessionStore[Cart]) -> tuple[list[StoreCall], list[str]]:
    """One store call for each kind of backend call, prepared while the backend still works,
    and the secrets (cookie values, handles) none of their reports may show."""
    signed = store.new(Cart(items=[1]))
    signed.sign_in("alice")
    result = await store.save(signed)
    value = getattr(result, "value", "")
    changed = await store.load(value)
    deleted = await store.load(value)
    assert changed is not None
    assert deleted is not None
    assert signed.handle is not None
    changed.data.items.append(2)
    deleted.delete()
    calls: list[StoreCall] = [
        lambda store: store.load(value),
        lambda store: store.save(store.new(Cart(items=[3]))),
        lambda store: store.save(changed),
        lambda store: store.save(deleted),
        lambda store: store.sessions_of("alice"),
        lambda store: store.revoke("alice", "ab" * 32),
        lambda store: store.revoke_all("alice"),
        lambda store: store.purge_expired(),
        lambda store: store.clear(),
    ]
    return calls, [value, signed.handle, signed.handle.encode().hex()]


@pytest.mark.parametrize(
    ("failure", "kind", "level"),
    [
        (StoreUnavailableError("store unavailable"), EventKind.STORE_UNAVAILABLE, "WARNING"),
        (SessionTableMissingError("no session table"), EventKind.TABLE_MISSING, "ERROR"),
        # A backend written by someone else that lets its driver's error out: the store's
        # boundary makes it an outage all the same (it used to escape as itself: a 500).
        (None, EventKind.STORE_UNAVAILABLE, "WARNING"),
    ],
    ids=["unavailable", "table-missing", "driver-error-let-out"],
)
async def test_every_failing_call_is_reported_once_with_its_cause(
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    failure: StoreUnavailableError | None,
    kind: EventKind,
    level: str,
) -> None:
    events: list[SessionEvent] = []
    backend = OutageMemoryBackend()
    store = SessionStore(Cart, backend, clock=clock, on_event=events.append)
    calls, secrets = await calls_of_every_kind(store)
    driver_error = ConnectionResetError("peer went away\nSELECT ... secret parameters")
    if failure is None:
        backend.failure = driver_error
    else:
        try:
            raise failure from driver_error
        except StoreUnavailableError as raised:
            backend.failure = raised
    expected = StoreUnavailableError if failure is None else type(failure)
    backend.down = True
    caplog.set_level(logging.DEBUG, logger="typed_session_sql")

    for call in calls:
        events.clear()
        caplog.clear()
        with pytest.raises(expected):
            await call(store)
        assert [event.kind for event in events if event.kind in FAILURE_KINDS] == [kind]
        (record,) = [record for record in caplog.records if record.levelno >= logging.WARNING]
        assert record.levelname == level
        message = record.getMessage()
        assert expected.__name__ in message
        assert "ConnectionResetError: peer went away" in message
        assert "secret parameters" not in message
        for secret in secrets:
            assert secret not in message
            assert secret not in repr(events)


@asynccontextmanager
async def unreachable_postgres() -> AsyncIterator[Backend]:
    url = make_url(require_postgres()).set(port=1)  # nothing listens: refused at once
    async with SqlBackend.from_url(url.render_as_string(hide_password=False)) as backend:
        yield backend


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
async def test_a_database_that_is_not_there_is_reported_once_per_call(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, tmp_path: Path, database: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="typed_session_sql")
    opened: AbstractAsyncContextManager[Backend] = unreachable_postgres()
    if database == "sqlite":
        opened = SqlBackend.from_url(f"sqlite+aiosqlite:///{tmp_path / 'nodir' / 'sessions.db'}")
    async with aiosqlite_threads_joined(), opened as backend:
        events: list[SessionEvent] = []
        store = SessionStore(Cart, backend, clock=clock, on_event=events.append)
        value = ids.new_cookie_value()
        calls: list[StoreCall] = [
            lambda store: store.load(value),
            lambda store: store.save(store.new(Cart(items=[1]))),
            lambda store: store.sessions_of("alice"),
            lambda store: store.revoke_all("alice"),
        ]
        for call in calls:
            events.clear()
            caplog.clear()
            with pytest.raises(StoreUnavailableError) as caught:
                await call(store)
            assert [event.kind for event in events] == [EventKind.STORE_UNAVAILABLE]
            (record,) = [record for record in caplog.records if record.levelno >= logging.WARNING]
            assert record.levelname == "WARNING"
            cause = caught.value.__cause__
            assert cause is not None
            assert type(cause).__name__ in record.getMessage()
            assert value not in record.getMessage()
            del caught
