"""Clock skew between instances sharing sessions is tolerated up to the policy's
``clock_skew`` (10 s by default), and no further: a row stamped by a clock further ahead
loads as None, so it cannot stretch the absolute bound or ``authenticated_within``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.clock import FakeClock
from tests.models import Cart
from typed_session_sql import (
    EventKind,
    ExpiryPolicy,
    MemoryBackend,
    SessionEvent,
    SessionStore,
    SetCookie,
)

pytestmark = pytest.mark.anyio

AHEAD = timedelta(minutes=10)


class Instances:
    """Two instances on one backend; the first one's clock runs ``ahead`` of the second's."""

    def __init__(self, ahead: timedelta, policy: ExpiryPolicy | None = None) -> None:
        self.backend = MemoryBackend()
        self.clock = FakeClock()
        self.skewed_clock = FakeClock(self.clock.now + ahead)
        self.events: list[SessionEvent] = []
        self.skewed = SessionStore(Cart, self.backend, clock=self.skewed_clock, expiry=policy)
        self.right = SessionStore(
            Cart, self.backend, clock=self.clock, expiry=policy, on_event=self.events.append
        )


async def signed_in_on(store: SessionStore[Cart]) -> str:
    session = store.new()
    session.sign_in("alice")
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    return result.value


async def test_a_session_created_by_a_clock_far_ahead_does_not_load() -> None:
    # Before: it loaded, and its absolute bound (and sign-in) counted from ten minutes on.
    instances = Instances(AHEAD)
    value = await signed_in_on(instances.skewed)
    assert await instances.right.load(value) is None
    (event,) = [e for e in instances.events if e.kind is EventKind.UNDECODABLE]
    assert event.detail.startswith("created_at is 600 s ahead of the store's clock")
    assert await instances.right.sessions_of("alice") == []

    within = Instances(timedelta(seconds=10))  # the tolerance: loads, stretched by 10 s at most
    session = await within.right.load(await signed_in_on(within.skewed))
    assert session is not None
    within.clock.advance(timedelta(minutes=5, seconds=10))
    assert session.authenticated_within(timedelta(minutes=5))
    within.clock.advance(timedelta(microseconds=1))
    assert not session.authenticated_within(timedelta(minutes=5))


async def test_a_sign_in_by_a_clock_far_ahead_does_not_stretch_authenticated_within() -> None:
    instances = Instances(AHEAD)
    session = instances.right.new()
    session.data.items.append(1)
    created = await instances.right.save(session)
    assert isinstance(created, SetCookie)
    on_skewed = await instances.skewed.load(created.value)
    assert on_skewed is not None
    on_skewed.sign_in("alice")  # stamped ten minutes ahead
    value = await instances.skewed.save(on_skewed)
    assert isinstance(value, SetCookie)

    instances.clock.advance(timedelta(minutes=6))
    # Before: loaded, and authenticated_within(5 minutes) said yes, six minutes after.
    assert await instances.right.load(value.value) is None
    (event,) = [e for e in instances.events if e.kind is EventKind.UNDECODABLE]
    assert event.detail.startswith("authenticated_at is 240 s ahead")


async def test_the_tolerance_is_configurable() -> None:
    instances = Instances(AHEAD, ExpiryPolicy(clock_skew=timedelta(minutes=15)))
    value = await signed_in_on(instances.skewed)
    assert await instances.right.load(value) is not None


@pytest.mark.parametrize(
    ("skew", "error", "message"),
    [
        (timedelta(seconds=-1), ValueError, "clock_skew must not be negative"),
        (5, TypeError, "clock_skew must be a timedelta"),
    ],
)
def test_a_bad_tolerance_is_refused(skew: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ExpiryPolicy(clock_skew=skew)  # type: ignore[arg-type]
