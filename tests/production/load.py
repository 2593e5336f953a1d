"""Running the load around a fault, and telling what happened.

:class:`Load` starts the worker processes (and, for the HTTP slice, the app in a real
uvicorn), reads every operation they report, and waits on states: "each process has had
N successes since t", "each process has seen a failure since t", each bounded by a
deadline, so a scenario that stops making progress fails instead of hanging.
:func:`verdict` then checks the surviving server's data against every worker's ledger
and :class:`Figures` gives the scenario's one line of figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.production.workload import APP_CONFIG_ENV, Counts, Ledger, slot
from tests.support.servers import free_port, wait_for_port
from typed_session_sql import SessionStore, SetCookie, SqlBackend

ROOT = Path(__file__).parents[2]
STOP_TIMEOUT = 60.0
LINE_LIMIT = 1 << 24  # bytes: a ledger (one line) lists every signed-out cookie


@dataclass(frozen=True, slots=True)
class Op:
    end: float  # time.time() when it finished (one clock for every process on this host)
    latency: float
    outcome: str
    process: str


@dataclass
class Worker:
    name: str
    process: asyncio.subprocess.Process
    ops: list[Op] = field(default_factory=list)
    ledger: Ledger | None = None
    reader: asyncio.Task[None] | None = None  # reads its stdout until end of file

    def count(self, since: float, outcome: Callable[[str], bool]) -> int:
        return sum(1 for op in self.ops if op.end >= since and outcome(op.outcome))


async def shared_sessions(url: str, table: str, count: int) -> list[str]:
    """Create the table and ``count`` shared sessions; return their cookies."""
    backend = SqlBackend.from_url(url, table_name=table)
    try:
        await backend.create_schema()
        store = SessionStore(Counts, backend)
        cookies = []
        for _ in range(count):
            saved = await store.save(store.new(Counts()))
            assert isinstance(saved, SetCookie)
            cookies.append(saved.value)
        return cookies
    finally:
        await backend.dispose()


class Load:
    """Worker processes running the load; see the module docstring."""

    def __init__(self, workers: list[Worker], *, http: bool) -> None:
        self.workers = workers
        self.http = http  # whether an app process serves the HTTP workers
        self.started = time.time()

    @property
    def ops(self) -> list[Op]:
        return [op for worker in self.workers for op in worker.ops]

    async def until(self, what: str, within: float, done: Callable[[Worker], bool]) -> float:
        """Wait until ``done`` holds for every worker; fail after ``within`` seconds."""
        deadline = time.monotonic() + within
        while not all(done(worker) for worker in self.workers):
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within:.0f} s: {what}")
            for worker in self.workers:
                if worker.process.returncode is not None:
                    raise AssertionError(f"{worker.name} exited early: {worker.process.returncode}")
            await asyncio.sleep(0.05)  # a poll of the workers' reports, not a wait for time
        return time.time()

    async def successes(self, count: int, since: float, within: float) -> float:
        return await self.until(
            f"{count} successful operations in each process",
            within,
            lambda worker: worker.count(since, lambda outcome: outcome == "ok") >= count,
        )

    async def failures(self, since: float, within: float) -> float:
        return await self.until(
            "a failed operation in each process",
            within,
            lambda worker: worker.count(since, lambda outcome: outcome != "ok") >= 1,
        )

    async def stop(self) -> None:
        """Ask every worker to stop; wait (bounded) for its ledger and its exit."""
        for worker in self.workers:
            stdin = worker.process.stdin
            assert stdin is not None
            stdin.write(b"stop\n")
            await stdin.drain()
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            assert worker.reader is not None
            # Its last line is read once its output ends, which may be after it exits.
            await asyncio.wait_for(worker.reader, max(1.0, deadline - time.monotonic()))
            code = await asyncio.wait_for(worker.process.wait(), 10)
            assert code == 0, f"{worker.name} exited with {code}"
        missing = [worker.name for worker in self.workers if worker.ledger is None]
        assert not missing, f"no ledger from {missing}"


async def _read(worker: Worker) -> None:
    stdout = worker.process.stdout
    assert stdout is not None
    async for raw in stdout:
        line = raw.decode().rstrip("\n")
        if line.startswith("o "):
            _, end, latency, outcome = line.split(" ", 3)
            worker.ops.append(Op(float(end), float(latency), outcome, worker.name))
        elif line.startswith("L "):
            worker.ledger = Ledger.from_json(line[2:])


@asynccontextmanager
async def serving_app(
    url: str, table: str, logs: Path, engine: dict[str, Any] | None = None
) -> AsyncIterator[str]:
    """The app of tests/production/app.py in a real uvicorn on a free port; yields its base
    URL. ``engine`` replaces the app's engine options. Stopped by pid on the way out."""
    port = free_port()
    config: dict[str, Any] = {"url": url, "table": table}
    if engine is not None:
        config["engine"] = engine
    with (logs / "uvicorn.log").open("wb") as log:  # the child has its own copy of it
        app = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "uvicorn",
            "tests.production.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), APP_CONFIG_ENV: json.dumps(config)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
    try:
        await asyncio.to_thread(wait_for_port, port, until=time.monotonic() + 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        if app.returncode is None:
            app.terminate()
            try:
                await asyncio.wait_for(app.wait(), STOP_TIMEOUT)
            except TimeoutError:
                app.kill()
                await app.wait()


@asynccontextmanager
async def running_load(
    url: str,
    table: str,
    cookies: list[str],
    *,
    processes: int,
    http_processes: int,
    tasks: int,
    logs: Path,
    urls: list[str] | None = None,
    engine: dict[str, Any] | None = None,
) -> AsyncIterator[Load]:
    """``processes`` store workers and ``http_processes`` HTTP workers (against one
    uvicorn app process), each with ``tasks`` tasks; all stopped (by pid) on the way out.
    With ``urls``, process n (the app counting as the last) connects to ``urls[n]``, round
    robin; ``engine`` replaces every process's engine options."""
    urls = urls or [url]
    async with AsyncExitStack() as stack:
        base: dict[str, Any] = {"table": table, "cookies": cookies, "tasks": tasks}
        if engine is not None:
            base["engine"] = engine
        if http_processes:
            app_url = urls[processes % len(urls)]
            base["http"] = await stack.enter_async_context(
                serving_app(app_url, table, logs, engine)
            )
        workers: list[Worker] = []
        try:
            for n in range(processes + http_processes):
                http = n >= processes
                name = f"{'h' if http else 'p'}{n}"
                config = {
                    **base,
                    "url": urls[n % len(urls)],
                    "name": name,
                    "http": base.get("http") if http else None,
                }
                with (logs / f"{name}.log").open("wb") as log:
                    process = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tests.production.worker",
                        json.dumps(config),
                        cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": str(ROOT)},
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        limit=LINE_LIMIT,
                        stderr=log,
                    )
                worker = Worker(name, process)
                worker.reader = asyncio.ensure_future(_read(worker))
                workers.append(worker)
            yield Load(workers, http=bool(http_processes))
        finally:
            for worker in workers:
                if worker.process.returncode is None:
                    worker.process.kill()
                    await worker.process.wait()
            for worker in workers:
                if worker.reader is not None:
                    with suppress(BaseException):
                        await asyncio.wait_for(worker.reader, 10)


