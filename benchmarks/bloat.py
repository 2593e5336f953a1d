"""Part of growth: what a day of renewals does to the size of the table and its indexes,
with the server's default table settings and with the ones revision 0003 applies.

**The day.** A table holds ``live`` sessions all day, each kept alive by renewals. With the
default `ExpiryPolicy` (idle 30 minutes, a renewal written at most once per
``renew_after`` = 3 minutes) a session that stays live is renewed at least once per idle
period: 48 renewals a session a day (one that is in constant use writes up to 480). The
simulation takes the lower bound: each simulated minute renews a thirtieth of the sessions
(every 30th row, so the renewals land all over the table, as real ones do), 1,440 minutes.

**Each renewal** is the store's touch: ``UPDATE ... SET expires_at = <new expiry>`` (each
row its own microsecond, as real renewals have: equal values would shrink the expiry index
by deduplication), sent server-side in one statement a simulated minute (4.8 million round
trips through the store would take hours); at the end the store's own
`SqlBackend.touch` renews 1,000 sessions and the report says how many of those updates
were HOT (``n_tup_hot_upd``).

**Autovacuum** is off on the table and its trigger is applied by the benchmark: once a
simulated minute (the default ``autovacuum_naptime``), a ``VACUUM`` runs when the dead rows
exceed ``autovacuum_vacuum_threshold + autovacuum_vacuum_scale_factor * reltuples`` (the
table's settings, else the server's). On a day compressed into minutes the server's own
launcher would look at the table far less often per simulated hour than a real day gives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from hashlib import md5
from typing import Any

import msgspec
from contenders import Endpoints, visitor
from growth import table_sizes
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from typed_session_sql import SqlBackend
from typed_session_sql.backends.sql.table import POSTGRESQL_TABLE_SETTINGS

MINUTES_A_DAY = 24 * 60
IDLE_MINUTES = 30  # ExpiryPolicy's default idle bound: each session renewed once in it
TOUCHED_BY_THE_STORE = 1000

VARIANTS: dict[str, dict[str, str]] = {
    "server defaults": {},
    "fillfactor 90": {"fillfactor": "90"},
    "revision 0003": dict(POSTGRESQL_TABLE_SETTINGS),
}


def key(i: int) -> bytes:
    """The id hash of the ``i``-th filled row (as the fill's SQL computes it)."""
    return bytes.fromhex(md5(str(i).encode()).hexdigest() + md5(f"x{i}".encode()).hexdigest())


async def update_counts(conn: AsyncConnection, table: str) -> tuple[int, int]:
    """``n_tup_upd`` and ``n_tup_hot_upd`` of the table, after every backend flushed."""
    await conn.execute(text("SELECT pg_stat_clear_snapshot()"))
    row = await conn.execute(
        text("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = :t"),
        {"t": table},
    )
    upd, hot = row.one()
    return int(upd), int(hot)


async def flush_stats(conn: AsyncConnection) -> None:
    # PostgreSQL 15: a backend's counters reach shared memory when it next goes idle.
    await conn.execute(text("SELECT pg_stat_force_next_flush()"))


async def server_setting(conn: AsyncConnection, name: str) -> float:
    return float((await conn.execute(text(f"SHOW {name}"))).scalar_one())


async def one_day(
    at: Endpoints, name: str, settings: dict[str, str], live: int, minutes: int
) -> dict[str, Any]:
    backend = SqlBackend.from_url(at.pg_url(), table_name=name)
    quoted = backend.engine.dialect.identifier_preparer.format_table(backend.table)
    off = {**settings, "autovacuum_enabled": "false"}  # the benchmark plays autovacuum
    options = ", ".join(f"{k} = {v}" for k, v in off.items())
    now = time.time_ns() // 1000
    minute = 60_000_000
    fill = text(
        f"INSERT INTO {quoted} (id_hash, data, expires_at, created_at, version) "
        "SELECT decode(md5(i::text) || md5('x' || i::text), 'hex'), :data, "
        "  CAST(:expiry AS bigint) + i, CAST(:now AS bigint), 1 "
        "FROM generate_series(0, CAST(:last AS integer)) AS i"
    )
    renew = text(
        f"UPDATE {quoted} AS t SET expires_at = CAST(:expiry AS bigint) + r.i FROM ("
        "  SELECT i, decode(md5(i::text) || md5('x' || i::text), 'hex') AS id_hash"
        "  FROM generate_series(CAST(:first AS integer), CAST(:last AS integer), :step) AS i"
        ") AS r WHERE t.id_hash = r.id_hash"
    )
    data = msgspec.json.encode(visitor(0))
    try:
        await backend.create_schema()  # the library's storage settings, then the variant's
        async with backend.engine.connect() as conn:
            await conn.execute(text(f"ALTER TABLE {quoted} RESET ("
                                    + ", ".join(POSTGRESQL_TABLE_SETTINGS) + ")"))  # fmt: skip
            await conn.execute(text(f"ALTER TABLE {quoted} SET ({options})"))
            expiry = now + IDLE_MINUTES * minute
            await conn.execute(fill, {"data": data, "expiry": expiry, "now": now, "last": live - 1})
            await conn.execute(text(f"VACUUM ANALYZE {quoted}"))
            before = await table_sizes(backend)
            await flush_stats(conn)
            upd0, hot0 = await update_counts(conn, name)
            threshold = float(settings.get("autovacuum_vacuum_threshold", 0)) or (
                await server_setting(conn, "autovacuum_vacuum_threshold")
            )
            scale = float(settings.get("autovacuum_vacuum_scale_factor", 0)) or (
                await server_setting(conn, "autovacuum_vacuum_scale_factor")
            )
            reltuples = text("SELECT reltuples FROM pg_class WHERE relname = :t AND relkind = 'r'")
            dead = vacuums = peak_dead = 0
            vacuum_seconds = 0.0
            hourly: list[dict[str, int]] = []
            started = time.perf_counter()
            for m in range(minutes):
                expiry = now + (m + 1 + IDLE_MINUTES) * minute
                params = {"expiry": expiry, "first": m % IDLE_MINUTES, "last": live - 1,
                          "step": IDLE_MINUTES}  # fmt: skip
                dead += (await conn.execute(renew, params)).rowcount
                peak_dead = max(peak_dead, dead)
                tuples = float((await conn.execute(reltuples, {"t": name})).scalar_one())
                if dead > threshold + scale * tuples:
                    mark = time.perf_counter()
                    await conn.execute(text(f"VACUUM {quoted}"))
                    vacuum_seconds += time.perf_counter() - mark
                    vacuums += 1
                    dead = 0
                if (m + 1) % 240 == 0:  # every 4 simulated hours: still growing, or steady?
                    hourly.append({"hour": (m + 1) // 60, **await table_sizes(backend)})
            took = time.perf_counter() - started
            after = await table_sizes(backend)
            await flush_stats(conn)
            upd1, hot1 = await update_counts(conn, name)
        expiry = now + (minutes + 60) * minute
        by_store = await _touch_through_the_store(at, name, live, expiry)
        async with backend.engine.connect() as conn:
            # The store's connections are closed: their counters reach the statistics as
            # each server process exits, soon after.
            deadline = time.monotonic() + 30
            while (counts := await update_counts(conn, name))[0] - upd1 < by_store:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            upd2, hot2 = counts
    finally:
        async with backend.engine.begin() as conn:
            await conn.run_sync(backend.metadata.drop_all)
        await backend.dispose()
    return {
        "settings": settings,
        "renewals": upd1 - upd0,
        "hot_updates": hot1 - hot0,
        "vacuums": vacuums,
        "dead_rows_peak": peak_dead,
        "seconds": took,
        "vacuum_seconds": vacuum_seconds,
        "bytes_before": before,
        "bytes_after": after,
        "bytes_every_4_hours": hourly,
        "store_touches": {"updated": by_store, "counted": upd2 - upd1, "hot": hot2 - hot1},
    }


async def _touch_through_the_store(at: Endpoints, name: str, live: int, expiry_us: int) -> int:
    """Renew up to 1,000 sessions with the backend's own touch statement, over a backend of
    their own, closed afterwards; how many it renewed."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    expiry = epoch + timedelta(microseconds=expiry_us)
    now = datetime.now(UTC)
    renewed = 0
    async with SqlBackend.from_url(at.pg_url(), table_name=name) as backend:
        for i in range(min(TOUCHED_BY_THE_STORE, live)):
            renewed += await backend.touch(key(i), 1, expiry, now)
    return renewed


async def run(
    at: Endpoints, prefix: str, live: int, minutes: int, log: Callable[[str], None]
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "live_sessions": live,
        "simulated_minutes": minutes,
        "renewals_per_session_per_day": MINUTES_A_DAY // IDLE_MINUTES,
        "variants": {},
    }
    for i, (variant, settings) in enumerate(VARIANTS.items()):
        day = await one_day(at, f"{prefix}_bloat_{i}", settings, live, minutes)
        results["variants"][variant] = day
        grew = day["bytes_after"]["total"] / day["bytes_before"]["total"]
        log(
            f"  a day of renewals, {variant}: {day['renewals']:,} renewals in"
            f" {day['seconds']:.0f} s, {day['vacuums']} vacuums, total size x{grew:.2f}"
            f" ({day['bytes_before']['total'] / 1e6:.0f} -> {day['bytes_after']['total'] / 1e6:.0f}"
            f" MB), HOT {day['hot_updates']:,}; store touches HOT"
            f" {day['store_touches']['hot']}/{day['store_touches']['counted']}"
        )
    return results
