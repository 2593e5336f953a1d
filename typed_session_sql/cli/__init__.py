"""The ``typed-session-sql`` command: ``purge``, ``stats``, ``ready``, ``migrate`` and
``demo``, one module each; what the database commands share is in
:mod:`typed_session_sql.cli.common`. Their heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from typed_session_sql import __version__
from typed_session_sql.cli import demo, migrate, purge, ready, stats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="typed-session-sql", description="Typed server-side sessions stored in SQL."
    )
    parser.add_argument("--version", action="version", version=f"typed-session-sql {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (purge, stats, ready, migrate, demo):  # the order --help lists them in
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; return its exit code (each handler returns one)."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
