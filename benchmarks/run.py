"""Every published benchmark in one run: `nox -s bench`, or

    python benchmarks/run.py [--quick] [--rounds N] [--seconds S] [--out DIR] [--require-all]
                             [--growth-max-rows N] [--bloat-sessions N]

writes results.json, results.md and PNG plots into benchmarks/results/ (or --out):

1. load and load+save: the store (own engine, app engine) against raw asyncpg (its pool,
   a connection per worker), the peers (Django, Flask-Session, advanced-alchemy,
   starsessions on Redis), on SQLite raw aiosqlite, and on MariaDB raw asyncmy; round
   trips per operation counted at the wire (operations.py, contenders.py, peers.py,
   tests/support/wire.py);
2. through a real server: a Starlette app under uvicorn, loaded by wrk (web.py), and the
   same app called in process (in_process.py), each beside the app an application could
   write by hand on raw asyncpg, with the CPU time each spends per request;
3. growth: latency, table and index sizes at 1k, 100k and 1M rows (and up to
   ``--growth-max-rows``: 10000000 gives the 10M figures of docs/operations.md, about 25
   more minutes), the purge of each table's expired rows (growth.py), and what a day of
   renewals does to the table's size with and without revision 0003's settings (part
   ``bloat``: bloat.py, ``--bloat-sessions`` live sessions, 20,000 by default; 100000 gives
   the figures of docs/operations.md, about 12 minutes);
4. purge: paced against unpaced purges, under load and idle, beside the targets (purge.py).

Everything runs on a PostgreSQL server the run starts for itself (tests/support/servers.py; --url
uses an existing one instead, in a database created and dropped for the run), Redis keys
under a prefix of its own (deleted at the end), a temporary SQLite file, and a table of its
own on the MariaDB server at ``--mariadb-url`` (the machine's, dropped at the end; skipped
if none answers, unless ``--require-all``). ``--quick`` shrinks
every duration and size so the whole harness runs in seconds (tests/test_bench.py).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import os
import platform
import secrets
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg  # type: ignore[import-untyped]
import bloat
import growth
import in_process
import operations
import purge as purge_bench
import report
import web
from contenders import Endpoints, Shared
from peers import delete_redis_keys, json_size
from sqlalchemy.engine import make_url

from tests.support.servers import SERVER_USER, init_cluster, running
from tests.support.wire import CountingProxy

HERE = Path(__file__).resolve().parent

# The contenders together hold more than 100 connections (16 per pooled store, twice for the
# counting pass): more than a default server allows and more than a server shared with other
# runs should see, and a benchmark wants a server nothing else loads. So the run starts its
# own, with the packaged defaults (durable: fsync and synchronous_commit on) but these.
SERVER_SETTINGS = {"max_connections": "300", "shared_buffers": "512MB"}


@dataclass
class Plan:
    """How long and how big each part runs."""

    seconds: float = 1.0  # per contender per round
    rounds: int = 7
    sessions: int = 2000  # per contender; a multiple of 16
    count_ops: int = 200
    warmup: float = 0.3
    web_seconds: float = 2.0
    web_rounds: int = 5
    growth_sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    growth_seconds: float = 1.0
    growth_rounds: int = 3
    purge_seconds: float = 5.0
    pacing_rows: int = 1_000_000  # the purge part's expired rows
    pacing_seconds: float = 5.0  # per phase
    pacing_rounds: int = 3
    growth_max_rows: int = 1_000_000  # a larger one adds a table of that size
    bloat_sessions: int = 20_000
    bloat_minutes: int = bloat.MINUTES_A_DAY
    web_generator: str = "wrk"  # Debian's wrk if installed, else loadgen.py

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            seconds=0.05,
            rounds=2,
            sessions=160,
            count_ops=10,
            warmup=0.02,
            web_seconds=0.2,
            web_rounds=1,
            growth_sizes=(1_000, 2_000, 3_000),
            growth_seconds=0.05,
            growth_rounds=1,
            purge_seconds=0.2,
            pacing_rows=3_000,
            pacing_seconds=0.2,
            pacing_rounds=1,
            growth_max_rows=3_000,
            bloat_sessions=300,
            bloat_minutes=90,
            web_generator="loadgen",  # wrk runs for whole seconds; this proves the fallback
        )


def versions() -> dict[str, str]:
    found = {}
    for name in (
        "typed-session-sql", "sqlalchemy", "asyncpg", "aiosqlite", "asyncmy", "starlette",
        "uvicorn", "uvloop", "httptools", "django", "psycopg", "flask", "flask-session",
        "flask-sqlalchemy", "advanced-alchemy", "litestar", "starsessions", "redis",
    ):  # fmt: skip
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def main(args: argparse.Namespace) -> None:
    if args.require_all and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("matplotlib is not installed (nox -s bench installs it)")
    plan = Plan.quick() if args.quick else Plan()
    if args.rounds:
        plan.rounds = plan.web_rounds = plan.growth_rounds = args.rounds
    if args.seconds:
        plan.seconds = plan.growth_seconds = args.seconds
        plan.web_seconds = 2 * args.seconds
    if args.growth_max_rows:
        plan.growth_max_rows = args.growth_max_rows
        smaller = tuple(size for size in plan.growth_sizes if size < args.growth_max_rows)
        plan.growth_sizes = (*smaller, args.growth_max_rows)
    if args.bloat_sessions:
        plan.bloat_sessions = args.bloat_sessions
    started = time.perf_counter()
    load_before = os.getloadavg()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {line}", flush=True)

    with ExitStack() as stack:
        if args.url:
            base = make_url(args.url)
            server = (base.host or "127.0.0.1", base.port or 5432, base.username or "root")
            maintenance = base.database or "postgres"
        else:
            server = stack.enter_context(own_server())
            maintenance = "postgres"
            log(f"started a PostgreSQL server of our own on port {server[1]}")
        results = asyncio.run(measure(args, plan, server, maintenance, log))
    results["meta"]["wall_seconds"] = time.perf_counter() - started
    # Other processes sharing the CPUs move every figure: say how busy the machine was.
    results["meta"]["load_average"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    out = Path(args.out)
    # A full run into the committed results keeps the README's figures in step with them.
    published = out.resolve() == (HERE / "results").resolve() and not args.quick
    report.write(results, out, readme=HERE.parent / "README.md" if published else None)
    log(
        f"wrote {out}/results.json, results.md and plots in {results['meta']['wall_seconds']:.0f} s"
    )


@contextmanager
def own_server() -> Iterator[tuple[str, int, str]]:
    """A PostgreSQL server of the run's own; yields (host, port, superuser)."""
    cluster = init_cluster("bench", SERVER_SETTINGS)
    with running(cluster):
        yield "127.0.0.1", cluster.port, SERVER_USER


