"""Races between requests on one session, at the store: what the loser's save returns and
what is stored afterwards. Runs on every backend.

Each test loads the session in two "requests" before either saves, then saves the winner
first. The rule for the loser: never a ``SetCookie`` carrying an id that is dead by then
(it would overwrite the winner's cookie in the browser), and never a write over the
winner's.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.contract import cookie_of, loaded_twice, make_store, must_load, signed_in, stored
from tests.models import Cart
from typed_session_sql import (
    DeleteCookie,
    DoNothing,
    EventKind,
    SessionConflictError,
    SessionDeletedError,
    SessionEvent,
    SessionStore,
    SetCookie,
)

pytestmark = pytest.mark.anyio

RENEWAL_DUE = timedelta(minutes=10)  # idle 30 min: a load renews once 3 min have passed


async def test_a_read_only_load_due_a_renewal_racing_a_sign_in_tells_the_client_nothing(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    clock.advance(RENEWAL_DUE)
    reader, signer = await loaded_twice(store, value)
    signer.sign_in("alice")
    fresh = await cookie_of(store, signer)

    assert await store.save(reader) == DoNothing()  # not SetCookie(value): that id is dead
    assert await store.load(value) is None
    after = await must_load(store, fresh)
    assert after.principal == "alice"
    assert after.data == Cart(items=[1])


async def test_a_modify_racing_a_sign_in_loses_without_writing(
    store: SessionStore[Cart], events: list[SessionEvent]
) -> None:
    value = await stored(store)
    modifier, signer = await loaded_twice(store, value)
    signer.sign_in("alice")
    fresh = await cookie_of(store, signer)
    modifier.modify(lambda cart: cart.items.append(2))

    with pytest.raises(SessionDeletedError):  # the id it holds was rotated away
        await store.save(modifier)
    assert await store.load(value) is None
    after = await must_load(store, fresh)
    assert (after.principal, after.data) == ("alice", Cart(items=[1]))
    conflicts = [event for event in events if event.kind is EventKind.CONFLICT]
    assert [(event.detail, event.retries) for event in conflicts] == [("deleted", 1)]


async def test_a_sign_in_that_loses_to_a_modify_is_replayed_on_top_of_it(
    store: SessionStore[Cart],
) -> None:
    value = await stored(store)
    modifier, signer = await loaded_twice(store, value)
    modifier.modify(lambda cart: cart.items.append(2))
    assert await store.save(modifier) == DoNothing()
    signer.sign_in("alice")

    fresh = await cookie_of(store, signer)  # no data change of its own: nothing to lose
    assert await store.load(value) is None
    after = await must_load(store, fresh)
    assert (after.principal, after.data) == ("alice", Cart(items=[1, 2]))


async def test_a_double_submitted_sign_in_keeps_the_first_ones_cookie(
    store: SessionStore[Cart],
) -> None:
    value = await stored(store)
    first, second = await loaded_twice(store, value)
    first.sign_in("alice")
    second.sign_in("alice")
    winner = await cookie_of(store, first)

    with pytest.raises(SessionDeletedError):
        await store.save(second)
    assert await store.load(value) is None
    assert (await must_load(store, winner)).principal == "alice"
    assert [info.handle for info in await store.sessions_of("alice")] == [first.handle]


async def test_a_read_only_load_due_a_renewal_racing_a_sign_out_never_revives_it(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await signed_in(store, "alice")
    clock.advance(RENEWAL_DUE)
    reader, signer_out = await loaded_twice(store, value)
    signer_out.delete()
    assert await store.save(signer_out) == DeleteCookie()

    backend.kinds.clear()
    assert await store.save(reader) == DoNothing()  # no SetCookie for the dead id
    assert backend.kinds == ["touch"]
    assert await store.load(value) is None
    assert await store.sessions_of("alice") == []


@pytest.mark.parametrize("how", ["expire_in", "set_expiry"])
async def test_a_renewal_never_undoes_an_explicit_expiry_change(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart], how: str
) -> None:
    value = await stored(store)
    clock.advance(RENEWAL_DUE)
    renewer, shortener = await loaded_twice(store, value)
    assert renewer.expires_at == clock.now + timedelta(minutes=30)  # due: a touch on save
    short = clock.now + timedelta(minutes=1)
    if how == "expire_in":
        shortener.expire_in(timedelta(minutes=1))  # say, after a password change
    else:
        shortener.set_expiry(short)
    assert await store.save(shortener) == SetCookie(value, short, value_changed=False)

    assert await store.save(renewer) == DoNothing()  # the renewal is lost, quietly
    assert shortener.handle is not None
    row = await backend.read(bytes.fromhex(shortener.handle))
    assert row is not None
    assert row.expires_at == short
    clock.advance(timedelta(minutes=1))
    assert await store.load(value) is None


async def test_a_conflict_event_reports_the_replays_in_a_typed_field(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    events: list[SessionEvent] = []
    store = make_store(backend, clock, on_event=events.append)
    value = await stored(store)
    sessions = [await must_load(store, value) for _ in range(4)]
    for session in sessions:
        session.modify(lambda cart: cart.items.append(len(cart.items)))
    for session in sessions:
        assert await store.save(session) == DoNothing()

    conflicts = [event for event in events if event.kind is EventKind.CONFLICT]
    # Saved one after the other, each later saver lost once to the one before and replayed.
    assert [(event.detail, event.retries) for event in conflicts] == [
        ("replayed", 1),
        ("replayed", 1),
        ("replayed", 1),
    ]
    assert (await must_load(store, value)).data.items == [1, 1, 2, 3, 4]


async def test_a_conflict_that_exhausts_the_bound_raises_with_the_replays_counted(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    events: list[SessionEvent] = []
    store = make_store(backend, clock, on_event=events.append, max_conflict_retries=0)
    value = await stored(store)
    first, second = await loaded_twice(store, value)
    first.modify(lambda cart: cart.items.append(2))
    second.modify(lambda cart: cart.items.append(3))
    await store.save(first)
    with pytest.raises(SessionConflictError) as caught:
        await store.save(second)
    assert not isinstance(caught.value, SessionDeletedError)
    (conflict,) = [event for event in events if event.kind is EventKind.CONFLICT]
    assert (conflict.detail, conflict.retries) == ("raised", 0)


async def test_a_sign_out_racing_a_sign_in_says_it_removed_nothing(
    backend: RecordingBackend, store: SessionStore[Cart], events: list[SessionEvent]
) -> None:
    value = await stored(store)
    signer_in, signer_out = await loaded_twice(store, value)
    signer_in.sign_in("alice")
    fresh = await store.save(signer_in)
    assert isinstance(fresh, SetCookie)
    signer_out.delete()
    events.clear()

    assert await store.save(signer_out) == DeleteCookie(removed=False)
    assert [event.kind for event in events] == [EventKind.DELETE_MISSED]
    assert await store.sessions_of("alice") != []  # what the outcome warns of: it lives on
    assert await store.load(fresh.value) is not None
