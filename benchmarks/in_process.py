"""Part 2b: the web app in process. Requests/s and client CPU per request of web_app.py's
apps, called straight through ASGI (no server, no sockets but the database's), 16 requests
at a time.

Each app (no middleware, typed-session-sql's ``SessionMiddleware``, the by-hand app of
issue 19) serves /none, /read and /write to 16 tasks calling it in a loop, each request
carrying a seeded session's cookie. Per round and route the apps run back to back (the
order rotating), so the ratios compare runs a second apart on a shared machine: /none to
the app without middleware, /read and /write to the by-hand app. Client CPU is this
process's CPU time (``time.process_time``) per request: the whole request path but the
database server's.

Also runnable alone, to profile the request path (instructions.py counts instructions):

    python benchmarks/in_process.py --url postgresql+asyncpg://root@127.0.0.1/test \\
        --app store --route read --requests 2000 [--profile out.pstats] [--concurrency 1]

runs ``--requests`` requests after a warm-up (under ``cProfile`` with ``--profile``);
under ``valgrind --tool=callgrind``, two such runs of different ``--requests`` give
instructions per request by their difference (benchmarks/results/profile.md).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from contenders import CONCURRENCY_MAX, Endpoints, Shared, Visitor, save_concurrently  # noqa: E402
from timing import median  # noqa: E402
from web_app import APPS  # noqa: E402

from typed_session_sql import SessionStore, SqlBackend  # noqa: E402

ROUTES = (("none", "GET"), ("read", "GET"), ("write", "POST"))
REFERENCE = {"none": "none", "read": "byhand", "write": "byhand"}
IN_PROCESS_APPS = ("none", "store", "byhand")

ASGIApp = Callable[..., Any]


class Lifespan:
    """Runs an ASGI app's lifespan (startup on enter, shutdown on exit), as a server does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ASGIApp:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(
            self.app(scope, self._to_app.get, self._from_app.put), name="lifespan"
        )
        await self._to_app.put({"type": "lifespan.startup"})
        message = await self._from_app.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the app did not start: {message}")
        return self.app

    async def __aexit__(self, *exc: object) -> None:
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()
        assert self._task is not None
        await self._task


async def _request_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def scopes(route: str, method: str, cookies: list[str]) -> list[dict[str, Any]]:
    """One request scope per cookie (copied per request: the middleware writes to it)."""
    return [
        {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "https",
            "path": f"/{route}",
            "raw_path": f"/{route}".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"cookie", b"__Host-id=" + cookie.encode()),
                (b"content-length", b"0"),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 443),
            "state": {},
        }
        for cookie in cookies
    ]