WARM_OPERATIONS = 1000  # successes per process before the fault
AFTER_OPERATIONS = 1000  # successes per process after it
PHASE_BOUND = 60.0  # seconds any one phase may take before the scenario fails
FAILURE_BOUND = 10.0  # seconds a failed operation may take: fast 503s, not hangs

Fault = Callable[[Load], Awaitable[object]]


async def around_a_fault(
    url: str,
    table: str,
    cookies: list[str],
    logs: Path,
    fault: Fault,
    *,
    urls: list[str] | None = None,
    engine: dict[str, Any] | None = None,
) -> tuple[Load, float, float]:
    """Three store processes and an HTTP one (6 tasks each) run until each has had
    WARM_OPERATIONS successes; then ``fault`` runs; then the load runs until each process
    has had AFTER_OPERATIONS successes after it, and stops. Returns the load and when the
    fault started and ended. ``urls`` and ``engine``: see :func:`running_load`."""
    async with running_load(
        url, table, cookies, processes=3, http_processes=1, tasks=6, logs=logs, urls=urls,
        engine=engine,
    ) as load:  # fmt: skip
        await load.successes(WARM_OPERATIONS, load.started, PHASE_BOUND)
        fault_start = time.time()
        await fault(load)
        fault_end = time.time()
        await load.successes(AFTER_OPERATIONS, fault_end, PHASE_BOUND)
        await load.stop()
    return load, fault_start, fault_end


# -- what happened --------------------------------------------------------------------------


@dataclass
class Verdict:
    """The surviving server's data against every ledger."""

    acknowledged: int = 0
    unknown: int = 0
    committed_unacknowledged: int = 0
    lost: int = 0
    over: int = 0  # more than acknowledged + unknown: a write applied twice
    violations: list[str] = field(default_factory=list)
    resurrected: int = 0
    signed_out: int = 0
    refused_stale_saves: int = 0
    pool_failures: int = 0
    pool_operations: int = 0


async def verdict(load: Load, url: str, table: str, cookies: list[str]) -> Verdict:
    backend = SqlBackend.from_url(url, table_name=table)
    stored: dict[str, int] = {}
    try:
        store = SessionStore(Counts, backend)
        for index, cookie in enumerate(cookies):
            session = await store.load(cookie)
            assert session is not None, f"shared session {index} is gone"
            for key, value in session.data.counts.items():
                stored[slot(index, key)] = value
        result = Verdict()
        for worker in load.workers:
            ledger = worker.ledger
            assert ledger is not None
            for name, acked in ledger.acked.items():
                value, unknown = stored.get(name, 0), ledger.unknown[name]
                result.acknowledged += acked
                result.unknown += unknown
                result.lost += max(0, ledger.last[name] - value)
                result.committed_unacknowledged += max(0, value - acked)
                result.over += max(0, value - acked - unknown)
            result.violations += ledger.violations
            result.resurrected += ledger.resurrected
            result.signed_out += len(ledger.signed_out)
            result.refused_stale_saves += ledger.refused_stale_saves
            result.pool_failures += ledger.pool_check.get("failed", 0)
            result.pool_operations += ledger.pool_check.get("operations", 0)
            for cookie in ledger.signed_out:  # and once more, from this side
                if await store.load(cookie) is not None:
                    result.resurrected += 1
        return result
    finally:
        await backend.dispose()


