"""How fast a purge pass goes: a policy (`PurgePacing`) and the controller that applies it
to one pass (`Pacer`).

A purge that runs its batches back to back takes a core of the database for as long as it
runs, and the live requests meanwhile wait for it: on PostgreSQL, 16 tasks loading
sessions saw their p99 grow 4.8x during a flat-out purge of 1M rows. A paced pass instead
measures what each batch cost and decides two things from it:

- **the next batch's size**: aimed at `PurgePacing.batch_seconds` at the idle per-row
  cost (below), at most doubling or halving from one batch to the next, within
  `PurgePacing.min_batch_size` .. `PurgePacing.max_batch_size`. A short batch holds its
  row locks and its share of the CPU briefly, whatever the database's speed;
- **the pause after it**: a duty cycle. An idle database works `PurgePacing.duty_cycle` of
  the time (the pause is the batch's duration times ``(1 - duty_cycle) / duty_cycle``).
  Recent batches that cost more per row than `PurgePacing.contention` times an idle one
  (the cheapest tenth of the pass's batches) are a sign that live traffic competes for
  the database: the pause is then multiplied by `PurgePacing.backoff` (again for every
  further such batch, up to `PurgePacing.max_pause`), and divided by
  `PurgePacing.recovery` for every batch that costs what an idle one does. The per-row
  cost compared is smoothed over the recent batches, and the idle one is a low quantile
  rather than the minimum, so that neither one odd batch nor one lucky one sets the pace.

So an idle database is purged nearly as fast as flat out, and a busy one sees short
batches far apart. The controller only sees durations from an injected clock, so its
decisions are tested without a database or real time (tests/purge/test_pacing.py).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

__all__ = ["DEFAULT_PACING", "Pacer", "PurgePacing"]


@dataclass(frozen=True, slots=True)
class PurgePacing:
    """The policy a paced purge pass follows (see the module docstring); the defaults were
    measured on PostgreSQL (docs/operations.md). ``purge_pass(..., pacing=None)`` turns
    pacing off, as does giving a pass an explicit ``batch_size`` or ``pause``.

    Raises `ValueError` at construction for a value out of its range.
    """

    batch_seconds: float = 0.02
    """The duration each batch aims at, in seconds."""
    first_batch_size: int = 1000
    """Rows in a pass's first batch, before any cost is known."""
    min_batch_size: int = 100
    """The fewest rows a batch asks for (so a slow database still makes progress)."""
    max_batch_size: int = 10_000
    """The most rows a batch asks for (so a fast one still holds its locks briefly)."""
    duty_cycle: float = 0.9
    """The share of an idle pass spent in batches, in (0, 1]; 1 pauses only under
    contention."""
    contention: float = 1.5
    """Recent batches costing more per row than this many times an idle one (the cheapest
    tenth of the pass's batches) count as contended; more than 1."""
    backoff: float = 2.0
    """The factor the pause grows by with each contended batch; more than 1."""
    recovery: float = 4.0
    """The factor the pause shrinks by with each clean batch (down to the duty cycle's);
    more than 1. Faster than `backoff`, so that noise (a batch now and then that costs
    more for reasons of its own) does not ratchet the pause up: it grows only while most
    batches are contended."""
    max_pause: float = 1.0
    """The longest pause after a batch, in seconds."""

    def __post_init__(self) -> None:
        if not self.batch_seconds > 0:
            raise ValueError("batch_seconds must be positive")
        if not 0 < self.min_batch_size <= self.max_batch_size:
            raise ValueError("need 0 < min_batch_size <= max_batch_size")
        if not self.min_batch_size <= self.first_batch_size <= self.max_batch_size:
            raise ValueError("first_batch_size must be within min_batch_size .. max_batch_size")
        if not 0 < self.duty_cycle <= 1:
            raise ValueError("duty_cycle must be in (0, 1]")
        if not self.contention > 1:
            raise ValueError("contention must be more than 1")
        if not self.backoff > 1:
            raise ValueError("backoff must be more than 1")
        if not self.recovery > 1:
            raise ValueError("recovery must be more than 1")
        if not self.max_pause >= 0:
            raise ValueError("max_pause must not be negative")


