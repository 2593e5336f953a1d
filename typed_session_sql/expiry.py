"""When sessions expire: an idle bound, an absolute bound, and throttled renewal."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def later_by(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, saturating at the ends of the calendar instead of raising
    OverflowError: a stored row's timestamp near year 9999, or an expiry of
    ``timedelta.max``, is "as late as can be", never a crash."""
    try:
        return moment + delta
    except OverflowError:
        return _LATEST if delta > timedelta(0) else _EARLIEST


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    """How long sessions live, checked by the store on every load.

    A session expires at ``min(last renewal + idle, created_at + absolute)``. Loading a
    session renews its idle deadline, but writes that renewal at most once per
    ``renew_after``, so a busy session costs one expiry write per interval rather than one
    per request, and activity never carries it past the absolute deadline. The defaults are
    NIST SP 800-63B's AAL2 figures; `aal1`, `aal3` and `never` are presets.
    """

    idle: timedelta | None = timedelta(minutes=30)
    """Inactivity after which the session expires; None for no idle bound."""

    absolute: timedelta | None = timedelta(hours=12)
    """Lifetime from creation after which the session expires, whatever its activity; None for
    no bound. Enforced on every load, even for rows written under a laxer policy."""

    renew_after: timedelta | None = field(default=None)
    """How much later a renewal must move the idle deadline before it is written.

    None means a tenth of ``idle``. Must be shorter than ``idle``. Ignored without ``idle``.
    """

    clock_skew: timedelta = timedelta(seconds=10)
    """How far ahead of the store's clock a stored ``created_at`` or ``authenticated_at`` may
    be: the clock difference tolerated between the instances sharing the sessions. A row
    stamped further ahead was written by a clock that is wrong (or by hand) and loads as None
    (an ``undecodable`` event says by how much), so a skewed instance can stretch the
    absolute bound and `Session.authenticated_within` by at most this much."""

    def __post_init__(self) -> None:
        if not isinstance(self.clock_skew, timedelta):
            raise TypeError(f"ExpiryPolicy.clock_skew must be a timedelta, not {self.clock_skew!r}")
        if self.clock_skew < timedelta(0):
            raise ValueError(f"ExpiryPolicy.clock_skew must not be negative, got {self.clock_skew}")
        for name in ("idle", "absolute", "renew_after"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, timedelta):
                raise TypeError(f"ExpiryPolicy.{name} must be a timedelta or None, not {value!r}")
            if value is not None and value <= timedelta(0):
                raise ValueError(f"ExpiryPolicy.{name} must be positive, got {value}")
        if self.idle is not None and self.absolute is not None and self.idle > self.absolute:
            raise ValueError(
                f"ExpiryPolicy.idle ({self.idle}) must not exceed absolute ({self.absolute})"
            )
        if self.renew_after is not None:
            if self.idle is None:
                raise ValueError("ExpiryPolicy.renew_after needs an idle bound")
            if self.renew_after >= self.idle:
                raise ValueError(
                    f"ExpiryPolicy.renew_after ({self.renew_after}) must be shorter than "
                    f"idle ({self.idle})"
                )

    @classmethod
    def aal1(cls) -> ExpiryPolicy:
        """NIST AAL1: no idle bound, 30 days absolute."""
        return cls(idle=None, absolute=timedelta(days=30))

    @classmethod
    def aal2(cls) -> ExpiryPolicy:
        """NIST AAL2 (the default): 30 minutes idle, 12 hours absolute."""
        return cls()

    @classmethod
    def aal3(cls) -> ExpiryPolicy:
        """NIST AAL3: 15 minutes idle, 12 hours absolute."""
        return cls(idle=timedelta(minutes=15), absolute=timedelta(hours=12))

    @classmethod
    def never(cls) -> ExpiryPolicy:
        """No expiry unless set per session (the Rust crate's ``Ignore``)."""
        return cls(idle=None, absolute=None)

    @property
    def renewal_step(self) -> timedelta | None:
        """The effective ``renew_after``: a tenth of idle unless set."""
        idle = self.idle
        if idle is None:
            return None
        return self.renew_after if self.renew_after is not None else idle / 10

    def initial_expiry(self, created_at: datetime) -> datetime | None:
        """The expiry of a session created at ``created_at``."""
        return self.renewed_expiry(created_at, created_at)

    def renewed_expiry(self, created_at: datetime, now: datetime) -> datetime | None:
        """The expiry a session has if it is active at ``now``: never past the absolute bound."""
        idle, absolute = self.idle, self.absolute
        idle_bound = None if idle is None else later_by(now, idle)
        if absolute is None:
            return idle_bound
        absolute_bound = later_by(created_at, absolute)
        return absolute_bound if idle_bound is None else min(idle_bound, absolute_bound)

    def renewal_due(
        self, created_at: datetime, expires_at: datetime | None, now: datetime
    ) -> datetime | None:
        """The new expiry to write if a load at ``now`` should renew, else None.

        Renewal happens only with an idle bound, only for a session that has an expiry, and
        only once it would move the deadline later by at least `renewal_step`.
        """
        idle = self.idle
        if idle is None or expires_at is None:
            return None
        step = self.renew_after if self.renew_after is not None else idle / 10
        renewed = self.renewed_expiry(created_at, now)
        if renewed is None or renewed - expires_at < step:
            return None
        return renewed
