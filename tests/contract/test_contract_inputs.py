"""Arguments a careless or hostile caller passes: principals, handles, limits. Each is
refused, or answered without a backend call, identically on every backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.contract import cookie_of, must_load, signed_in
from tests.models import Cart
from typed_session_sql import SessionStore

pytestmark = pytest.mark.anyio

UNSTORABLE = {
    "nul": "a\x00b",
    "lone surrogate": "a\udcffb",
    "high surrogate": "\ud800",
    "too long": "x" * 256,
    "empty": "",
}
NOT_A_STRING: list[Any] = [None, 7, b"alice", ["alice"]]


@pytest.mark.parametrize("principal", UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_sign_in_refuses_a_principal_no_database_can_store(
    backend: RecordingBackend, store: SessionStore[Cart], principal: str
) -> None:
    session = store.new()
    with pytest.raises(ValueError, match="principal"):
        session.sign_in(principal)
    assert session.principal is None
    assert not session.is_changed  # nothing half-done
    assert backend.kinds == []


@pytest.mark.parametrize("principal", NOT_A_STRING, ids=repr)
async def test_sign_in_refuses_a_principal_that_is_not_a_string(
    store: SessionStore[Cart], principal: Any
) -> None:
    with pytest.raises(TypeError, match="principal must be a str"):
        store.new().sign_in(principal)


async def test_sign_in_takes_any_other_unicode_up_to_255_characters(
    store: SessionStore[Cart],
) -> None:
    for principal in ["x" * 255, "ünïcødé 用户 🙂", "tab\tand\nnewline", "a@example.com"]:
        value = await signed_in(store, principal)
        assert (await must_load(store, value)).principal == principal
        assert len(await store.sessions_of(principal)) == 1


@pytest.mark.parametrize(
    "principal", [*UNSTORABLE.values(), *NOT_A_STRING], ids=[*UNSTORABLE, *map(repr, NOT_A_STRING)]
)
async def test_listing_and_revocation_refuse_a_bad_principal_before_any_backend_call(
    backend: RecordingBackend, store: SessionStore[Cart], principal: Any
) -> None:
    await signed_in(store, "alice")
    anonymous = await cookie_of(store, store.new(Cart(items=[1])))
    backend.kinds.clear()
    handle = "ab" * 32
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.sessions_of(principal),
        lambda: store.revoke(principal, handle),
        lambda: store.revoke_all(principal),
    ]
    for call in calls:
        with pytest.raises((TypeError, ValueError), match="principal"):
            await call()
    assert backend.kinds == []
    assert await store.load(anonymous) is not None  # nothing deleted, anonymous or not
    assert len(await store.sessions_of("alice")) == 1


HANDLES = {
    "64 spaces": " " * 64,
    "uppercase hex": "AB" * 32,
    "63 characters": "a" * 63,
    "65 characters": "a" * 65,
    "hex with spaces": "ab " * 21 + "a",
    "not hex": "zz" * 32,
    "empty": "",
    "a cookie value": "A" * 43,
}


@pytest.mark.parametrize("handle", HANDLES.values(), ids=HANDLES.keys())
async def test_anything_but_64_lowercase_hex_is_no_handle_and_costs_no_call(
    backend: RecordingBackend, store: SessionStore[Cart], handle: str
) -> None:
    await signed_in(store, "alice")
    (info,) = await store.sessions_of("alice")
    backend.kinds.clear()
    assert not await store.revoke("alice", handle)
    assert not await store.revoke("alice", info.handle.upper())
    assert backend.kinds == []
    assert len(await store.sessions_of("alice")) == 1


async def test_sessions_of_lists_newest_first_and_at_most_limit(
    backend: RecordingBackend, clock: FakeClock, store: SessionStore[Cart]
) -> None:
    values = []
    for _ in range(5):
        values.append(await signed_in(store, "alice"))
        clock.advance(timedelta(seconds=30))
    handles = [(await must_load(store, value)).handle for value in values]
    newest_first = handles[::-1]

    assert [info.handle for info in await store.sessions_of("alice")] == newest_first
    assert [info.handle for info in await store.sessions_of("alice", limit=2)] == newest_first[:2]
    assert [info.handle for info in await store.sessions_of("alice", limit=1)] == newest_first[:1]
    backend.kinds.clear()
    await store.sessions_of("alice", limit=3)
    assert backend.kinds == ["list"]


@pytest.mark.parametrize(
    ("limit", "error"),
    [(0, ValueError), (-1, ValueError), (10_001, ValueError), (2.5, TypeError), (True, TypeError)],
)
async def test_sessions_of_refuses_a_bad_limit_before_any_backend_call(
    backend: RecordingBackend, store: SessionStore[Cart], limit: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="limit"):
        await store.sessions_of("alice", limit=limit)
    assert backend.kinds == []
