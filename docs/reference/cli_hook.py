"""MkDocs hook: replaces ``<!-- cli-help -->`` with the ``--help`` of every command and
subcommand of ``typed-session-sql``, taken from the parser itself at build time, so the
reference cannot drift from the CLI."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

MARKER = "<!-- cli-help -->"
WIDTH = "80"


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk of subcommands
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def cli_reference() -> str:
    from typed_session_sql.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse wraps to the terminal; the page has no terminal
    try:
        sections = []
        for path, parser in _commands(build_parser(), ("typed-session-sql",)):
            title = " ".join(path)
            sections.append(
                f"## `{title}`\n\n```console\n$ {title} --help\n{parser.format_help()}```\n"
            )
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(sections)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