@dataclass
class Figures:
    """One scenario's figures, for its line in the log and its assertions."""

    processes: int
    seconds: float
    operations: int
    ok: int
    unavailable: int
    http_503: int
    other_failures: dict[str, int]
    max_latency: float
    max_failed_latency: float
    recovered_after: float  # fault start -> every process has succeeded again
    throughput_back_after: float  # fault end -> a second at half the pre-fault rate
    before_rate: float  # successes per second before the fault
    after_rate: float  # and once throughput was back

    def line(self, scenario: str, fault: str, result: Verdict) -> str:
        others = ", ".join(f"{k} {v}" for k, v in sorted(self.other_failures.items())) or "none"
        return (
            f"{scenario}: {self.processes} processes x {self.seconds:.1f} s x"
            f" {self.operations} operations ({self.ok} ok); fault: {fault};"
            f" unavailable {self.unavailable} (of which HTTP 503 {self.http_503}),"
            f" other failures: {others}; max latency {self.max_latency:.3f} s"
            f" (failed {self.max_failed_latency:.3f} s); recovered {self.recovered_after:.2f} s"
            f" after the fault, throughput back {self.throughput_back_after:.2f} s after it"
            f" ended ({self.before_rate:.0f} -> {self.after_rate:.0f} ops/s);"
            f" acknowledged increments {result.acknowledged}, lost {result.lost},"
            f" unknown outcome {result.unknown} ({result.committed_unacknowledged} committed);"
            f" signed out {result.signed_out}, resurrected {result.resurrected},"
            f" stale saves refused {result.refused_stale_saves};"
            f" pool check {result.pool_operations - result.pool_failures}/"
            f"{result.pool_operations} ok"
        )


def figures(load: Load, fault_start: float, fault_end: float) -> Figures:
    ops = sorted(load.ops, key=lambda op: op.end)
    first, last = ops[0].end, ops[-1].end
    failed = [op for op in ops if op.outcome != "ok"]
    others: dict[str, int] = {}
    for op in failed:
        if op.outcome != "unavailable":
            others[op.outcome] = others.get(op.outcome, 0) + 1
    recovered = max(
        min(
            (op.end for op in worker.ops if op.end >= fault_end and op.outcome == "ok"),
            default=last,
        )
        for worker in load.workers
    )
    before = [op for op in ops if op.outcome == "ok" and first + 1 <= op.end < fault_start]
    before_rate = len(before) / max(1e-9, fault_start - first - 1)
    back = _throughput_back(ops, fault_end, before_rate / 2)
    settled = [op for op in ops if op.outcome == "ok" and op.end >= fault_end + back]
    after_rate = len(settled) / max(1e-9, last - fault_end - back)
    return Figures(
        processes=len(load.workers) + (1 if load.http else 0),
        seconds=last - first,
        operations=len(ops),
        ok=len(ops) - len(failed),
        unavailable=sum(op.outcome == "unavailable" for op in failed),
        http_503=sum(op.outcome == "unavailable" and op.process.startswith("h") for op in failed),
        other_failures=others,
        max_latency=max(op.latency for op in ops),
        max_failed_latency=max((op.latency for op in failed), default=0.0),
        recovered_after=recovered - fault_start,
        throughput_back_after=back,
        before_rate=before_rate,
        after_rate=after_rate,
    )


def _first_success(worker: Worker, since: float, otherwise: float) -> float:
    ends = (op.end for op in worker.ops if op.end >= since and op.outcome == "ok")
    return min(ends, default=otherwise)


def _throughput_back(ops: list[Op], since: float, rate: float) -> float:
    """Seconds from ``since`` to the end of the first one-second window with at least
    ``rate`` successes (inf if none)."""
    ends = [op.end for op in ops if op.outcome == "ok" and op.end >= since]
    start = 0
    for index, end in enumerate(ends):
        while ends[start] < end - 1.0:
            start += 1
        if index - start + 1 >= rate:
            return end - since
    return float("inf")


def assert_nothing_lost(result: Verdict, seen: Figures) -> None:
    """What every fault scenario must show: no acknowledged write lost or applied twice,
    no session back from the dead, every pooled connection working afterwards, failures
    only "unavailable" (503) and fast, and throughput back."""
    assert result.lost == 0
    assert result.violations == []
    assert result.over == 0
    assert result.resurrected == 0
    assert result.pool_failures == 0
    assert set(seen.other_failures) <= {"conflict"}, seen.other_failures
    assert seen.max_failed_latency < FAILURE_BOUND
    assert seen.throughput_back_after < PHASE_BOUND