async def measure(
    args: argparse.Namespace,
    plan: Plan,
    server: tuple[str, int, str],
    maintenance: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    host, port, user = server
    database = f"tss_bench_{secrets.token_hex(4)}"
    admin = f"postgresql://{user}@{host}:{port}/{maintenance}"
    conn = await asyncpg.connect(admin)
    try:
        server_version = await conn.fetchval("SHOW server_version")
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("max_connections", "shared_buffers", "fsync", "synchronous_commit")
        }
        await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    mariadb = await _mariadb(args.mariadb_url, args.require_all, log)
    my_host, my_port = mariadb["endpoint"] if mariadb else ("", 0)
    pg = CountingProxy("postgres", host, port)
    rd = CountingProxy("redis", args.redis_host, args.redis_port)
    my = CountingProxy("mysql", my_host or "127.0.0.1", my_port)
    results: dict[str, Any] = {}
    stages: dict[str, float] = {}
    try:
        pg_port, redis_port = pg.start(), rd.start()
        mariadb_at: dict[str, Any] = {}
        counted_mariadb: dict[str, Any] = {}
        if mariadb:
            mariadb_at = mariadb["endpoints"]
            counted_mariadb = {"mariadb_host": "127.0.0.1", "mariadb_port": my.start()}
        with tempfile.TemporaryDirectory() as tmp:
            direct = Endpoints(
                pg_host=host,
                pg_port=port,
                pg_user=user,
                pg_database=database,
                redis_host=args.redis_host,
                redis_port=args.redis_port,
                sqlite_path=Path(tmp) / "sessions.db",
                **mariadb_at,
            )
            counted = replace(
                direct,
                pg_host="127.0.0.1",
                pg_port=pg_port,
                redis_host="127.0.0.1",
                redis_port=redis_port,
                counted=True,
                **counted_mariadb,
            )
            shared = Shared(
                table="sessions",
                sessions=plan.sessions,
                mariadb_table=f"tss_bench_{secrets.token_hex(4)}" if mariadb else "",
            )
            parts = args.parts.split(",")

            if "operations" in parts:
                log("1. load and load+save")
                mark = time.perf_counter()
                settings_ = operations.Settings(
                    plan.seconds, plan.rounds, plan.sessions, plan.count_ops, plan.warmup
                )
                proxies = {"postgres": pg, "redis": rd, "mariadb": my}
                try:
                    results["operations"] = await operations.run(
                        settings_, direct, counted, proxies, shared, log, args.require_all
                    )
                finally:
                    if shared.mariadb_table:
                        await _drop_mariadb_table(direct, shared.mariadb_table)
                stages["operations"] = time.perf_counter() - mark

            if "web" in parts:
                log("2. through uvicorn")
                mark = time.perf_counter()
                log("2a. in process")
                results["in_process"] = await in_process.run(
                    direct, shared, plan.seconds, plan.rounds, log
                )
                log("2b. through uvicorn")
                apps = ["none", "store", "byhand"]
                if all(importlib.util.find_spec(m) for m in ("starsessions", "redis")):
                    apps.append("starsessions")
                    if not shared.redis_prefix:
                        shared.redis_prefix = f"tss-bench-{secrets.token_hex(4)}:"
                elif args.require_all:
                    raise SystemExit("starsessions and redis are not installed")
                try:
                    results["web"] = await web.run(
                        direct, shared, plan.web_seconds, plan.web_rounds, apps, log,
                        use_wrk=plan.web_generator == "wrk", warmup=not args.quick,
                    )  # fmt: skip
                finally:
                    if shared.redis_prefix:
                        await delete_redis_keys(direct, shared.redis_prefix)
                stages["web"] = time.perf_counter() - mark

            if "growth" in parts:
                log("3. growth and purge")
                mark = time.perf_counter()
                results["growth"] = await growth.run(
                    direct, "g", plan.growth_sizes, plan.growth_seconds, plan.growth_rounds,
                    plan.purge_seconds, log,
                )  # fmt: skip
                stages["growth"] = time.perf_counter() - mark

            if "bloat" in parts:
                log("4. a day of renewals")
                mark = time.perf_counter()
                results["bloat"] = await bloat.run(
                    direct, "g", plan.bloat_sessions, plan.bloat_minutes, log
                )
                stages["bloat"] = time.perf_counter() - mark
            if "purge" in parts:
                log("5. purge, paced and unpaced")
                mark = time.perf_counter()
                results["purge"] = await purge_bench.measure(
                    direct.pg_url(), rows=plan.pacing_rows, seconds=plan.pacing_seconds,
                    rounds=plan.pacing_rounds, live=plan.sessions, log=log,
                )  # fmt: skip
                stages["purge"] = time.perf_counter() - mark
    finally:
        pg.stop()
        rd.stop()
        if mariadb:
            my.stop()
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()

    results["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": args.quick,
        "plan": asdict(plan),
        "stage_seconds": stages,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "implementation": sys.implementation.name,
            "postgresql": server_version,
            "postgresql_settings": settings,
            "postgresql_server": "the benchmark's own" if not args.url else "given by --url",
            "sqlite": sqlite3.sqlite_version,
            "mariadb": mariadb.get("version") if mariadb else None,
            "mariadb_settings": mariadb.get("settings") if mariadb else None,
            "platform": platform.platform(terse=True),
        },
        "versions": versions(),
        "payload_json_bytes": json_size(),
    }
    return results


