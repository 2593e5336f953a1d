"""Every fenced ``python`` block in README.md and docs/ runs.

The rule, for whoever writes documentation (CONTRIBUTING.md says the same):

- The blocks of one Markdown file run top to bottom in one namespace, as a reader pasting
  them in order would run them: a later block may use what an earlier one defined. They
  run in a temporary directory, with ``TYPED_SESSION_SQL_URL`` pointing at a fresh SQLite
  file there, so ``SqlBackend.from_url()`` works without a server. Top-level ``await`` is
  allowed (the file's blocks share one event loop); so is ``asyncio.run(...)``.
- A block that is deliberately a fragment (one piece of a larger program, with names it
  does not define, or a placeholder like ``...``) has the line ``<!-- fragment: why -->``
  right before its opening fence. It is compiled, so its syntax is checked, but not run.
  Say in ``why`` where it is exercised, if anywhere (``runs in tests/docs/test_docs_asgi.py``).

Blocks that need asserting more than "it runs" get a test of their own as well
(tests/docs/test_docs_*.py, tests/docs/test_readme.py); this test only guarantees none is left out.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
FRAGMENT = re.compile(r"^ *<!-- fragment:\s*(?P<why>.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    source: str
    fragment: str | None  # why it is not run, or None

    def __str__(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path.name
        return f"{path}:{self.line}"

    def compile(self) -> Any:
        # Line numbers in tracebacks point into the Markdown file.
        padded = "\n" * self.line + self.source
        return compile(
            padded, str(self.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        if match["lang"] not in ("python", "py"):
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = FRAGMENT.match(before)
        indent = len(match["indent"])
        source = "\n".join(row[indent:] for row in match["body"].splitlines())
        blocks.append(Block(path, line, source + "\n", marker["why"] if marker else None))
    return blocks


def run_blocks(blocks: list[Block]) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    loop = asyncio.new_event_loop()
    try:
        for block in blocks:
            code = block.compile()
            if block.fragment is not None:
                continue
            try:
                result = eval(code, namespace)  # our own documentation
                if inspect.iscoroutine(result):  # the block awaits at top level
                    loop.run_until_complete(result)
            except Exception as error:
                raise AssertionError(
                    f"the python block at {block} failed: {error!r}. Fix the block, or if it is "
                    "deliberately a fragment, put `<!-- fragment: why -->` on the line before it."
                ) from error
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_python_block_runs(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TYPED_SESSION_SQL_URL", f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    run_blocks(python_blocks(path))


def test_blocks_are_found_indented_or_not(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nx = 1\n```\n\n```console\n$ ls\n```\n\n"
        "1. A step:\n\n   <!-- fragment: a step of a list -->\n   ```python\n   if x:\n"
        "       y = 2\n   ```\n"
    )
    first, second = python_blocks(page)
    assert (first.line, first.source, first.fragment) == (1, "x = 1\n", None)
    assert (second.line, second.source) == (12, "if x:\n    y = 2\n")
    assert second.fragment == "a step of a list"
    readme = python_blocks(ROOT / "README.md")
    assert len(readme) >= 2, "the README's examples are found"


def test_a_failing_block_names_its_file_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n```python\nx = 1\n```\n\n```python\nraise ValueError(x)\n```\n")
    blocks = python_blocks(page)
    with pytest.raises(AssertionError, match=r"page\.md:7 failed: ValueError\(1\)"):
        run_blocks(blocks)


def test_a_fragment_is_compiled_not_run(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- fragment: part of a bigger program -->\n```python\nundefined_name()\n```\n"
        "<!-- fragment: broken -->\n```python\ndef (:\n```\n"
    )
    first, second = python_blocks(page)
    assert first.fragment == "part of a bigger program"
    run_blocks([first])
    with pytest.raises(SyntaxError):
        run_blocks([second])
