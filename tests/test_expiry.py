from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from typed_session_sql import ExpiryPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_defaults_are_nist_aal2() -> None:
    policy = ExpiryPolicy()
    assert policy.idle == timedelta(minutes=30)
    assert policy.absolute == timedelta(hours=12)
    assert policy.renewal_step == timedelta(minutes=3)
    assert ExpiryPolicy.aal2() == policy
    assert ExpiryPolicy.aal3().idle == timedelta(minutes=15)
    assert ExpiryPolicy.aal1().idle is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"idle": timedelta(hours=2), "absolute": timedelta(hours=1)}, "must not exceed"),
        ({"idle": timedelta(minutes=10), "renew_after": timedelta(minutes=10)}, "shorter than"),
        ({"idle": None, "absolute": None, "renew_after": timedelta(minutes=1)}, "needs an idle"),
        ({"idle": timedelta(0)}, "positive"),
        ({"absolute": -timedelta(hours=1)}, "positive"),
    ],
)
def test_bad_policies_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExpiryPolicy(**options)


def test_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError):
        ExpiryPolicy(idle=1800)  # type: ignore[arg-type]


def test_expiry_is_the_earlier_of_idle_and_absolute() -> None:
    policy = ExpiryPolicy(idle=timedelta(hours=1), absolute=timedelta(hours=2))
    assert policy.initial_expiry(T0) == T0 + timedelta(hours=1)
    assert policy.renewed_expiry(T0, T0 + timedelta(minutes=90)) == T0 + timedelta(hours=2)
    assert ExpiryPolicy.never().initial_expiry(T0) is None
    assert ExpiryPolicy(idle=None).initial_expiry(T0) == T0 + timedelta(hours=12)


def test_rust_automatic_renewal_maps_onto_the_policy() -> None:
    # AutomaticRenewal{time_to_live: 60 min, maximum_remaining_time_to_live_for_renewal: 45 min}
    # renews once less than 45 minutes remain, i.e. 15 minutes after the last renewal.
    policy = ExpiryPolicy(
        idle=timedelta(minutes=60), absolute=None, renew_after=timedelta(minutes=15)
    )
    expires = T0 + timedelta(minutes=60)
    assert policy.renewal_due(T0, expires, T0 + timedelta(minutes=14)) is None
    renewed = policy.renewal_due(T0, expires, T0 + timedelta(minutes=15))
    assert renewed == T0 + timedelta(minutes=75)


def test_no_renewal_without_idle_or_expiry() -> None:
    assert ExpiryPolicy(idle=None).renewal_due(T0, T0 + timedelta(hours=1), T0) is None
    assert ExpiryPolicy().renewal_due(T0, None, T0 + timedelta(hours=1)) is None