DEFAULT_PACING = PurgePacing()
"""The pacing a purge pass, the scheduler and the CLI use unless told otherwise."""

# How far the backoff may multiply the idle pause: enough to reach max_pause from a batch
# of a fraction of a millisecond, never so far that the float overflows.
_MAX_SLOWDOWN = 1e6
# The weight of the newest batch in the smoothed per-row cost.
_SMOOTHING = 0.5
# The idle cost is the cheapest 1/_IDLE_QUANTILE of the last _REMEMBERED batches' per-row
# costs: under contention batches come far apart, so idle ones stay most of what is
# remembered for long, while a database that got slower for good raises it in time.
_IDLE_QUANTILE = 10
_REMEMBERED = 1000


class Pacer:
    """One pass's pacing controller: `batch_size` is the next batch's size; `after_batch`
    takes what the batch removed and how long it took, and returns the pause before the
    next one.

    ``batch_size`` or ``pause`` fix that decision (an explicit setting of the pass); with
    both given, the pass runs as an unpaced one.
    """

    __slots__ = (
        "_costs",
        "_fixed_pause",
        "_fixed_size",
        "_order",
        "_recent",
        "_slowdown",
        "batch_size",
        "pacing",
    )

    def __init__(
        self, pacing: PurgePacing, *, batch_size: int | None = None, pause: float | None = None
    ) -> None:
        self.pacing = pacing
        self._fixed_size = batch_size
        self._fixed_pause = pause
        self.batch_size = batch_size if batch_size is not None else pacing.first_batch_size
        """The size of the next batch."""
        self._costs: list[float] = []  # recent batches' seconds per row, sorted
        self._order: deque[float] = deque()  # the same, oldest first
        self._recent: float | None = None  # the smoothed seconds per row of recent batches
        self._slowdown = 1.0  # the backoff's multiplier of the idle pause

    @property
    def slowdown(self) -> float:
        """How many times the idle pause the pause now is (1 while no contention is seen)."""
        return self._slowdown

    def _note(self, per_row: float) -> float:
        """Keep ``per_row`` among the pass's recent costs; return the idle cost: the
        cheapest tenth of them (a low quantile, not the minimum, so that one lucky batch
        does not make every later one look contended)."""
        if len(self._order) == _REMEMBERED:
            del self._costs[bisect.bisect_left(self._costs, self._order.popleft())]
        self._order.append(per_row)
        bisect.insort(self._costs, per_row)
        return self._costs[len(self._costs) // _IDLE_QUANTILE]

    def after_batch(self, removed: int, seconds: float) -> float:
        """Take a full batch's cost (``removed`` rows in ``seconds``); set the next
        `batch_size` and return the pause before it, in seconds."""
        pacing = self.pacing
        seconds = max(seconds, 0.0)
        if removed > 0 and seconds > 0:
            per_row = seconds / removed
            idle_cost = self._note(per_row)
            # Smoothed, so that one slow batch (a checkpoint, a context switch) is no trend.
            if self._recent is None:
                self._recent = per_row
            else:
                self._recent += _SMOOTHING * (per_row - self._recent)
            if self._recent > idle_cost * pacing.contention:
                self._slowdown = min(self._slowdown * pacing.backoff, _MAX_SLOWDOWN)
            else:
                self._slowdown = max(self._slowdown / pacing.recovery, 1.0)
            if self._fixed_size is None:
                # Sized at the idle cost: contention shows in the pause, not in batches
                # that shrink until each one is all fixed cost (a commit, a round trip).
                wanted = round(pacing.batch_seconds / idle_cost)
                # At most double or halve per batch: one odd batch does not swing the next.
                wanted = min(max(wanted, self.batch_size // 2), self.batch_size * 2)
                self.batch_size = min(max(wanted, pacing.min_batch_size), pacing.max_batch_size)
        if self._fixed_pause is not None:
            return self._fixed_pause
        idle_pause = seconds * (1 - pacing.duty_cycle) / pacing.duty_cycle
        if self._slowdown > 1 and idle_pause == 0:
            # duty_cycle 1: contention still earns a pause, in proportion to the batch.
            idle_pause = seconds / pacing.backoff
        return min(idle_pause * self._slowdown, pacing.max_pause)
