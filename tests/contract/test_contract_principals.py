"""Signing in, a principal's sessions and revocation: the contract every backend passes.

Runs on Memory, SQLite and PostgreSQL through the same ``backend`` fixture as
``test_contract.py``. The clock is injected: nothing here sleeps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.contract import cookie_of, loaded_twice, make_store, must_load, signed_in
from tests.models import Cart
from typed_session_sql import (
    DoNothing,
    EventKind,
    ExpiryPolicy,
    SessionConflictError,
    SessionDeletedError,
    SessionError,
    SessionEvent,
    SessionStore,
    SetCookie,
)

pytestmark = pytest.mark.anyio


async def handles_of(store: SessionStore[Cart], principal: str) -> list[str]:
    return [info.handle for info in await store.sessions_of(principal)]


async def test_principals_are_compared_exactly(store: SessionStore[Cart]) -> None:
    # MySQL's and MariaDB's default collations make 'alice' = 'Alice' = 'alice ' true; a
    # user listing or revoking their sessions must never reach another's.
    names = ["alice", "Alice", "alice ", "\u00e9", "e\u0301"]  # é composed, and decomposed
    cookies = {name: await signed_in(store, name) for name in names}
    for name in names:
        assert await handles_of(store, name) == [(await must_load(store, cookies[name])).handle]
    assert await store.revoke_all("alice") == 1
    assert await store.load(cookies["alice"]) is None
    for name in names[1:]:
        assert await store.load(cookies[name]) is not None, name


async def test_sign_in_rotates_and_the_pre_login_id_is_dead(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    anonymous = await cookie_of(store, store.new(Cart(items=[1])))
    session = await must_load(store, anonymous)
    assert session.principal is None
    assert session.authenticated_at is None
    backend.kinds.clear()

    session.sign_in("alice")
    assert session.is_changed
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    assert result.value_changed
    assert result.value != anonymous
    assert backend.kinds == ["update"]  # rotation and sign-in in one write

    assert await store.load(anonymous) is None  # a fixated id is worth nothing after login
    after = await must_load(store, result.value)
    assert after.principal == "alice"
    assert after.authenticated_at == clock.now
    assert after.data == Cart(items=[1])  # the data carries over


async def test_sign_in_alone_stores_a_new_session(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    session = store.new()
    session.sign_in("alice")
    assert session.is_changed
    value = await cookie_of(store, session)
    assert backend.kinds == ["create"]
    loaded = await must_load(store, value)
    assert loaded.principal == "alice"
    assert loaded.authenticated_at == clock.now


async def test_sign_in_on_a_stored_session_is_written_even_with_untouched_data(
    clock: FakeClock, store: SessionStore[Cart]
) -> None:
    first = await signed_in(store, "alice")
    clock.advance(timedelta(minutes=5))
    session = await must_load(store, first)
    session.sign_in("bob")  # another user on the same browser
    second = await cookie_of(store, session)
    loaded = await must_load(store, second)
    assert loaded.principal == "bob"
    assert loaded.authenticated_at == clock.now
    assert await handles_of(store, "alice") == []


async def test_principal_persists_through_later_writes_and_replays(
    clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await signed_in(store, "alice")
    signed_at = clock.now
    clock.advance(timedelta(minutes=1))

    first = await must_load(store, value)
    second = await must_load(store, value)
    first.modify(lambda cart: cart.items.append(1))
    second.modify(lambda cart: cart.items.append(2))
    assert await store.save(first) == DoNothing()
    assert await store.save(second) == DoNothing()  # lost the race, replayed

    loaded = await must_load(store, value)
    assert loaded.data.items == [1, 2]
    assert loaded.principal == "alice"
    assert loaded.authenticated_at == signed_at


async def test_the_principal_is_never_read_from_the_data(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    @dataclass
    class Claims:
        principal: str | None = None
        user: str | None = None

    store = SessionStore(Claims, backend, clock=clock)
    session = store.new(Claims(principal="admin", user="admin"))
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    loaded = await store.load(result.value)
    assert loaded is not None
    assert loaded.principal is None
    assert not loaded.authenticated_within(timedelta(days=1))
    assert await store.sessions_of("admin") == []


async def test_authenticated_within_follows_the_store_clock(
    clock: FakeClock, store: SessionStore[Cart]
) -> None:
    anonymous = store.new()
    assert not anonymous.authenticated_within(timedelta(days=365))
    value = await signed_in(store, "alice")

    clock.advance(timedelta(minutes=10))
    session = await must_load(store, value)
    assert session.authenticated_within(timedelta(minutes=10))
    assert not session.authenticated_within(timedelta(minutes=9))

    session.sign_in("alice")  # re-authentication before a sensitive action
    assert session.authenticated_within(timedelta(0))
    value = await cookie_of(store, session)
    clock.advance(timedelta(minutes=1))
    assert (await must_load(store, value)).authenticated_within(timedelta(minutes=1))


async def test_sign_in_refuses_empty_overlong_and_deleted(store: SessionStore[Cart]) -> None:
    session = store.new()
    with pytest.raises(ValueError, match="non-empty"):
        session.sign_in("")
    with pytest.raises(ValueError, match="longer than 255"):
        session.sign_in("x" * 256)
    session.sign_in("x" * 255)
    session.delete()
    with pytest.raises(SessionError, match="deleted"):
        session.sign_in("alice")


async def test_sessions_of_lists_only_that_principals_live_sessions(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    store = make_store(backend, clock, expiry=ExpiryPolicy(idle=timedelta(hours=1)))
    expiring = await signed_in(store, "alice")
    clock.advance(timedelta(minutes=40))
    laptop = await signed_in(store, "alice")
    clock.advance(timedelta(minutes=1))
    phone = await signed_in(store, "alice")
    await signed_in(store, "bob")
    await cookie_of(store, store.new(Cart(items=[1])))  # anonymous
    clock.advance(timedelta(minutes=20))  # the first one has expired, not purged

    backend.kinds.clear()
    infos = await store.sessions_of("alice")
    assert backend.kinds == ["list"]
    handles = [(await must_load(store, value)).handle for value in (phone, laptop)]
    assert [info.handle for info in infos] == handles  # newest first
    assert infos[0].authenticated_at == clock.now - timedelta(minutes=20)
    assert infos[0].created_at == infos[0].authenticated_at
    assert infos[0].expires_at is not None
    assert await store.load(expiring) is None
    assert [len(await store.sessions_of(name)) for name in ("bob", "carol")] == [1, 0]


async def test_session_info_holds_no_cookie_value(
    store: SessionStore[Cart], events: list[SessionEvent], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="typed_session_sql")
    value = await signed_in(store, "alice")
    other = await signed_in(store, "alice")
    (info, *_) = await store.sessions_of("alice")
    assert await store.revoke_all("alice") == 2
    shown = repr(await store.sessions_of("alice")) + repr(info) + caplog.text + repr(events)
    for secret in (value, other):
        assert secret not in shown
        assert secret not in repr(info)


async def test_a_handle_presented_as_a_cookie_loads_nothing(store: SessionStore[Cart]) -> None:
    value = await signed_in(store, "alice")
    handle = (await must_load(store, value)).handle
    assert handle is not None
    assert await handles_of(store, "alice") == [handle]
    assert await store.load(handle) is None
    # Even cut to a cookie's shape, the stored hash names no session: lookup hashes it.
    assert await store.load(handle[:42] + "A") is None
    assert store.new().handle is None


async def test_revoke_by_handle_works_only_for_its_principal(
    backend: RecordingBackend, store: SessionStore[Cart], events: list[SessionEvent]
) -> None:
    alice = await signed_in(store, "alice")
    await signed_in(store, "mallory")
    (info,) = await store.sessions_of("alice")

    assert not await store.revoke("mallory", info.handle)  # not hers to revoke
    assert await must_load(store, alice)
    backend.kinds.clear()
    assert not await store.revoke("alice", "not a handle")
    assert not await store.revoke("alice", "zz" * 32)
    assert backend.kinds == []  # a malformed handle costs no backend call
    assert not [event for event in events if event.kind is EventKind.REVOKED]

    assert await store.revoke("alice", info.handle)
    assert await store.load(alice) is None
    assert not await store.revoke("alice", info.handle)  # already gone
    assert len(await store.sessions_of("mallory")) == 1
    revoked = [event for event in events if event.kind is EventKind.REVOKED]
    assert [(event.detail, event.count) for event in revoked] == [("one", 1)]


async def test_revoke_all_with_keep_leaves_exactly_the_current_one(
    backend: RecordingBackend, store: SessionStore[Cart], events: list[SessionEvent]
) -> None:
    others = [await signed_in(store, "alice") for _ in range(3)]
    bob = await signed_in(store, "bob")
    current = await must_load(store, await signed_in(store, "alice"))

    backend.kinds.clear()
    assert await store.revoke_all("alice", keep=current) == 3
    assert backend.kinds == ["delete_by_principal"]
    assert await handles_of(store, "alice") == [current.handle]
    assert all([await store.load(value) is None for value in others])
    assert await must_load(store, bob)
    current.modify(lambda cart: cart.items.append(1))
    assert await store.save(current) == DoNothing()  # the kept one goes on working

    assert await store.revoke_all("alice") == 1  # everywhere, this one included
    assert await store.sessions_of("alice") == []
    revoked = [event for event in events if event.kind is EventKind.REVOKED]
    assert [(event.detail, event.count) for event in revoked] == [("others", 3), ("all", 1)]


async def test_revoke_all_refuses_to_keep_another_principals_session(
    store: SessionStore[Cart],
) -> None:
    bob = await must_load(store, await signed_in(store, "bob"))
    await signed_in(store, "alice")
    with pytest.raises(ValueError, match="not a session of that principal"):
        await store.revoke_all("alice", keep=bob)
    assert len(await store.sessions_of("alice")) == 1


@pytest.mark.parametrize("how", ["modify", "assign", "sign_in"])
async def test_a_save_racing_a_revocation_never_brings_the_session_back(
    store: SessionStore[Cart], how: str
) -> None:
    value = await signed_in(store, "alice")
    stale = await must_load(store, value)  # a slow request, loaded before the revocation
    current = await must_load(store, await signed_in(store, "alice"))
    assert await store.revoke_all("alice", keep=current) == 1

    if how == "modify":
        stale.modify(lambda cart: cart.items.append(1))
    elif how == "assign":
        stale.data = Cart(items=[2])
    else:
        stale.sign_in("alice")
    with pytest.raises((SessionDeletedError, SessionConflictError)):
        await store.save(stale)
    assert await store.load(value) is None
    assert await handles_of(store, "alice") == [current.handle]


async def test_a_renewal_after_a_revocation_writes_nothing_back(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    store = make_store(backend, clock, expiry=ExpiryPolicy(idle=timedelta(hours=1)))
    value = await signed_in(store, "alice")
    clock.advance(timedelta(minutes=30))
    stale = await must_load(store, value)  # due a renewal: its save is a touch
    assert await store.revoke_all("alice") == 1
    backend.kinds.clear()
    await store.save(stale)
    assert backend.kinds == ["touch"]  # the renewal's touch never inserts
    assert await store.load(value) is None
    assert await store.sessions_of("alice") == []


async def test_handle_follows_rotation(store: SessionStore[Cart]) -> None:
    session = await must_load(store, await signed_in(store, "alice"))
    before = session.handle
    session.regenerate()
    await store.save(session)
    assert session.handle != before
    assert await handles_of(store, "alice") == [session.handle]


# -- signing out everywhere from the current browser ------------------------------------------


async def test_sign_out_everywhere_signs_this_browser_out_too(
    backend: RecordingBackend, store: SessionStore[Cart], events: list[SessionEvent]
) -> None:
    others = [await signed_in(store, "alice") for _ in range(2)]
    bob = await signed_in(store, "bob")
    value = await signed_in(store, "alice")
    current = await must_load(store, value)

    backend.kinds.clear()
    assert await store.sign_out_everywhere(current) == 3  # this one included
    assert current.is_deleted  # the middleware deletes the browser's cookie
    assert await store.save(current) == DoNothing()
    assert backend.kinds == ["delete_by_principal"]  # one statement in all
    assert all([await store.load(other) is None for other in [*others, value]])
    assert await must_load(store, bob)
    revoked = [event for event in events if event.kind is EventKind.REVOKED]
    assert [(event.detail, event.count) for event in revoked] == [("all", 3)]


async def test_sign_out_everywhere_else_keeps_this_one_as_it_is(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    others = [await signed_in(store, "alice") for _ in range(2)]
    value = await signed_in(store, "alice")
    current = await must_load(store, value)

    backend.kinds.clear()
    assert await store.sign_out_everywhere(current, here="keep") == 2
    assert await store.save(current) == DoNothing()
    assert backend.kinds == ["delete_by_principal"]
    assert all([await store.load(other) is None for other in others])
    assert (await must_load(store, value)).principal == "alice"


async def test_a_password_change_keeps_this_browser_signed_in_under_a_fresh_id(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    other = await signed_in(store, "alice")
    value = await signed_in(store, "alice")
    current = await must_load(store, value)

    backend.kinds.clear()
    assert await store.sign_out_everywhere(current, here="rotate") == 1
    command = await store.save(current)
    assert backend.kinds == ["delete_by_principal", "update"]  # the rotation rides the save
    assert isinstance(command, SetCookie)
    assert command.value != value
    assert await store.load(value) is None  # a copy of the old cookie is dead
    assert await store.load(other) is None
    assert (await must_load(store, command.value)).principal == "alice"
    assert await handles_of(store, "alice") == [current.handle]


async def test_a_password_change_racing_another_tab_keeps_both_changes(
    store: SessionStore[Cart],
) -> None:
    # The other tab of the same browser writes between the revocation and this response's
    # save: the save loses on the version column, replays its change and still rotates.
    value = await signed_in(store, "alice")
    current, other_tab = await loaded_twice(store, value)
    current.modify(lambda cart: cart.items.append(1))
    assert await store.sign_out_everywhere(current, here="rotate") == 0
    other_tab.modify(lambda cart: cart.items.append(2))
    assert await store.save(other_tab) == DoNothing()
    command = await store.save(current)
    assert isinstance(command, SetCookie)
    assert await store.load(value) is None
    assert (await must_load(store, command.value)).data.items == [2, 1]


async def test_sign_out_everywhere_while_signing_in_removes_the_row_being_signed_in(
    store: SessionStore[Cart],
) -> None:
    # The row does not carry the new principal until saved: it is deleted by its id.
    value = await cookie_of(store, store.new(Cart(items=[1])))
    current = await must_load(store, value)
    current.sign_in("alice")
    await signed_in(store, "alice")
    assert await store.sign_out_everywhere(current) == 1
    await store.save(current)
    assert await store.load(value) is None
    assert await store.sessions_of("alice") == []


async def test_sign_out_everywhere_refuses_what_it_cannot_do(store: SessionStore[Cart]) -> None:
    anonymous = await must_load(store, await cookie_of(store, store.new(Cart(items=[1]))))
    with pytest.raises(ValueError, match="nobody signed in"):
        await store.sign_out_everywhere(anonymous)
    current = await must_load(store, await signed_in(store, "alice"))
    with pytest.raises(ValueError, match="here must be"):
        await store.sign_out_everywhere(current, here="everywhere")  # type: ignore[arg-type]
    current.delete()
    with pytest.raises(SessionError, match="deleted"):
        await store.sign_out_everywhere(current)
    assert len(await store.sessions_of("alice")) == 1  # nothing was revoked
