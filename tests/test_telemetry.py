"""OpenTelemetry: the metric and span names, their attributes, that no secret reaches any of
them, and that nothing is measured while no SDK is installed.

The real SDK with its in-memory exporters. The library uses the global providers, so the
``otel`` fixture installs an SDK for one test and takes it away again afterwards, the way
OpenTelemetry's own test utilities reset the globals.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from tests.backends import OutageMemoryBackend
from tests.clock import FakeClock
from tests.purge_support import SteppedSleep, insert_rows, rows
from typed_session_sql import (
    DoNothing,
    MemoryBackend,
    PurgeScheduler,
    SessionConflictError,
    SessionStore,
    SetCookie,
    SqlBackend,
    StoreUnavailableError,
    telemetry,
)
from typed_session_sql.ids import IdHasher

pytestmark = pytest.mark.anyio

PRINCIPAL = "alice-secret-principal@example.com"
MARKER = "secret-session-data-7c1f"


@dataclass
class Cart:
    items: list[str] = field(default_factory=list)


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    telemetry._made = None  # instruments made on the previous provider
    telemetry._counted.clear()
    telemetry._behind.clear()


@dataclass
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> [(attributes, value or histogram count)]."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # type: ignore[union-attr]
                        out.setdefault(metric.name, []).append(
                            (dict(point.attributes or {}), value)
                        )
        return out


@pytest.fixture
def otel() -> Iterator[Otel]:
    _reset_globals()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield Otel(spans, reader, tracer_provider)
    finally:
        meter_provider.shutdown()
        tracer_provider.shutdown()
        _reset_globals()


def everything_reported(otel: Otel) -> str:
    """Every name, attribute, event and status text the spans and metrics carry, as text."""
    parts: list[str] = []
    for span in otel.finished():
        parts += [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
        parts += [repr((e.name, dict(e.attributes or {}))) for e in span.events]
    parts.append(repr(otel.points()))
    return "\n".join(parts)


async def test_every_operation_is_a_span_and_a_duration_and_no_secret_reaches_them(
    otel: Otel, clock: FakeClock
) -> None:
    backend = MemoryBackend()
    store = SessionStore(Cart, backend, clock=clock)
    tracer = trace.get_tracer("the app")
    with tracer.start_as_current_span("GET /cart") as request:
        session = store.new(Cart([MARKER]))
        session.sign_in(PRINCIPAL)
        created = await store.save(session)
        assert isinstance(created, SetCookie)
        loaded = await store.load(created.value)
        assert loaded is not None
        assert isinstance(await store.save(loaded), DoNothing)  # unchanged: no backend call
    # Two requests race: the modify() one replays, the plain one is refused.
    first, second = await store.load(created.value), await store.load(created.value)
    assert first is not None
    assert second is not None
    first.modify(lambda cart: cart.items.append("a"))
    second.modify(lambda cart: cart.items.append("b"))
    await store.save(first)
    await store.save(second)
    third = await store.load(created.value)
    fourth = await store.load(created.value)
    assert third is not None
    assert fourth is not None
    third.data.items.append("c")
    fourth.data.items.append("d")
    await store.save(third)
    with pytest.raises(SessionConflictError):
        await store.save(fourth)
    [info] = await store.sessions_of(PRINCIPAL)
    assert not await store.revoke(PRINCIPAL, "0" * 64)
    await store.revoke_all(PRINCIPAL)
    await insert_rows(backend, rows(clock.now, expired=3, live=2))
    assert await store.purge_expired(batch_size=2) == 3
    stats = await telemetry.measure_table(backend, clock.now)
    assert stats is not None
    doomed = store.new(Cart(["x"]))
    await store.save(doomed)
    doomed.delete()
    await store.save(doomed)
    await store.clear()

    spans = otel.finished()
    names = [span.name for span in spans]
    assert set(names) == {
        "typed_session.save",
        "typed_session.load",
        "typed_session.list",
        "typed_session.revoke",
        "typed_session.revoke_all",
        "typed_session.purge",
        "typed_session.purge_batch",
        "typed_session.delete",
        "typed_session.clear",
        "GET /cart",
    }
    assert names[:3] == ["typed_session.save", "typed_session.load", "GET /cart"]  # no unchanged
    for span in spans[:2]:  # children of the request's span
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
    assert names.count("typed_session.purge_batch") == 2  # 2 + 1 rows
    purge_span = next(span for span in spans if span.name == "typed_session.purge")
    batch_span = next(span for span in spans if span.name == "typed_session.purge_batch")
    assert batch_span.parent is not None
    assert batch_span.parent.span_id == purge_span.context.span_id
    refused = [
        s for s in spans if dict(s.attributes or {}).get("typed_session.outcome", "ok") != "ok"
    ]
    assert [dict(s.attributes or {})["error.type"] for s in refused] == ["SessionConflictError"]
    assert refused[0].status.description == "SessionConflictError"

    points = otel.points()
    durations = {
        (attrs["operation"], attrs["outcome"]): count
        for attrs, count in points["typed_session.operation.duration"]
    }
    assert durations == {
        ("save", "ok"): 5,  # the unchanged save costs nothing, so it is not measured
        ("save", "conflict"): 1,
        ("load", "ok"): 5,
        ("list", "ok"): 1,
        ("revoke", "ok"): 1,
        ("revoke_all", "ok"): 1,
        ("purge", "ok"): 1,
        ("purge_batch", "ok"): 2,
        ("delete", "ok"): 1,
        ("clear", "ok"): 1,
    }
    assert sorted((a["outcome"], v) for a, v in points["typed_session.conflicts"]) == [
        ("refused", 1),
        ("replayed", 1),
    ]
    assert [v for _, v in points["typed_session.purge.rows"]] == [3]
    assert [v for _, v in points["typed_session.sessions.live"]] == [stats.live]
    assert [v for _, v in points["typed_session.sessions.expired"]] == [0]
    assert [v for _, v in points["typed_session.purge.lag"]] == [0.0]

    reported = everything_reported(otel)
    id_hash = IdHasher(None)(created.value)
    for secret in (created.value, id_hash.hex(), info.handle, PRINCIPAL, MARKER):
        assert secret not in reported


async def test_an_outage_is_an_unavailable_outcome_with_the_error_class_only(
    otel: Otel, clock: FakeClock
) -> None:
    backend = OutageMemoryBackend()
    backend.failure = StoreUnavailableError("connection to 10.0.0.1 refused for alice")
    store = SessionStore(Cart, backend, clock=clock)
    created = await store.save(store.new(Cart(["x"])))
    assert isinstance(created, SetCookie)
    backend.down = True
    with pytest.raises(StoreUnavailableError):
        await store.load(created.value)
    span = otel.finished()[-1]
    assert span.name == "typed_session.load"
    assert dict(span.attributes or {})["typed_session.outcome"] == "unavailable"
    assert span.status.description == "StoreUnavailableError"
    assert not span.events  # no exception event: its message is not ours to publish
    assert ({"operation": "load", "outcome": "unavailable"}, 1) in otel.points()[
        "typed_session.operation.duration"
    ]
    assert "alice" not in everything_reported(otel)


async def test_durations_are_bucketed_in_seconds_not_milliseconds(
    otel: Otel, clock: FakeClock
) -> None:
    store = SessionStore(Cart, MemoryBackend(), clock=clock)
    await store.save(store.new(Cart(["x"])))
    data = otel.reader.get_metrics_data()
    assert data is not None
    [histogram] = [
        metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "typed_session.operation.duration"
    ]
    [point] = histogram.data.data_points
    assert point.explicit_bounds[0] == 0.0001  # type: ignore[union-attr]
    assert point.explicit_bounds[-1] == 5.0  # type: ignore[union-attr]


async def test_the_lag_gauge_says_how_long_expired_rows_wait(otel: Otel, clock: FakeClock) -> None:
    backend = MemoryBackend()
    await insert_rows(backend, rows(clock.now, expired=4, live=2))
    await telemetry.measure_table(backend, clock.now)
    points = otel.points()
    assert [v for _, v in points["typed_session.sessions.expired"]] == [4]
    assert [v for _, v in points["typed_session.sessions.live"]] == [2]
    assert [v for _, v in points["typed_session.purge.lag"]] == [4.0]  # the oldest: 4 s ago


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_the_scheduler_counts_the_table_after_each_pass_when_asked(
    otel: Otel, clock: FakeClock
) -> None:
    backend = MemoryBackend()
    store = SessionStore(Cart, backend, clock=clock)
    await insert_rows(backend, rows(clock.now, expired=3, live=2))
    sleep = SteppedSleep(clock)
    async with PurgeScheduler(store, first_delay=timedelta(0), sleep=sleep, measure_table=True):
        await sleep.step()
    assert [v for _, v in otel.points()["typed_session.sessions.live"]] == [2]


async def test_no_sdk_no_measuring(clock: FakeClock) -> None:
    # The API is installed but no SDK: every operation gets the one shared do-nothing
    # context, so the request path allocates nothing for telemetry.
    backend = MemoryBackend()
    assert telemetry.operation("load", backend) is telemetry.operation("save", backend)
    store = SessionStore(Cart, backend, clock=clock)
    assert isinstance(await store.save(store.new(Cart(["x"]))), SetCookie)


def test_the_library_works_without_the_opentelemetry_api() -> None:
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import anyio
from typed_session_sql import MemoryBackend, SessionStore, telemetry

async def main():
    store = SessionStore(dict, MemoryBackend())
    created = await store.save(store.new({"a": 1}))
    assert (await store.load(created.value)).data == {"a": 1}
    assert await store.purge_expired() == 0
    assert await telemetry.measure_table(store.backend, store.now()) is not None
    assert telemetry.operation("load", store.backend) is telemetry._NOTHING

anyio.run(main)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.sql
async def test_spans_carry_the_databases_attributes(
    otel: Otel, sql_backend: SqlBackend, clock: FakeClock
) -> None:
    store = SessionStore(Cart, sql_backend, clock=clock)
    created = await store.save(store.new(Cart(["x"])))
    assert isinstance(created, SetCookie)
    await store.load(created.value)
    span = otel.finished()[-1]
    attributes = dict(span.attributes or {})
    dialect = sql_backend.engine.dialect.name
    assert attributes["db.system.name"] in (
        {"mysql", "mariadb"} if dialect == "mysql" else {dialect}
    )
    assert attributes["db.collection.name"] == str(sql_backend.table.fullname)
    assert attributes["db.operation.name"] == "load"
    assert ("db.namespace" in attributes) == (dialect != "sqlite")


@pytest.mark.sql(database="postgres", execution="driver")
async def test_the_asyncpg_span_nests_inside_the_store_operation(
    otel: Otel, sql_backend: SqlBackend, clock: FakeClock
) -> None:
    store = SessionStore(Cart, sql_backend, clock=clock)
    created = await store.save(store.new(Cart(["x"])))
    assert isinstance(created, SetCookie)
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:
        otel.spans.clear()
        await store.load(created.value)
    finally:
        instrumentor.uninstrument()
    spans = [span for span in otel.finished() if span.name != "SELECT 1"]
    assert [span.name for span in spans] == ["SELECT", "typed_session.load"]
    select, load = spans
    assert select.parent is not None
    assert select.parent.span_id == load.context.span_id
