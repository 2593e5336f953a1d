"""OpenTelemetry metrics and spans, the way libraries do it: through the OpenTelemetry API
and the global providers, so an application that installs the SDK sees them with no
configuration, and one that does not pays next to nothing.

The API is optional (``pip install 'typed-session-sql[otel]'``); without it, or with it
but no SDK installed, every operation takes the same shared do-nothing path: no span, no
clock read, no attributes dict.

What is reported (docs/operations.md says what to alert on):

- ``typed_session.operation.duration``: histogram, seconds, attributes ``operation``
  (``load``, ``save``, ``delete``, ``list``, ``revoke``, ``revoke_all``, ``clear``,
  ``purge``, ``purge_batch``) and ``outcome`` (``ok``, ``conflict``, ``unavailable``,
  ``table_missing``, ``refused``, ``id_collision``, ``skipped``, ``cancelled``, ``error``);
- ``typed_session.conflicts``: counter of lost races, attribute ``outcome``: ``replayed``
  (the change was replayed and saved) or ``refused`` (the save raised);
- ``typed_session.purge.rows``: counter of rows purged;
- ``typed_session.sessions.live``, ``typed_session.sessions.expired`` and
  ``typed_session.purge.lag`` (seconds the oldest expired row has waited): observable
  gauges, reported once the application counts the table (`measure_table`, or
  ``PurgeScheduler(..., measure_table=True)``), since counting costs a query;
- ``typed_session.purge.behind``: observable gauge, 1 while a `PurgeScheduler` finds
  its purge falling behind (expired sessions piling up from pass to pass), else 0;
  reported from the scheduler's second pass on, at no cost in queries;
- a span per store operation, ``typed_session.<operation>``, a child of the current span
  (the request's), with the database's attributes (``db.system.name``,
  ``db.namespace``, ``db.collection.name``); the driver's own spans nest inside it.

Never a session id, id hash, cookie, principal or session data: the attributes above are
the only ones, and a failure is named by its exception class, never its message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from typed_session_sql.backend import Backend, TableStats, stats_of
from typed_session_sql.errors import (
    DataRejectedError,
    IdCollisionError,
    SessionConflictError,
    SessionTableMissingError,
    SessionTooLargeError,
    StoreUnavailableError,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation

try:
    from opentelemetry import metrics, trace
except ImportError:  # the otel extra is not installed: telemetry is off
    metrics = trace = None  # type: ignore[assignment]

__all__ = [
    "DURATION_BUCKETS",
    "Operation",
    "backend_attributes",
    "conflict",
    "measure_table",
    "operation",
    "outcome_of",
    "purge_behind",
    "purged",
]

_NAME = "typed_session_sql"

Attributes = Mapping[str, str]


def backend_attributes(backend: Backend) -> Attributes:
    """The database attributes a backend offers for spans (``telemetry_attributes``, an
    optional property; `SqlBackend` and any ForwardingBackend around one have it)."""
    attributes: Attributes = getattr(backend, "telemetry_attributes", {})
    return attributes


def outcome_of(error: BaseException) -> str:
    """The ``outcome`` attribute for an operation that raised ``error``."""
    if isinstance(error, SessionTableMissingError):
        return "table_missing"
    if isinstance(error, StoreUnavailableError):
        return "unavailable"
    if isinstance(error, SessionConflictError):
        return "conflict"
    if isinstance(error, IdCollisionError):
        return "id_collision"
    if isinstance(error, SessionTooLargeError | DataRejectedError | ValueError | TypeError):
        return "refused"
    if not isinstance(error, Exception):
        return "cancelled"
    return "error"


class _Nothing:
    """The do-nothing operation: what every call gets while telemetry is off."""

    __slots__ = ()

    def __enter__(self) -> Operation:
        return self  # type: ignore[return-value]  # same interface; outcome is ignored

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def outcome(self) -> str:
        return "ok"

    @outcome.setter
    def outcome(self, value: str) -> None:
        pass


_NOTHING = _Nothing()


class Operation:
    """One measured store operation: a span, made current, and a duration on exit."""

    __slots__ = ("_scope", "_span", "_started", "backend", "name", "outcome")

    def __init__(self, name: str, backend: Backend) -> None:
        self.name = name
        self.backend = backend
        self.outcome = "ok"
        """What the operation came to, if it raises nothing (``skipped`` for a purge)."""

    def __enter__(self) -> Operation:
        assert trace is not None
        tracer = _tracer()
        attributes = {**backend_attributes(self.backend), "db.operation.name": self.name}
        self._span = tracer.start_span(
            f"typed_session.{self.name}", attributes=attributes, kind=trace.SpanKind.INTERNAL
        )
        # The span is current while the operation runs, so the driver's spans nest in it.
        self._scope = trace.use_span(
            self._span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        )
        self._scope.__enter__()
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        seconds = time.perf_counter() - self._started
        outcome = self.outcome if exc is None else outcome_of(exc)
        self._span.set_attribute("typed_session.outcome", outcome)
        if exc is not None:
            # The class only: a message could quote what an application put in it.
            error_type = type(exc).__qualname__
            self._span.set_attribute("error.type", error_type)
            self._span.set_status(trace.StatusCode.ERROR, error_type)
        _instruments().duration.record(seconds, _labels(self.name, outcome))
        self._scope.__exit__(None, None, None)


def operation(name: str, backend: Backend) -> Operation:
    """A context manager measuring the store operation ``name`` (a span, a duration),
    or the shared do-nothing one while no OpenTelemetry SDK is installed."""
    return measured(name, backend) or _NOTHING  # type: ignore[return-value]


def measured(name: str, backend: Backend) -> Operation | None:
    """`operation`, or None while telemetry is off: the store's path around every load and
    save, which then makes no call of the do-nothing operation at all."""
    return Operation(name, backend) if _active() else None


def conflict(outcome: str) -> None:
    """Count a lost race: ``replayed`` or ``refused``."""
    if _active():
        _instruments().conflicts.add(1, _labels(None, outcome))


def purged(rows: int) -> None:
    """Count ``rows`` purged."""
    if rows and _active():
        _instruments().purge_rows.add(rows)


# -- whether the purge keeps up, as an observable gauge -----------------------------------

_behind: dict[tuple[tuple[str, str], ...], bool] = {}


def purge_behind(backend: Backend, behind: bool) -> None:
    """Report whether the purge of ``backend``'s table falls behind (the
    ``typed_session.purge.behind`` gauge, 1 or 0, from now on)."""
    if trace is not None:
        _behind[tuple(sorted(backend_attributes(backend).items()))] = behind
        _instruments()  # registers the gauge's callback


def _observe_behind(options: CallbackOptions) -> Iterable[Observation]:
    for key, behind in list(_behind.items()):  # the exporter's thread reads it
        yield metrics.Observation(int(behind), dict(key))


# -- the table's counts, as observable gauges ----------------------------------------------

_counted: dict[tuple[tuple[str, str], ...], tuple[TableStats, datetime]] = {}


async def measure_table(backend: Backend, now: datetime) -> TableStats | None:
    """Count ``backend``'s table at ``now`` (one query) for the ``typed_session.sessions.*``
    and ``typed_session.purge.lag`` gauges, which report the latest count of each table
    from then on. None (and nothing reported) if the backend reports no statistics."""
    reporter = stats_of(backend)
    if reporter is None:
        return None
    stats = await reporter.stats(now)
    if trace is not None:
        _counted[tuple(sorted(backend_attributes(backend).items()))] = (stats, now)
        _instruments()  # registers the gauges' callbacks
    return stats


def _observe(value: Callable[[TableStats, datetime], float]) -> Any:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        for key, (stats, now) in list(_counted.items()):  # the exporter's thread reads it
            yield metrics.Observation(value(stats, now), dict(key))

    return callback


def _lag(stats: TableStats, now: datetime) -> float:
    oldest = stats.oldest_expiry
    if oldest is None or oldest > now:
        return 0.0
    return (now - oldest).total_seconds()


# -- the instruments, made once --------------------------------------------------------


DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)  # fmt: skip
"""The duration histogram's bucket boundaries, in seconds: 0.1 ms (a memory backend) to
5 s (a database in trouble)."""


class _Instruments:
    def __init__(self) -> None:
        assert metrics is not None
        meter = metrics.get_meter(_NAME)
        name, what = "typed_session.operation.duration", "How long a store operation took"
        try:  # the SDK's default buckets (0 to 10,000) are for milliseconds
            self.duration = meter.create_histogram(
                name, "s", what, explicit_bucket_boundaries_advisory=DURATION_BUCKETS
            )
        except TypeError:  # API before 1.23: no advice; the application's views decide
            self.duration = meter.create_histogram(name, "s", what)
        self.conflicts = meter.create_counter(
            "typed_session.conflicts",
            unit="{conflict}",
            description="Saves that lost a race: replayed, or refused",
        )
        self.purge_rows = meter.create_counter(
            "typed_session.purge.rows", unit="{session}", description="Expired sessions purged"
        )
        meter.create_observable_gauge(
            "typed_session.sessions.live",
            [_observe(lambda stats, now: stats.live)],
            unit="{session}",
            description="Live sessions at the table's latest count",
        )
        meter.create_observable_gauge(
            "typed_session.sessions.expired",
            [_observe(lambda stats, now: stats.expired)],
            unit="{session}",
            description="Expired sessions a purge would remove, at the latest count",
        )
        meter.create_observable_gauge(
            "typed_session.purge.lag",
            [_observe(_lag)],
            unit="s",
            description="How long the oldest expired session has waited for a purge",
        )
        meter.create_observable_gauge(
            "typed_session.purge.behind",
            [_observe_behind],
            unit="1",
            description="1 while the purge falls behind (expired sessions pile up), else 0",
        )


_made: _Instruments | None = None
_tracers: dict[object, trace.Tracer] = {}


def _tracer() -> trace.Tracer:
    """This library's tracer from the current provider, made once per provider (making one
    per span costs more than the span)."""
    provider = trace.get_tracer_provider()
    tracer = _tracers.get(provider)
    if tracer is None:
        tracer = _tracers[provider] = provider.get_tracer(_NAME)
    return tracer


def _instruments() -> _Instruments:
    global _made
    if _made is None:
        _made = _Instruments()
    return _made


_label_sets: dict[tuple[str | None, str], dict[str, str]] = {}


def _labels(name: str | None, outcome: str) -> dict[str, str]:
    """One shared attributes dict per (operation, outcome): none made per call."""
    labels = _label_sets.get((name, outcome))
    if labels is None:
        labels = {"outcome": outcome} if name is None else {"operation": name, "outcome": outcome}
        _label_sets[(name, outcome)] = labels
    return labels


def _make_active() -> Callable[[], bool]:
    """Whether an SDK (any provider but the API's placeholder) is installed, asked on every
    operation: an application may install it after making its store.

    The public getters look up an environment variable on every call while no provider is
    set, which costs more than the rest of an operation's bookkeeping; the API's own module
    globals say the same for the price of two attribute reads. Where they are not found (an
    API version that renamed them), every operation is measured.
    """
    if trace is None:
        return lambda: False
    # A provider named in OTEL_PYTHON_TRACER_PROVIDER / _METER_PROVIDER is installed by the
    # first get_*_provider() call: make it now, so that the globals below see it.
    trace.get_tracer_provider()
    metrics.get_meter_provider()
    from opentelemetry.metrics import _internal as metrics_state

    tracing, metering = vars(trace), vars(metrics_state)  # the modules' globals, read live
    if "_TRACER_PROVIDER" in tracing and "_METER_PROVIDER" in metering:

        def active() -> bool:
            return (
                tracing["_TRACER_PROVIDER"] is not None or metering["_METER_PROVIDER"] is not None
            )

        return active
    return lambda: True  # pragma: no cover - measure always: correct, a little slower


_active = _make_active()
