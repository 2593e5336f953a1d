"""Instructions per store operation, counted by valgrind (callgrind): the store level of
issue 19 measured independently of the machine's load. For each contender of
``contenders.py`` (the store's configurations and the raw-driver references running the
same statements), a child process runs under ``valgrind --tool=callgrind
--instr-atstart=no`` and counts (callgrind_marks.c) only its measured operations: load and
load+save, one at a time and 16 at a time, after warm-up. This process's instructions only
(SQLite's thread included), not the database server's.

    python benchmarks/store_instructions.py [--contenders store,asyncpg-pool,...] [--ops 320]
        [--pg-url postgresql://root@127.0.0.1:5432/test] [--mariadb 127.0.0.1:3306]

The sessions are seeded once by this process (not under valgrind). Prints a Markdown
table: instructions per operation of each contender, and its ratio to the reference of
its database (raw asyncpg's pool, raw aiosqlite, asyncmy's pool): reference / contender,
so above 1.0x the contender does less work per operation than the driver's own reference.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import re
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))  # after PYTHONPATH: a checkout to compare with

import contenders as c  # noqa: E402

from typed_session_sql import ExpiryPolicy, SessionStore  # noqa: E402

CONTENDERS: dict[str, type[c.Contender]] = {
    kind.key: kind
    for kind in (
        c.StoreOwnEngine, c.StoreAppEngine, c.AsyncpgPool, c.AsyncpgConnections,
        c.StoreSqlite, c.AiosqliteConnections,
        c.StoreMariadb, c.AsyncmyPool, c.AsyncmyConnections, c.AsyncmyPrepared,
    )
}  # fmt: skip
REFERENCE = {"postgres": "asyncpg-pool", "sqlite": "aiosqlite", "mariadb": "asyncmy-pool"}
SEEDERS = {"postgres": c.StoreOwnEngine, "sqlite": c.StoreSqlite, "mariadb": c.StoreMariadb}
SEGMENTS = [("load", 1), ("load+save", 1), ("load", 16), ("load+save", 16)]


def endpoints(args: argparse.Namespace) -> c.Endpoints:
    pg = urlsplit(args.pg_url)
    host, _, port = args.mariadb.partition(":")
    return c.Endpoints(
        pg_host=pg.hostname or "127.0.0.1", pg_port=pg.port or 5432,
        pg_user=pg.username or "root", pg_database=pg.path.lstrip("/") or "test",
        redis_host="", redis_port=0, sqlite_path=Path(args.sqlite),
        mariadb_host=host, mariadb_port=int(port or 3306),
    )  # fmt: skip


async def seed(at: c.Endpoints, shared: c.Shared, servers: set[str]) -> None:
    for server in sorted(servers):
        seeder = SEEDERS[server]()
        await seeder.open(at, shared)
        await seeder.seed(shared)
        await seeder.close()


async def drop(at: c.Endpoints, shared: c.Shared, servers: set[str]) -> None:
    for server in sorted(servers - {"sqlite"}):  # SQLite's file goes with the temp dir
        seeder = SEEDERS[server]()
        await seeder.open(at, shared)
        async with seeder.backend.engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {shared.table}"))
        await seeder.close()


async def child(args: argparse.Namespace) -> None:
    """Under valgrind: one contender, every segment, each written to a dump of its own."""
    at = endpoints(args)
    shared = c.Shared(**json.loads(args.shared))
    contender = CONTENDERS[args.child]()
    await contender.open(at, shared)
    marks = ctypes.CDLL(args.marks)
    keys = contender.keys
    if isinstance(contender, c._Store):
        # Renew every session now (uncounted), and count with a store that renews no sooner
        # than 29 minutes after that: a load that writes a renewal is not what is measured,
        # and under valgrind the children run long after the seeding.
        for k in range(keys):
            await contender.load(0, k)
        expiry = ExpiryPolicy(idle=timedelta(minutes=30), renew_after=timedelta(minutes=29))
        contender.store = SessionStore(c.Visitor, contender.backend, expiry=expiry)
    for operation, concurrency in SEGMENTS:
        op = contender.load if operation == "load" else contender.modify

        async def worker(
            op: Callable[[int, int], Awaitable[None]], n: int, w: int, first: int, count: int
        ) -> None:
            for i in range(first, first + count):
                await op(w, (w + i * n) % keys)

        per_worker = args.ops // concurrency
        workers = range(concurrency)
        await asyncio.gather(*(worker(op, concurrency, w, 0, 20) for w in workers))  # warm-up
        marks.tss_start()
        await asyncio.gather(*(worker(op, concurrency, w, 20, per_worker) for w in workers))
        marks.tss_stop()
        marks.tss_dump()
    await contender.close()


def count(key: str, args: argparse.Namespace, shared: str, marks: Path, tmp: Path) -> list[int]:
    out = tmp / f"{key}.callgrind"
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        sys.executable, __file__, "--child", key, "--shared", shared, "--marks", str(marks),
        "--ops", str(args.ops), "--pg-url", args.pg_url, "--mariadb", args.mariadb,
        "--sqlite", args.sqlite,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{key}: {done.stderr[-2000:]}")
    totals = []
    for part in range(1, len(SEGMENTS) + 1):
        found = re.search(r"^totals: (\d+)", Path(f"{out}.{part}").read_text(), re.M)
        if found is None:
            raise RuntimeError(f"{key}: no total in dump {part}")
        totals.append(int(found.group(1)))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--ops", type=int, default=320, help="measured operations per segment")
    parser.add_argument("--pg-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--mariadb", default="127.0.0.1:3306", help="host:port")
    parser.add_argument("--sqlite", default="")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--shared", default="", help=argparse.SUPPRESS)
    parser.add_argument("--marks", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args))
        return
    keys = args.contenders.split(",")
    servers = {CONTENDERS[key].server for key in keys}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        args.sqlite = args.sqlite or str(tmp / "sessions.db")
        marks = tmp / "callgrind_marks.so"
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-O2", "-o", str(marks), str(HERE / "callgrind_marks.c")],
            check=True,
        )
        table = f"tss_si_{secrets.token_hex(3)}"
        shared = c.Shared(table=table, sessions=400, mariadb_table=table)
        at = endpoints(args)
        asyncio.run(seed(at, shared, servers))
        seeded = json.dumps(vars(shared))  # the table and the store's cookies, for the children
        try:
            results = {key: count(key, args, seeded, marks, tmp) for key in keys}
        finally:
            asyncio.run(drop(at, shared, servers))
    header = " | ".join(f"{op} c={n}" for op, n in SEGMENTS)
    print(f"| contender | {header} |")
    print("|---" * (len(SEGMENTS) + 1) + "|")
    for key, totals in results.items():
        reference = results.get(REFERENCE[CONTENDERS[key].server])
        cells = []
        for i, total in enumerate(totals):
            cell = f"{total / args.ops:,.0f}"
            if reference is not None and key != REFERENCE[CONTENDERS[key].server]:
                cell += f" ({reference[i] / total:.2f}x)"
            cells.append(cell)
        print(f"| {key} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
