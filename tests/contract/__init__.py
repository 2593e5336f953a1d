"""What the contract tests share: the store under test, the events it emitted, and helpers.

``store`` is a ``SessionStore[Cart]`` over the ``backend`` fixture (so it runs on every
backend) with the fake ``clock``; ``events`` holds what it emitted. Tests that need other
options build their own with :func:`make_store`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.models import Cart
from typed_session_sql import Session, SessionEvent, SessionStore, SetCookie

T = TypeVar("T")


def make_store(backend: RecordingBackend, clock: FakeClock, **options: Any) -> SessionStore[Cart]:
    return SessionStore(Cart, backend, clock=clock, **options)


@pytest.fixture
def events() -> list[SessionEvent]:
    return []


@pytest.fixture
def store(
    backend: RecordingBackend, clock: FakeClock, events: list[SessionEvent]
) -> SessionStore[Cart]:
    return make_store(backend, clock, on_event=events.append)


async def stored(store: SessionStore[Cart], data: Cart | None = None) -> str:
    """Create a stored session and return its cookie value; the backend log starts empty."""
    result = await store.save(store.new(data if data is not None else Cart(items=[1])))
    assert isinstance(result, SetCookie)
    assert isinstance(store.backend, RecordingBackend)
    store.backend.kinds.clear()
    return result.value


async def must_load(store: SessionStore[Cart], value: str) -> Session[Cart]:
    session = await store.load(value)
    assert session is not None
    return session


async def loaded_twice(
    store: SessionStore[Cart], value: str
) -> tuple[Session[Cart], Session[Cart]]:
    """The same stored session loaded by two requests at once, before either saves."""
    return await must_load(store, value), await must_load(store, value)


async def cookie_of(store: SessionStore[T], session: Session[T]) -> str:
    """Save ``session``, which must set a cookie; return the cookie's value."""
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    return result.value


async def signed_in(store: SessionStore[Cart], principal: str) -> str:
    """A new session signed in as ``principal``; its cookie value."""
    session = store.new()
    session.sign_in(principal)
    return await cookie_of(store, session)
