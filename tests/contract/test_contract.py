"""The contract every backend passes unchanged: Memory, and SQLite, PostgreSQL (asyncpg,
psycopg) and MariaDB on each executor (tests/backends.py lists them).

It ports what the Rust crate typed-session tests, and adds what it never tested. The
``backend`` fixture records the kind of every backend call, so assertions about round
trips hold for every backend alike.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.contract import loaded_twice, make_store, must_load, stored
from tests.models import Cart
from typed_session_sql import (
    DeleteCookie,
    DoNothing,
    EventKind,
    ExpiryPolicy,
    IdCollisionError,
    SessionConflictError,
    SessionDeletedError,
    SessionError,
    SessionEvent,
    SessionStore,
    SessionTooLargeError,
    SetCookie,
)
from typed_session_sql import ids as ids_module

pytestmark = pytest.mark.anyio


# -- the Rust crate's tests ---------------------------------------------------------------


async def test_untouched_new_session_is_not_stored(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    session = store.new()
    assert session.is_new
    assert not session.is_changed
    assert await store.save(session) == DoNothing()
    assert backend.kinds == []


async def test_expiry_only_change_does_not_store_a_new_session(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    session = store.new()
    session.expire_in(timedelta(minutes=5))
    session.do_not_expire()
    assert await store.save(session) == DoNothing()
    assert backend.kinds == []


async def test_changed_new_session_is_created_once(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    session = store.new()
    session.data.items.append(7)
    assert session.is_changed
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    assert result.value_changed
    assert ids_module.is_well_formed(result.value)
    assert backend.kinds == ["create"]
    assert not session.is_new
    assert session.version == 1
    loaded = await must_load(store, result.value)
    assert loaded.data == Cart(items=[7])
    assert loaded.created_at == clock.now


async def test_new_session_with_data_is_stored_even_untouched(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    result = await store.save(store.new(Cart(items=[1])))
    assert isinstance(result, SetCookie)
    assert backend.kinds == ["create"]


async def test_default_expiry_is_set_on_create(clock: FakeClock, store: SessionStore[Cart]) -> None:
    session = store.new(Cart())
    assert session.expires_at == clock.now + timedelta(minutes=30)
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    assert result.expires_at == clock.now + timedelta(minutes=30)
    loaded = await must_load(store, result.value)
    assert loaded.expires_at == clock.now + timedelta(minutes=30)


async def test_unchanged_loaded_session_costs_only_the_read(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    session = await must_load(store, value)
    assert not session.is_changed
    assert await store.save(session) == DoNothing()
    assert backend.kinds == ["read"]


async def test_changed_loaded_session_is_updated_once(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    session = await must_load(store, value)
    session.data = Cart(items=[1, 2])
    assert await store.save(session) == DoNothing()  # same cookie, same expiry
    assert backend.kinds == ["read", "update"]
    assert session.version == 2
    again = await must_load(store, value)
    assert again.data == Cart(items=[1, 2])
    assert again.version == 2


async def test_deleted_session_deletes_row_and_cookie(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    session = await must_load(store, value)
    session.delete()
    assert session.is_deleted
    assert await store.save(session) == DeleteCookie()
    assert backend.kinds == ["read", "delete"]
    assert await store.load(value) is None


async def test_new_deleted_session_costs_nothing(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    session = store.new(Cart(items=[1]))
    session.delete()
    assert await store.save(session) == DoNothing()
    assert backend.kinds == []


async def test_deleted_session_cannot_be_changed(store: SessionStore[Cart]) -> None:
    session = store.new()
    session.delete()
    with pytest.raises(SessionError):
        session.data = Cart(items=[1])
    with pytest.raises(SessionError):
        session.modify(lambda cart: cart.items.append(1))


async def test_old_id_is_dead_after_regenerate(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    session = await must_load(store, value)
    created_at = session.created_at
    clock.advance(timedelta(seconds=5))
    session.regenerate()
    assert session.is_changed
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    assert result.value_changed
    assert result.value != value
    assert backend.kinds == ["read", "update"]  # the id moves in the same statement
    assert await store.load(value) is None
    rotated = await must_load(store, result.value)
    assert rotated.data == Cart(items=[1])
    assert rotated.created_at == created_at


async def test_concurrent_plain_writes_second_raises(store: SessionStore[Cart]) -> None:
    value = await stored(store)
    first, second = await loaded_twice(store, value)
    first.data.items.append(2)
    second.data = Cart(items=[99])
    await store.save(first)
    with pytest.raises(SessionConflictError) as caught:
        await store.save(second)
    assert not isinstance(caught.value, SessionDeletedError)
    current = await must_load(store, value)
    assert current.data == Cart(items=[1, 2])  # the winner's write survives, nothing merged


# -- what the Rust crate never tested -------------------------------------------------------


async def test_nested_mutation_is_detected(store: SessionStore[Cart]) -> None:
    value = await stored(store, Cart(notes={"a": ["x"]}))
    session = await must_load(store, value)
    session.data.notes["a"].append("y")
    assert session.is_changed
    await store.save(session)
    loaded = await must_load(store, value)
    assert loaded.data.notes == {"a": ["x", "y"]}


async def test_modify_is_replayed_after_a_concurrent_write(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    first, second = await loaded_twice(store, value)

    def increment(cart: Cart) -> None:
        cart.count += 1

    def add_item(cart: Cart) -> Cart:
        return Cart(items=[*cart.items, 5], notes=cart.notes, count=cart.count)

    first.modify(increment)
    second.modify(increment)
    second.modify(add_item)
    await store.save(first)
    backend.kinds.clear()
    await store.save(second)
    assert backend.kinds == ["update", "read", "update"]
    assert second.data == Cart(items=[1, 5], count=2)
    current = await must_load(store, value)
    assert current.data == Cart(items=[1, 5], count=2)
    assert current.version == 3


async def test_change_outside_modify_is_not_replayed(store: SessionStore[Cart]) -> None:
    value = await stored(store)
    first, second = await loaded_twice(store, value)
    first.modify(lambda cart: cart.items.append(2))
    second.data.items.append(3)  # an in-place change outside modify() cannot be replayed
    second.modify(lambda cart: cart.items.append(4))
    await store.save(first)
    with pytest.raises(SessionConflictError):
        await store.save(second)


async def test_many_interleaved_modifies_all_land(store: SessionStore[Cart]) -> None:
    value = await stored(store)
    sessions = [await must_load(store, value) for _ in range(10)]
    for session in sessions:
        session.modify(lambda cart: setattr(cart, "count", cart.count + 1))
    for session in sessions:
        await store.save(session)
    current = await must_load(store, value)
    assert current.data.count == 10


async def test_save_after_concurrent_delete_never_resurrects(store: SessionStore[Cart]) -> None:
    value = await stored(store)
    writer, replayer, logout = [await must_load(store, value) for _ in range(3)]
    logout.delete()
    await store.save(logout)
    writer.data = Cart(items=[42])
    with pytest.raises(SessionDeletedError):
        await store.save(writer)
    replayer.modify(lambda cart: cart.items.append(42))
    with pytest.raises(SessionDeletedError):
        await store.save(replayer)
    assert await store.load(value) is None


async def test_rotation_racing_a_save_only_one_wins(store: SessionStore[Cart]) -> None:
    value = await stored(store)
    rotator, writer = await loaded_twice(store, value)
    rotator.regenerate()
    writer.data = Cart(items=[8])
    result = await store.save(rotator)
    assert isinstance(result, SetCookie)
    with pytest.raises(SessionConflictError):
        await store.save(writer)
    assert await store.load(value) is None
    current = await must_load(store, result.value)
    assert current.data == Cart(items=[1])


async def test_expired_session_does_not_load(
    clock: FakeClock, store: SessionStore[Cart], events: list[SessionEvent]
) -> None:
    value = await stored(store)
    clock.advance(timedelta(minutes=30))
    assert await store.load(value) is None
    assert [event.kind for event in events][-1] == EventKind.EXPIRED


async def test_renewal_is_throttled(backend: RecordingBackend, clock: FakeClock) -> None:
    store = make_store(backend, clock)  # idle 30 min: renew once it moves the deadline >= 3 min
    value = await stored(store)
    start = clock.now
    clock.advance(timedelta(minutes=2))
    session = await must_load(store, value)
    assert session.expires_at == start + timedelta(minutes=30)
    assert await store.save(session) == DoNothing()
    clock.advance(timedelta(minutes=2))  # 4 minutes in: due
    session = await must_load(store, value)
    assert not session.is_changed  # a renewal is not a data change
    assert session.expires_at == clock.now + timedelta(minutes=30)
    result = await store.save(session)
    assert result == SetCookie(value, clock.now + timedelta(minutes=30), value_changed=False)
    assert backend.kinds == ["read", "read", "touch"]
    assert session.version == 1  # a touch is no version bump
    backend.kinds.clear()
    session = await must_load(store, value)
    assert await store.save(session) == DoNothing()
    assert backend.kinds == ["read"]


async def test_renewal_keeps_an_active_session_alive_past_idle(
    clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    for _ in range(6):  # an hour of activity, every 10 minutes
        clock.advance(timedelta(minutes=10))
        session = await must_load(store, value)
        await store.save(session)
    clock.advance(timedelta(minutes=29))
    assert await store.load(value) is not None


async def test_activity_never_extends_past_the_absolute_bound(
    clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    created = clock.now
    deadline = created + timedelta(hours=12)
    while clock.now + timedelta(minutes=20) < deadline:
        clock.advance(timedelta(minutes=20))
        session = await must_load(store, value)
        assert session.expires_at is not None
        assert session.expires_at <= deadline
        await store.save(session)
    clock.now = deadline
    assert await store.load(value) is None


async def test_absolute_bound_holds_over_an_explicit_expiry(
    clock: FakeClock, store: SessionStore[Cart]
) -> None:
    session = store.new(Cart())
    session.set_expiry(clock.now + timedelta(days=30))
    assert session.expires_at == clock.now + timedelta(hours=12)
    session.do_not_expire()
    assert session.expires_at == clock.now + timedelta(hours=12)


async def test_tighter_absolute_policy_applies_to_old_rows(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    lax = make_store(backend, clock, expiry=ExpiryPolicy(idle=None, absolute=None))
    value = await stored(lax)
    clock.advance(timedelta(hours=13))
    assert await lax.load(value) is not None
    strict = make_store(backend, clock)
    assert await strict.load(value) is None


async def test_a_renewal_after_a_data_write_never_conflicts_and_changes_nothing(
    clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    clock.advance(timedelta(minutes=10))
    renewer, writer = await loaded_twice(store, value)
    writer.data = Cart(items=[3])
    await store.save(writer)
    # A touch guarded by the version it read: the write won, the touch is dropped quietly
    # (the write carried the renewal already), and nothing is sent to the client.
    result = await store.save(renewer)
    assert isinstance(result, DoNothing)
    current = await must_load(store, value)
    assert current.data == Cart(items=[3])
    assert current.expires_at == clock.now + timedelta(minutes=30)


async def test_touch_never_moves_expiry_backwards(
    clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    clock.advance(timedelta(minutes=10))
    stale = await must_load(store, value)  # due for renewal to t+40
    clock.advance(timedelta(minutes=10))
    fresh = await must_load(store, value)  # due for renewal to t+50
    await store.save(fresh)
    await store.save(stale)
    current = await must_load(store, value)
    assert current.expires_at == clock.now + timedelta(minutes=30)


async def test_never_expiring_policy(backend: RecordingBackend, clock: FakeClock) -> None:
    store = make_store(backend, clock, expiry=ExpiryPolicy.never())
    value = await stored(store)
    clock.advance(timedelta(days=3650))
    session = await must_load(store, value)
    assert session.expires_at is None
    assert await store.save(session) == DoNothing()


async def test_explicit_expiry_change_on_a_loaded_session_is_written(
    clock: FakeClock, store: SessionStore[Cart]
) -> None:
    value = await stored(store)
    session = await must_load(store, value)
    session.expire_in(timedelta(minutes=5))
    assert session.is_changed
    result = await store.save(session)
    assert result == SetCookie(value, clock.now + timedelta(minutes=5), value_changed=False)
    clock.advance(timedelta(minutes=5))
    assert await store.load(value) is None


async def test_naive_expiry_is_refused(store: SessionStore[Cart]) -> None:
    session = store.new()
    with pytest.raises(ValueError, match="naive"):
        session.set_expiry(datetime(2030, 1, 1))


async def test_id_collisions_are_retried(
    backend: RecordingBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(backend, clock, max_id_collision_retries=3)
    taken = await stored(store)
    drawn = iter([taken, taken, taken, ids_module.new_cookie_value()])
    monkeypatch.setattr(ids_module, "new_cookie_value", lambda: next(drawn))
    result = await store.save(store.new(Cart(items=[2])))
    assert isinstance(result, SetCookie)
    assert result.value != taken
    assert backend.kinds == ["create"] * 4
    original = await must_load(store, taken)
    assert original.data == Cart(items=[1])  # the colliding insert changed nothing


async def test_id_collisions_exhausted(
    backend: RecordingBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(backend, clock, max_id_collision_retries=2)
    taken = await stored(store)
    monkeypatch.setattr(ids_module, "new_cookie_value", lambda: taken)
    with pytest.raises(IdCollisionError):
        await store.save(store.new(Cart(items=[2])))
    assert backend.kinds == ["create"] * 3


async def test_unbounded_collision_retries(
    backend: RecordingBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(backend, clock, max_id_collision_retries=None)
    taken = await stored(store)
    drawn = iter([taken] * 20 + [ids_module.new_cookie_value()])
    monkeypatch.setattr(ids_module, "new_cookie_value", lambda: next(drawn))
    assert isinstance(await store.save(store.new()), DoNothing)  # untouched: no draw
    assert isinstance(await store.save(store.new(Cart(items=[3]))), SetCookie)
    assert len(backend.kinds) == 21


async def test_rotation_collision_is_retried(
    store: SessionStore[Cart], monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = await stored(store, Cart(items=[1]))
    mine = await stored(store, Cart(items=[2]))
    drawn = iter([taken, ids_module.new_cookie_value()])
    monkeypatch.setattr(ids_module, "new_cookie_value", lambda: next(drawn))
    session = await must_load(store, mine)
    session.regenerate()
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    assert result.value not in (taken, mine)
    other = await must_load(store, taken)
    assert other.data == Cart(items=[1])


MALFORMED = [
    "",
    "short",
    "x" * 8192,
    "' OR 1=1 --" + "a" * 32,
    "a" * 42 + "\x00",
    "é" * 43,
    "a" * 42 + "b",  # right length and alphabet, but not canonical base64 of 32 bytes
    "a" * 44,
    '"' + "a" * 41 + '"',
    "a" * 21 + " " + "a" * 21,
]


@pytest.mark.parametrize("value", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_cookie_never_reaches_the_backend(
    backend: RecordingBackend, store: SessionStore[Cart], events: list[SessionEvent], value: str
) -> None:
    assert await store.load(value) is None
    assert backend.kinds == []
    assert [event.kind for event in events] == ([EventKind.MALFORMED_COOKIE] if value else [])


async def test_unknown_id_loads_nothing(
    backend: RecordingBackend, store: SessionStore[Cart], events: list[SessionEvent]
) -> None:
    assert await store.load(ids_module.new_cookie_value()) is None
    assert backend.kinds == ["read"]
    assert [event.kind for event in events] == [EventKind.UNKNOWN_ID]


async def test_undecodable_data_loads_as_none(backend: RecordingBackend, clock: FakeClock) -> None:
    value = await stored(make_store(backend, clock))
    events: list[SessionEvent] = []
    drifted = SessionStore(int, backend, clock=clock, on_event=events.append)
    assert await drifted.load(value) is None
    assert [event.kind for event in events] == [EventKind.UNDECODABLE]


async def test_oversize_data_is_refused_and_nothing_written(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    store = make_store(backend, clock, max_data_bytes=64)
    with pytest.raises(SessionTooLargeError):
        await store.save(store.new(Cart(items=list(range(100)))))
    assert backend.kinds == []
    value = await stored(store)
    session = await must_load(store, value)
    session.data.items.extend(range(100))
    with pytest.raises(SessionTooLargeError):
        await store.save(session)
    assert backend.kinds == ["read"]
    current = await must_load(store, value)
    assert current.data == Cart(items=[1])


async def test_no_cookie_value_in_logs_or_reprs(
    store: SessionStore[Cart], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="typed_session_sql")
    session = store.new()
    session.data.items.append(1)
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    value = result.value
    loaded = await must_load(store, value)
    loaded.regenerate()
    rotated = await store.save(loaded)
    assert isinstance(rotated, SetCookie)
    await store.load(value)  # unknown now
    shown = [repr(result), str(result), repr(rotated), repr(loaded), str(loaded), repr(store)]
    shown.append(caplog.text)
    for text in shown:
        assert value not in text
        assert rotated.value not in text
    assert "session created" in caplog.text  # the log is there, only without secrets


async def test_only_the_hash_reaches_the_backend(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    seen: list[bytes] = []
    original_create = backend.inner.create

    async def spy(id_hash: bytes, record: object) -> bool:
        seen.append(id_hash)
        return await original_create(id_hash, record)  # type: ignore[arg-type]

    backend.inner.create = spy  # type: ignore[method-assign]
    value = await stored(store)
    assert seen == [ids_module.IdHasher()(value)]
    assert value.encode() not in seen[0]
    assert await store.load(seen[0].hex()) is None  # a stored hash is no cookie


async def test_secret_key_changes_the_stored_hash(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    peppered = make_store(backend, clock, secret_key=b"k" * 32)
    value = await stored(peppered)
    assert await peppered.load(value) is not None
    assert await make_store(backend, clock).load(value) is None
    assert await make_store(backend, clock, secret_key=b"j" * 32).load(value) is None


async def test_clear_removes_every_session(store: SessionStore[Cart]) -> None:
    values = [await stored(store) for _ in range(3)]
    await store.clear()
    for value in values:
        assert await store.load(value) is None


async def test_purge_removes_only_expired_rows(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    early = [await stored(store) for _ in range(5)]
    clock.advance(timedelta(minutes=20))
    late = [await stored(store) for _ in range(2)]
    forever = await stored(make_store(backend, clock, expiry=ExpiryPolicy.never()))
    clock.advance(timedelta(minutes=15))
    assert await store.purge_expired(batch_size=2) == 5
    lax = make_store(backend, clock, expiry=ExpiryPolicy.never())
    for value in early:
        assert await lax.load(value) is None
    for value in [*late, forever]:
        assert await lax.load(value) is not None


async def test_events_report_the_lifecycle(backend: RecordingBackend, clock: FakeClock) -> None:
    events: list[SessionEvent] = []

    def hook(event: SessionEvent) -> None:
        events.append(event)
        raise RuntimeError("a broken hook must not break the request")

    store = make_store(backend, clock, on_event=hook)
    value = await stored(store)
    clock.advance(timedelta(minutes=10))
    session = await must_load(store, value)
    await store.save(session)
    session.regenerate()
    await store.save(session)
    session.delete()
    await store.save(session)
    assert [event.kind for event in events] == [
        EventKind.CREATED,
        EventKind.LOADED,
        EventKind.RENEWED,
        EventKind.ROTATED,
        EventKind.DELETED,
    ]


async def test_saving_twice_writes_once(
    backend: RecordingBackend, store: SessionStore[Cart]
) -> None:
    session = store.new()
    session.data.count = 1
    await store.save(session)
    assert await store.save(session) == DoNothing()
    session.data.count = 2
    await store.save(session)
    assert backend.kinds == ["create", "update"]
    assert session.created_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
