"""Every fenced ``python`` block in README.md, docs/ and the package's docstrings runs.

The rule, for whoever writes documentation (CONTRIBUTING.md says the same):

- The blocks of one Markdown file run top to bottom in one namespace, as a reader pasting
  them in order would run them: a later block may use what an earlier one defined. They
  run in a temporary directory, with ``TYPED_SESSION_SQL_URL`` pointing at a fresh SQLite
  file there, so ``SqlBackend.from_url()`` works without a server. They run as a script
  does: a block that awaits does it in a function it runs with ``asyncio.run(...)``, since
  a reader pasting a top-level ``await`` into a script gets a SyntaxError.
- A block that is deliberately a fragment (one piece of a larger program, with names it
  does not define, or a placeholder like ``...``) has the line ``<!-- fragment: why -->``
  right before its opening fence. It is compiled, so its syntax is checked, but not run;
  it may ``await`` at top level (it is a piece of an ``async def``).
  Say in ``why`` where it is exercised, if anywhere (``runs in tests/docs/test_docs_asgi.py``).

Docstrings follow the same rule: the fenced ``python`` blocks in a public name's docstring
(its ``Examples:`` section, which mkdocstrings renders in the reference) run top to bottom
in one namespace of their own, each docstring apart. The main classes must have one.

Blocks that need asserting more than "it runs" get a test of their own as well
(tests/docs/test_docs_*.py, tests/docs/test_readme.py); this test only guarantees none is left out.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.markdown import FENCE, body

ROOT = Path(__file__).resolve().parents[2]
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
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if self.fragment is not None else 0
        try:
            return compile(padded, str(self.path), "exec", flags=flags, dont_inherit=True)
        except SyntaxError as error:
            if (
                self.fragment is None
                and "outside" in str(error.msg)
                and "function" in str(error.msg)
            ):
                raise AssertionError(
                    f"the python block at {self} uses {error.msg} at line {error.lineno}: a "
                    "reader pasting it into a script gets a SyntaxError. Put it in an "
                    "`async def main()` run with `asyncio.run(main())`, or if it is a piece of "
                    "a handler, mark it `<!-- fragment: why -->`."
                ) from error
            raise


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks(path: Path, text: str | None = None, first_line: int = 1) -> list[Block]:
    """The blocks of the Markdown file ``path``, or of ``text`` found in it at ``first_line``."""
    text = path.read_text() if text is None else text
    blocks = []
    for match in FENCE.finditer(text):
        if match["lang"] not in ("python", "py"):
            continue
        line = text.count("\n", 0, match.start()) + first_line
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = FRAGMENT.match(before)
        source = body(match).rstrip("\n") + "\n"
        blocks.append(Block(path, line, source, marker["why"] if marker else None))
    return blocks


def docstring_blocks(obj: object) -> list[Block]:
    """The blocks in the docstring of the class or function ``obj``, with their line
    numbers in its source file."""
    if not (inspect.isclass(obj) or inspect.isroutine(obj)) or "```" not in (obj.__doc__ or ""):
        return []
    doc = inspect.cleandoc(obj.__doc__ or "")  # its own, not one inherited
    path = Path(inspect.getsourcefile(obj) or "")
    lines, start = inspect.getsourcelines(obj)
    first = doc.splitlines()[0]
    offset = next(index for index, row in enumerate(lines) if first in row)
    return python_blocks(path, doc, start + offset)


def documented_objects() -> dict[str, object]:
    """Every public name of every public module, and the methods and properties of the
    classes among them, by the name the reference shows; each object once."""
    from tests.docs.test_docs_reference import public_modules

    found: dict[str, object] = {}
    seen: set[int] = set()

    def add(name: str, obj: object) -> None:
        if id(obj) not in seen:
            seen.add(id(obj))
            found[name] = obj

    for module_name in sorted(public_modules()):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            add(f"{module_name}.{name}", obj)
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    if not member.startswith("_"):
                        add(f"{module_name}.{name}.{member}", getattr(value, "fget", value))
    return found


@functools.cache  # collection and each test ask; the docstrings do not change
def with_examples() -> dict[str, list[Block]]:
    examples = {name: docstring_blocks(obj) for name, obj in documented_objects().items()}
    return {name: blocks for name, blocks in examples.items() if blocks}


def run_blocks(blocks: list[Block]) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in blocks:
        code = block.compile()
        if block.fragment is not None:
            continue
        try:
            exec(code, namespace)  # our own documentation
        except Exception as error:
            raise AssertionError(
                f"the python block at {block} failed: {error!r}. Fix the block, or if it is "
                "deliberately a fragment, put `<!-- fragment: why -->` on the line before it."
            ) from error


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_python_block_runs(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TYPED_SESSION_SQL_URL", f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    run_blocks(python_blocks(path))


@pytest.mark.parametrize("name", sorted(with_examples()))
def test_every_docstring_example_runs(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TYPED_SESSION_SQL_URL", f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    run_blocks(with_examples()[name])


MAIN_CLASSES = [
    "typed_session_sql.SessionStore",
    "typed_session_sql.Session",
    "typed_session_sql.SqlBackend",
    "typed_session_sql.PurgeScheduler",
    "typed_session_sql.asgi.SessionMiddleware",
    "typed_session_sql.testing.SessionJar",
    "typed_session_sql.testing.AsyncSessionJar",
]


@pytest.mark.parametrize("name", MAIN_CLASSES)
def test_the_main_classes_have_a_runnable_example(name: str) -> None:
    module, _, attribute = name.rpartition(".")
    doc = inspect.getdoc(getattr(importlib.import_module(module), attribute)) or ""
    assert re.search(r"^Examples?:$", doc, re.M), f"{name}'s docstring has no Examples: section"
    blocks = with_examples().get(name, [])
    assert any(block.fragment is None for block in blocks), f"{name} has no runnable example"


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


def test_a_block_that_awaits_outside_a_function_must_be_a_fragment(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nimport asyncio\nawait asyncio.sleep(0)\n```\n\n"
        "<!-- fragment: inside a handler -->\n```python\nawait store.save(session)\n```\n"
    )
    runnable, fragment = python_blocks(page)
    with pytest.raises(AssertionError, match=r"page\.md:1 uses 'await' outside function at line 3"):
        run_blocks([runnable])
    run_blocks([fragment])


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
