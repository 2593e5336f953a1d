"""An expiry the application set is a cap: automatic renewal never extends it, on any
backend, whatever request loads the session next. Only the application moves it again.

The policy is the default one: 30 minutes idle, so a load renews once 3 minutes have passed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.contract import loaded_twice, must_load, stored
from tests.models import Cart
from typed_session_sql import DoNothing, SessionStore, SetCookie
from typed_session_sql.backend import Record

pytestmark = pytest.mark.anyio

MINUTE = timedelta(minutes=1)
IDLE = timedelta(minutes=30)


async def pinned(store: SessionStore[Cart], duration: timedelta) -> tuple[str, datetime]:
    """A stored session the application gave ``duration`` to live; its cookie and deadline."""
    value = await stored(store)
    session = await must_load(store, value)
    session.expire_in(duration)
    await store.save(session)
    assert session.expires_at is not None
    return value, session.expires_at


async def test_a_short_expiry_is_not_undone_by_a_later_renewal(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    session = await must_load(store, value)
    session.expire_in(MINUTE)  # say, a step-up that must not outlive a minute
    deadline = clock.now + MINUTE
    assert await store.save(session) == SetCookie(value, deadline, value_changed=False)

    clock.advance(timedelta(seconds=50))  # a renewal would be due now (3 minutes' worth)
    again = await must_load(store, value)
    assert again.expiry_pinned
    assert again.expires_at == deadline
    backend.kinds.clear()
    assert await store.save(again) == DoNothing()
    assert backend.kinds == []
    clock.advance(timedelta(seconds=10))
    assert await store.load(value) is None


async def test_a_long_pinned_expiry_replaces_the_idle_bound_and_renewal(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value, deadline = await pinned(store, timedelta(hours=2))
    assert deadline == clock.now + timedelta(hours=2)
    clock.advance(timedelta(hours=1))  # idle for longer than the idle bound
    again = await must_load(store, value)
    assert again.expires_at == deadline
    assert await store.save(again) == DoNothing()


async def test_follow_policy_unpins_and_renewal_resumes(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    session = await must_load(store, value)
    session.expire_in(MINUTE)
    await store.save(session)
    session.follow_policy()
    assert not session.expiry_pinned
    assert session.expires_at == clock.now + IDLE
    await store.save(session)

    clock.advance(timedelta(minutes=10))
    again = await must_load(store, value)
    assert not again.expiry_pinned
    assert again.expires_at == clock.now + IDLE  # renewed: idle window from now
    backend.kinds.clear()
    assert await store.save(again) == SetCookie(value, clock.now + IDLE, value_changed=False)
    assert backend.kinds == ["touch"]


async def test_a_pinned_expiry_survives_data_changes_and_sign_in(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value, deadline = await pinned(store, timedelta(minutes=5))
    clock.advance(MINUTE)
    again = await must_load(store, value)
    again.data.items.append(2)
    again.sign_in("alice")
    result = await store.save(again)
    assert isinstance(result, SetCookie)
    assert result.expires_at == deadline
    clock.advance(MINUTE)
    latest = await must_load(store, result.value)
    assert (latest.expiry_pinned, latest.expires_at) == (True, deadline)


async def test_a_replayed_modify_keeps_a_cap_another_request_pinned(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    clock.advance(timedelta(minutes=10))
    renewer, shortener = await loaded_twice(store, value)
    assert renewer.expires_at == clock.now + IDLE  # a renewal rides along with its write
    renewer.modify(lambda cart: cart.items.append(2))
    shortener.expire_in(MINUTE)
    await store.save(shortener)

    await store.save(renewer)  # loses the race, replays on the pinned row
    latest = await must_load(store, value)
    assert latest.data.items == [1, 2]
    assert (latest.expiry_pinned, latest.expires_at) == (True, clock.now + MINUTE)


async def test_the_backend_never_touches_a_pinned_row(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    now = clock.now
    key = b"p" * 32
    row = Record(b"{}", 1, now, now + MINUTE, expiry_pinned=True)
    assert await backend.create(key, row)
    assert not await backend.touch(key, 1, now + IDLE, now)
    assert await backend.read(key) == row


async def test_a_replayed_modify_keeps_an_unpinning_another_request_made(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value, _ = await pinned(store, timedelta(hours=2))
    modifier, unpinner = await loaded_twice(store, value)
    modifier.modify(lambda cart: cart.items.append(2))
    unpinner.follow_policy()
    await store.save(unpinner)

    await store.save(modifier)  # loses the race, replays on the unpinned row
    latest = await must_load(store, value)
    assert latest.data.items == [1, 2]
    assert (latest.expiry_pinned, latest.expires_at) == (False, clock.now + IDLE)
