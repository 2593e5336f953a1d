"""The store against the raw driver doing the same round trips, on PostgreSQL.

    .venv/bin/python benchmarks/store_vs_driver.py [--url postgresql+asyncpg://root@127.0.0.1/test]

"raw" is asyncpg with a pool of its own whose per-release reset is disabled, running the
very statements the store runs (a PK SELECT; for load+save also the conditional UPDATE),
with ids already hashed. "store" is SessionStore over SqlBackend: cookie check, blake3,
decoding, change detection and SQLAlchemy on top. Both run at the same concurrency, in
the same process, alternating round by round so machine drift cancels; the ratio
store/raw per round is reported, and the median of the rounds.

"conn" is a stricter floor: one dedicated asyncpg connection per worker, no pool at all.
The store holds its connections itself (see SqlBackend.from_url), which costs less than
asyncpg's pool acquire/release, so it can beat "raw"; "conn" shows what pooling costs.

"app" is the same store over ``SqlBackend(engine)`` on an engine the application made
itself (``create_async_engine(url, pool_size=concurrency)``, nothing tuned): the backend
holds none of the app's connections, so every statement goes through the app's pool.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from workload import Profile, timed

from typed_session_sql import SessionStore, SetCookie, SqlBackend
from typed_session_sql.ids import IdHasher

DEFAULT_URL = "postgresql+asyncpg://root@127.0.0.1:5432/test"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("TYPED_SESSION_SQL_BENCH_URL", DEFAULT_URL))
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=300, help="operations per worker per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    table = f"bench_{secrets.token_hex(4)}"
    backend = SqlBackend.from_url(args.url, table_name=table, pool_size=args.concurrency)
    await backend.create_schema()
    store = SessionStore(Profile, backend)
    app_engine = create_async_engine(args.url, pool_size=args.concurrency)
    app_store = SessionStore(Profile, SqlBackend(app_engine, table_name=table))
    hasher = IdHasher(None)
    cookies: list[str] = []
    for i in range(args.sessions):
        result = await store.save(store.new(Profile(i, f"user {i}", ["reader", "writer"])))
        assert isinstance(result, SetCookie)
        cookies.append(result.value)
    hashes = [hasher(c) for c in cookies]

    async def no_reset(connection: asyncpg.Connection) -> None:
        return None

    url = make_url(args.url).set(drivername="postgresql")
    pool: Any = await asyncpg.create_pool(
        url.render_as_string(hide_password=False),
        min_size=args.concurrency,
        max_size=args.concurrency,
        reset=no_reset,
    )
    select_sql = (
        "SELECT data, version, created_at, expires_at, principal, authenticated_at"
        f" FROM {table} WHERE id_hash = $1"
    )
    update_sql = (
        f"UPDATE {table} SET data = $1, expires_at = $2, version = version + 1"
        " WHERE id_hash = $3 AND version = $4"
    )
    n, c = len(cookies), int(args.concurrency)
    dsn = url.render_as_string(hide_password=False)
    conns = [await asyncpg.connect(dsn) for _ in range(c)]  # dedicated, for the whole run

    def key(w: int, i: int) -> int:
        return (w + i * c) % n

    async def raw_load(w: int, i: int) -> None:
        await pool.fetchrow(select_sql, hashes[key(w, i)])

    async def raw_modify(w: int, i: int) -> None:
        h = hashes[key(w, i)]
        row = await pool.fetchrow(select_sql, h)
        await pool.execute(update_sql, row[0], row[3], h, row[1])

    async def conn_load(w: int, i: int) -> None:
        await conns[w].fetchrow(select_sql, hashes[key(w, i)])

    async def conn_modify(w: int, i: int) -> None:
        h = hashes[key(w, i)]
        row = await conns[w].fetchrow(select_sql, h)
        await conns[w].execute(update_sql, row[0], row[3], h, row[1])

    async def store_load(w: int, i: int) -> None:
        assert await store.load(cookies[key(w, i)]) is not None

    async def store_modify(w: int, i: int) -> None:
        session = await store.load(cookies[key(w, i)])
        assert session is not None
        session.data.counter += 1
        await store.save(session)

    async def app_load(w: int, i: int) -> None:
        assert await app_store.load(cookies[key(w, i)]) is not None

    async def app_modify(w: int, i: int) -> None:
        session = await app_store.load(cookies[key(w, i)])
        assert session is not None
        session.data.counter += 1
        await app_store.save(session)

    try:
        for label, raw, dedicated, ours, apps in (
            ("load", raw_load, conn_load, store_load, app_load),
            ("load+save", raw_modify, conn_modify, store_modify, app_modify),
        ):
            variants = [("raw", raw), ("conn", dedicated), ("store", ours), ("app", apps)]
            for _, op in variants:  # warm up: connections, prepared statements, caches
                await timed(c, 50, op)
            # (numerator, denominator) of each reported ratio of rates
            pairs = {
                "store/raw": ("store", "raw"),
                "store/conn": ("store", "conn"),
                "app/raw": ("app", "raw"),
            }
            ratios: dict[str, list[float]] = {name: [] for name in pairs}
            for r in range(args.rounds):
                k = r % len(variants)
                order = variants[k:] + variants[:k]  # rotate who goes first
                rates = {name: await timed(c, args.ops, op) for name, op in order}
                for name, (a, b) in pairs.items():
                    ratios[name].append(rates[a] / rates[b])
                print(
                    f"{label:10} round {r + 1}: "
                    + "  ".join(f"{name} {rates[name]:7.0f}" for name, _ in variants)
                    + " ops/s  "
                    + "  ".join(f"{name} {values[-1]:.2f}" for name, values in ratios.items())
                )
            print(
                f"{label:10} median at {c} concurrent: "
                + ", ".join(
                    f"{name} {statistics.median(values):.2f}x" for name, values in ratios.items()
                )
                + "\n"
            )
    finally:
        for connection in conns:
            await connection.close()
        await pool.close()
        await app_engine.dispose()
        async with backend.engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
        await backend.dispose()


if __name__ == "__main__":
    asyncio.run(main())
