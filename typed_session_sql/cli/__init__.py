"""The ``typed-session-sql`` command. Each subcommand lives in its own module here and
registers itself through ``register(subparsers)``; heavy imports happen inside handlers."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# One module per subcommand (or family of subcommands), in the order --help lists them.
_COMMAND_MODULES: tuple[str, ...] = ("purge", "migrate", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="typed-session-sql", description="Typed server-side sessions stored in SQL."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"typed_session_sql.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; return its exit code (each handler returns one)."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
