"""``typed-session-sql demo``: run the demo shop (needs the ``demo`` extra)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from typed_session_sql.backends.sql.engine import DEFAULT_URL, URL_ENV
from typed_session_sql.cli.common import EXIT_USAGE

DESCRIPTION = """\
Run the demo shop on http://127.0.0.1:8000. Needs the demo extra:
pip install 'typed-session-sql[demo]'. The database is migrated on start; by default it
is the SQLite file ./sessions.db."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the demo web app",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    parser.add_argument(
        "--url",
        help=f"database URL (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from typed_session_sql.demo.app import create_app
    except ImportError as error:
        print(
            f"typed-session-sql demo: {error.name} is missing; "
            "install the extra: pip install 'typed-session-sql[demo]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    print(f"typed-session-sql demo on http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(create_app(args.url), host=args.host, port=args.port, log_level="info")
    return 0