async def drive(
    app: ASGIApp,
    requests: list[dict[str, Any]],
    *,
    seconds: float = 0,
    count: int = 0,
    concurrency: int = CONCURRENCY_MAX,
) -> tuple[int, float, float]:
    """``concurrency`` tasks calling ``app`` for ``seconds`` (or ``count`` requests in
    all); the requests made, the wall and the CPU seconds they took."""
    statuses: list[int] = []
    left = [count]

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def worker(k: int, until: float, concurrency: int) -> int:
        done = 0
        i = k
        while (time.perf_counter() < until) if seconds else left[0] > 0:
            left[0] -= 1
            scope = dict(requests[i % len(requests)])
            i += concurrency
            await app(scope, _request_body, send)
            done += 1
        return done

    wall, cpu = time.perf_counter(), time.process_time()
    until = wall + seconds
    counts = await asyncio.gather(*(worker(k, until, concurrency) for k in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    bad = [s for s in statuses if s != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} responses were not 200, e.g. {bad[0]}")
    return sum(counts), wall, cpu


async def seed(pg_url: str, table: str, sessions: int) -> list[str]:
    backend = SqlBackend.from_url(pg_url, table_name=table)
    try:
        await backend.create_schema()
        return await save_concurrently(SessionStore(Visitor, backend), sessions)
    finally:
        await backend.dispose()


def _builder(app: str, pg_url: str, table: str) -> Callable[[], Any]:
    if app == "none":
        return APPS["none"]
    return lambda: APPS[app](pg_url, table)  # type: ignore[call-arg]


async def run(
    direct: Endpoints,
    shared: Shared,
    seconds: float,
    rounds: int,
    log: Callable[[str], None],
    apps: tuple[str, ...] = IN_PROCESS_APPS,
) -> dict[str, Any]:
    table = f"{shared.table}_inproc"
    pg_url = direct.pg_url()
    cookies = await seed(pg_url, table, shared.sessions)
    runs: dict[str, list[tuple[int, float, float]]] = {
        f"{a} {r}": [] for a in apps for r, _ in ROUTES
    }
    lifespans = {a: Lifespan(_builder(a, pg_url, table)()) for a in apps}
    entered = {a: await lifespans[a].__aenter__() for a in apps}
    try:
        for app in apps:  # warm-up: connections, statement caches
            for route, method in ROUTES:
                await drive(entered[app], scopes(route, method, cookies), seconds=seconds / 4)
        for r in range(rounds):
            for route, method in ROUTES:
                requests = scopes(route, method, cookies)
                k = r % len(apps)
                for app in apps[k:] + apps[:k]:
                    runs[f"{app} {route}"].append(
                        await drive(entered[app], requests, seconds=seconds)
                    )
    finally:
        for app in apps:
            await lifespans[app].__aexit__(None, None, None)
    cells: dict[str, Any] = {}
    for name, results in runs.items():
        route = name.split()[1]
        reference = runs[f"{REFERENCE[route]} {route}"]
        rates = [n / wall for n, wall, _ in results]
        cpu = [1e6 * c / n for n, _, c in results]
        pairs = list(zip(results, reference, strict=True))
        ratios = [(n / w) / (m / v) for (n, w, _), (m, v, _) in pairs]
        cpu_ratios = [(c / n) / (d / m) for (n, _, c), (m, _, d) in pairs]
        cells[name] = {
            "requests_per_s": median(rates),
            "requests_per_s_rounds": [round(x, 1) for x in rates],
            "cpu_us_per_request": median(cpu),
            "cpu_us_rounds": [round(x, 1) for x in cpu],
            "reference": f"{REFERENCE[route]} {route}",
            "ratio": median(ratios),
            "ratio_rounds": [round(x, 3) for x in ratios],
            "cpu_ratio": median(cpu_ratios),
        }
        c = cells[name]
        log(
            f"  {name}: {c['requests_per_s']:,.0f} req/s ({c['ratio']:.2f}x {c['reference']}),"
            f" {c['cpu_us_per_request']:.0f} µs CPU/request ({c['cpu_ratio']:.2f}x)"
        )
    return {"connections": CONCURRENCY_MAX, "cells": cells}


async def _alone(args: argparse.Namespace) -> None:
    """One app, one route, ``--requests`` requests after a warm-up: for profilers."""
    table = args.table or f"tss_inproc_{secrets.token_hex(4)}"
    cookies = await seed(args.url, table, 160)
    route, method = next((r, m) for r, m in ROUTES if r == args.route)
    requests = scopes(route, method, cookies)
    try:
        async with Lifespan(_builder(args.app, args.url, table)()) as app:
            await drive(app, requests, count=args.warmup)
            profiler = cProfile.Profile() if args.profile else None
            marks = ctypes.CDLL(args.callgrind_marks) if args.callgrind_marks else None
            if profiler is not None:
                profiler.enable()
            if marks is not None:
                marks.tss_start()
            n, wall, cpu = await drive(
                app, requests, count=args.requests, concurrency=args.concurrency
            )
            if marks is not None:
                marks.tss_stop()
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
            print(
                f"{args.app} /{route}: {n} requests, {1e6 * cpu / max(n, 1):.1f} µs CPU "
                f"and {1e6 * wall / max(n, 1):.1f} µs wall per request"
            )
    finally:
        if not args.table:
            backend = SqlBackend.from_url(args.url, table_name=table)
            try:
                async with backend.engine.begin() as conn:
                    await conn.exec_driver_sql(f"DROP TABLE {table}")
            finally:
                await backend.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--app", choices=IN_PROCESS_APPS, default="store")
    parser.add_argument("--route", choices=[r for r, _ in ROUTES], default="read")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY_MAX)
    parser.add_argument("--table", default="", help="an existing table; default: a fresh one")
    parser.add_argument("--profile", default="", help="write cProfile stats here")
    parser.add_argument(
        "--callgrind-marks", default="", help="callgrind_marks.c compiled: count only the requests"
    )
    asyncio.run(_alone(parser.parse_args()))


if __name__ == "__main__":
    main()
