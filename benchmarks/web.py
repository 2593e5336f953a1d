"""Part 3: through a real server. Requests/s and latency of web_app.py under uvicorn.

Four uvicorn processes (no session middleware, typed-session-sql's, the by-hand app of
issue 19, starsessions') serve the same Starlette app on loopback; wrk (Debian's;
loadgen.py where it is missing) sends requests over 16 keep-alive connections from
another process, each carrying a cookie of
a seeded session, cycling through them. For each app and route (/none, /read, /write),
``rounds`` runs of ``seconds``, the order rotating each round. Beside requests/s, the
server process's CPU time per request (user + system, from /proc): what the app costs
its host, which a loaded machine's requests/s hide.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from contenders import (
    CONCURRENCY_MAX,
    Endpoints,
    Shared,
    Visitor,
    save_concurrently,
    visitor_dict,
)
from timing import median

from tests.support.servers import START_TIMEOUT, free_port, stop_process, wait_for_port
from typed_session_sql import SessionStore, SqlBackend

HERE = Path(__file__).resolve().parent
ROUTES = (("none", "GET"), ("read", "GET"), ("write", "POST"))
COOKIE = {
    "none": "session",
    "store": "__Host-id",
    "byhand": "__Host-id",
    "starsessions": "session",
}
# What each route's ratio compares with besides the app without middleware: a session read
# and write with the by-hand app's (issue 19).
BY_HAND = {"read", "write"}

# wrk calls request() for every request and done() once; done() prints what we parse.
WRK_SCRIPT = """
local cookies = {}
for line in io.lines(os.getenv("BENCH_COOKIES")) do cookies[#cookies + 1] = line end
local name = os.getenv("BENCH_COOKIE_NAME")
local method, path = os.getenv("BENCH_METHOD"), os.getenv("BENCH_PATH")
local i = 0
request = function()
  i = i % #cookies + 1
  local headers = {["Cookie"] = name .. "=" .. cookies[i], ["Content-Length"] = "0"}
  return wrk.format(method, path, headers)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "status_errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (Linux's /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(app: str, env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """A uvicorn process serving web_app.py's ``app`` variant; yields its port and pid once
    it accepts (uvicorn listens only once the app has started), stops it (SIGTERM, then
    SIGKILL) on exit."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "web_app:app", "--app-dir", str(HERE),
        "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    process = subprocess.Popen(command, env={**os.environ, **env, "BENCH_APP": app})
    try:
        wait_for_port(port, until=time.monotonic() + START_TIMEOUT, process=process)
        yield port, process.pid
    finally:
        stop_process(process, signal.SIGTERM)


class LoadGenerator:
    """wrk if it is installed, else loadgen.py; either prints one JSON line per run."""

    def __init__(self, workdir: Path, use_wrk: bool = True) -> None:
        self.wrk = shutil.which("wrk") if use_wrk else None
        self.script = workdir / "cookies.lua"
        self.script.write_text(WRK_SCRIPT)
        if self.wrk:
            self.name = "wrk"
        else:
            self.name = "loadgen.py" + (" (wrk not installed)" if use_wrk else "")

    def run(
        self, port: int, route: str, method: str, cookie: str, cookies: Path, seconds: float
    ) -> dict[str, Any]:
        url = f"http://127.0.0.1:{port}/{route}"
        env = {
            **os.environ,
            "BENCH_COOKIES": str(cookies),
            "BENCH_COOKIE_NAME": cookie,
            "BENCH_METHOD": method,
            "BENCH_PATH": f"/{route}",
        }
        if self.wrk:
            duration = f"{max(1, round(seconds))}s"
            command = [
                self.wrk,
                "-t1",
                f"-c{CONCURRENCY_MAX}",
                f"-d{duration}",
                "-s",
                str(self.script),
                url,
            ]
        else:
            command = [
                sys.executable, str(HERE / "loadgen.py"), url, method, cookie, str(cookies),
                str(CONCURRENCY_MAX), str(seconds),
            ]  # fmt: skip
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        line = next(line for line in out.splitlines() if line.startswith("{"))
        result: dict[str, Any] = json.loads(line)
        result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
        return result


async def seed(direct: Endpoints, shared: Shared, table: str) -> tuple[list[str], list[str]]:
    """Sessions for the store's app (in its own table) and starsessions' (in Redis)."""
    backend = SqlBackend.from_url(direct.pg_url(), table_name=table)
    try:
        await backend.create_schema()
        cookies = await save_concurrently(SessionStore(Visitor, backend), shared.sessions)
    finally:
        await backend.dispose()
    sids: list[str] = []
    try:
        from redis.asyncio import Redis
    except ImportError:
        return cookies, sids
    redis = Redis(host=direct.redis_host, port=direct.redis_port)
    try:
        for i in range(shared.sessions):
            sid = secrets.token_hex(16)
            data = json.dumps(visitor_dict(i)).encode()
            await redis.set(f"{shared.redis_prefix}{sid}", data, ex=3600)
            sids.append(sid)
    finally:
        await redis.aclose()
    return cookies, sids


async def run(
    direct: Endpoints,
    shared: Shared,
    seconds: float,
    rounds: int,
    apps: list[str],
    log: Callable[[str], None],
    *,
    use_wrk: bool = True,
    warmup: bool = True,
) -> dict[str, Any]:
    table = f"{shared.table}_web"
    cookies, sids = await seed(direct, shared, table)
    env = {
        "BENCH_PG_URL": direct.pg_url(),
        "BENCH_TABLE": table,
        "BENCH_REDIS_HOST": direct.redis_host,
        "BENCH_REDIS_PORT": str(direct.redis_port),
        "BENCH_REDIS_PREFIX": shared.redis_prefix,
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = {"none": workdir / "none.txt", "store": workdir / "store.txt"}
        files["byhand"] = files["store"]
        files["starsessions"] = workdir / "starsessions.txt"
        files["none"].write_text("\n".join(cookies) + "\n")
        files["store"].write_text("\n".join(cookies) + "\n")
        files["starsessions"].write_text("\n".join(sids) + "\n")
        generator = LoadGenerator(workdir, use_wrk)
        ports: dict[str, tuple[int, int]] = {}
        with _servers(apps, env, ports):
            cases = [(app, route, method) for app in apps for route, method in ROUTES]
            for app, route, method in cases if warmup else []:  # connections, caches
                generator.run(ports[app][0], route, method, COOKIE[app], files[app], 1)
            runs: dict[str, list[dict[str, Any]]] = {f"{a} {r}": [] for a, r, _ in cases}
            for r in range(rounds):
                # The apps serving one route run back to back (the order rotating), so the
                # ratio to the app without middleware compares runs seconds apart.
                for route, method in ROUTES:
                    k = r % len(apps)
                    for app in apps[k:] + apps[:k]:
                        port, pid = ports[app]
                        cpu = cpu_seconds(pid)
                        result = generator.run(
                            port, route, method, COOKIE[app], files[app], seconds
                        )
                        cpu = cpu_seconds(pid) - cpu
                        result["cpu_us"] = 1e6 * cpu / max(result["requests"], 1)
                        runs[f"{app} {route}"].append(result)
    cells: dict[str, Any] = {}
    for name, results in runs.items():
        route = name.split()[1]
        bare = runs[f"none {route}"]
        ratios = [x["rate"] / b["rate"] for x, b in zip(results, bare, strict=True)]
        cells[name] = {
            "requests_per_s": median([x["rate"] for x in results]),
            "requests_per_s_rounds": [round(x["rate"], 1) for x in results],
            "p50_ms": median([x["p50_us"] / 1000 for x in results]),
            "p99_ms": median([x["p99_us"] / 1000 for x in results]),
            "ratio": median(ratios),
            "ratio_rounds": [round(x, 3) for x in ratios],
            "errors": sum(x["errors"] + x["status_errors"] for x in results),
            "cpu_us_per_request": median([x["cpu_us"] for x in results]),
        }
        c = cells[name]
        by_hand = runs.get(f"byhand {route}")
        if route in BY_HAND and by_hand:
            versus = [x["rate"] / b["rate"] for x, b in zip(results, by_hand, strict=True)]
            c["ratio_byhand"] = median(versus)
            c["ratio_byhand_rounds"] = [round(x, 3) for x in versus]
        rate, ratio, p99 = c["requests_per_s"], c["ratio"], c["p99_ms"]
        extra = f", {c['ratio_byhand']:.2f}x by hand" if "ratio_byhand" in c else ""
        log(
            f"  {name}: {rate:,.0f} req/s ({ratio:.2f}x{extra}), p99 {p99:.1f} ms, "
            f"{c['cpu_us_per_request']:.0f} µs CPU/request"
        )
    return {"generator": generator.name, "connections": CONCURRENCY_MAX, "cells": cells}


@contextmanager
def _servers(
    apps: list[str], env: dict[str, str], ports: dict[str, tuple[int, int]]
) -> Iterator[None]:
    if not apps:
        yield
        return
    with server(apps[0], env) as port:
        ports[apps[0]] = port
        with _servers(apps[1:], env, ports):
            yield
