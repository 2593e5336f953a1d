"""The ``typed-session-sql`` command: ``purge``, ``stats``, ``ready``, ``migrate`` and
``demo``, one module each; what the database commands share is in
`typed_session_sql.cli.common`. Their heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from typing import NoReturn

from typed_session_sql import __version__
from typed_session_sql.cli import demo, migrate, purge, ready, stats
from typed_session_sql.cli.common import EXIT_USAGE, UsageError
from typed_session_sql.urls import mask_passwords_in


class _Parser(argparse.ArgumentParser):
    """argparse, with every password masked in its error messages (they quote arguments:
    a URL given where an action was expected, or without ``--url``), and an unknown option
    reported by the subcommand it was given to, with the option probably meant."""

    argv: Sequence[str] = ()
    """The command line being parsed: its URLs are masked wherever an error quotes them."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {mask_passwords_in(message, *self.argv)}\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:  # the innermost command: its usage, its options
            message = f"unrecognized arguments: {' '.join(extras)}"
            options = [o for action in self._actions for o in action.option_strings]
            name = extras[0].partition("=")[0]
            close = difflib.get_close_matches(name, options, n=1) if name[:1] == "-" else []
            self.error(message + (f" (did you mean {close[0]}?)" if close else ""))
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="typed-session-sql", description="Typed server-side sessions stored in SQL."
    )
    parser.add_argument("--version", action="version", version=f"typed-session-sql {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (purge, stats, ready, migrate, demo):  # the order --help lists them in
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; return its exit code (each handler returns one)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    _Parser.argv = arguments
    parser = build_parser()
    args = parser.parse_args(arguments)
    try:
        code: int = args.handler(args)
    except UsageError as error:  # found before the command ran: no database given
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return code
