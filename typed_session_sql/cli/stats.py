"""``typed-session-sql stats``: how many sessions are live and expired, the oldest expiry
and the table's size: how far behind cleanup is."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from typed_session_sql.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    Database,
    add_database_options,
    check_connection,
    database,
    make_engine,
    run,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stats",
        help="count live and expired sessions",
        description="Live and expired session counts, the oldest expiry and the table's size "
        f"(where the database can tell). {EXIT_CODES_HELP}",
    )
    add_database_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    db = database(args)
    return run("stats", db, lambda: _stats(db, as_json=args.json))


async def _stats(db: Database, *, as_json: bool) -> int:
    from typed_session_sql.backends.sql import SqlBackend

    engine = make_engine(db, create_sqlite_file=False)
    try:
        await check_connection(engine, db)
        backend = SqlBackend(engine, table_name=db.table, schema=db.schema)
        now = datetime.now(UTC)
        stats = await backend.stats(now)
        await backend.dispose()
    finally:
        await engine.dispose()
    oldest = stats.oldest_expiry
    table = str(backend.table.fullname)
    if as_json:
        document = {
            "database": db.masked_url,
            "table": table,
            "live": stats.live,
            "never_expire": stats.never_expire,
            "expired": stats.expired,
            "oldest_expiry": oldest.isoformat() if oldest is not None else None,
            "size_bytes": stats.size_bytes,
            "size_of": stats.size_of,
        }
        print(json.dumps(document))
        return EXIT_OK
    behind = f" ({_ago_or_in(now - oldest)})" if oldest is not None else ""
    size = (
        f"{stats.size_bytes:,} bytes ({stats.size_of})"
        if stats.size_bytes is not None
        else "unknown"
    )
    print(f"database:      {db.masked_url}")
    print(f"table:         {table}")
    print(f"live:          {stats.live:,} (of which never expire: {stats.never_expire:,})")
    print(f"expired:       {stats.expired:,}")
    print(f"oldest expiry: {oldest.isoformat() if oldest is not None else '-'}{behind}")
    print(f"size:          {size}")
    return EXIT_OK


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "in " + _ago(-delta)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def _ago_or_in(delta: timedelta) -> str:
    return _ago(delta) if delta.total_seconds() < 0 else _ago(delta) + " ago"