async def _mariadb(url: str, required: bool, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Where the MariaDB server is and what it runs; None (logged) if nothing answers."""
    at = make_url(url)
    host, port = at.host or "127.0.0.1", at.port or 3306
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as error:
        if required:
            raise SystemExit(f"no MariaDB server at {host}:{port} ({error})") from None
        log(f"  no MariaDB server at {host}:{port}: its part is left out")
        return None
    endpoints = {
        "mariadb_host": host,
        "mariadb_port": port,
        "mariadb_user": at.username or "root",
        "mariadb_database": at.database or "test",
    }
    params = {k.removeprefix("mariadb_"): v for k, v in endpoints.items()}
    conn = await asyncmy.connect(**params)
    try:
        cursor = conn.cursor()
        await cursor.execute(
            "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@innodb_buffer_pool_size,"
            " @@max_connections"
        )
        version, flush, pool, connections = (await cursor.fetchall())[0]
    finally:
        await conn.ensure_closed()
    settings = {
        "innodb_flush_log_at_trx_commit": flush,
        "innodb_buffer_pool_size": pool,
        "max_connections": connections,
    }
    return {"endpoint": (host, port), "endpoints": endpoints, "version": version,
            "settings": settings}  # fmt: skip


async def _drop_mariadb_table(at: Endpoints, table: str) -> None:
    conn = await asyncmy.connect(**at.mariadb_params)
    try:
        await conn.cursor().execute(f"DROP TABLE IF EXISTS `{table}`")
    finally:
        await conn.ensure_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--url",
        help="use this PostgreSQL server instead of starting one (a database is created on it)",
    )
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument(
        "--mariadb-url",
        default="mysql+asyncmy://root@127.0.0.1:3306/test",
        help="the MariaDB server (and database) to measure on, in a table of the run's own",
    )
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and durations: proves the harness"
    )
    parser.add_argument("--rounds", type=int, help="rounds of every part")
    parser.add_argument("--seconds", type=float, help="seconds per contender per round")
    parser.add_argument("--parts", default="operations,web,growth,bloat,purge")
    parser.add_argument(
        "--growth-max-rows",
        type=int,
        help="the largest table of the growth part (10000000 for the 10M figures)",
    )
    parser.add_argument(
        "--bloat-sessions", type=int, help="live sessions of the day of renewals (bloat.py)"
    )
    parser.add_argument(
        "--require-all", action="store_true", help="fail if a peer or matplotlib is missing"
    )
    main(parser.parse_args())
