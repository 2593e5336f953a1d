"""Reading the project's Markdown the way the docs tests need: fenced blocks and sections.

One parser, so every test that runs or checks a documented example finds the same blocks:
a fence may be indented (a block inside a list item), and its body is then read as written,
without the indentation.
"""

from __future__ import annotations

import re

FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


def body(match: re.Match[str]) -> str:
    """A fence's body without the fence's own indentation."""
    indent = len(match["indent"])
    return "".join(line[indent:] for line in match["body"].splitlines(keepends=True))


def blocks(text: str, language: str = "python") -> list[str]:
    """The bodies of the ``language`` blocks in ``text``, in order."""
    return [body(match) for match in FENCE.finditer(text) if match["lang"] == language]


def section(text: str, title: str) -> str:
    """The ``## title`` section of ``text``, up to the next ``## `` heading."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]
