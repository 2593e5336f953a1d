"""What a newcomer runs first, from README.md and docs/, works: the install lines and the
description of ``uvx nox``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `pip install typed-session-sql...` by name, which only works once the package is on
# PyPI; `./typed-session-sql[...]` (a checkout) and `... @ git+<url>` work today.
BY_NAME = re.compile(r"pip install\s+['\"]?typed-session-sql\b(?![^'\"\s]*['\"]?\s*@)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_no_page_installs_the_unpublished_package_by_name() -> None:
    offending = [
        f"{path.relative_to(ROOT)}: {match[0]}"
        for path in pages()
        for match in BY_NAME.finditer(path.read_text())
    ]
    assert not offending, "the package is not on PyPI: install from a checkout or git"


def test_the_pattern_tells_the_ways_apart() -> None:
    assert BY_NAME.search("$ pip install 'typed-session-sql[postgres]'")
    assert BY_NAME.search("pip install typed-session-sql")
    assert not BY_NAME.search("pip install './typed-session-sql[postgres]'")
    assert not BY_NAME.search("pip install 'typed-session-sql[postgres] @ git+https://x/y'")


def test_the_readme_names_every_session_uvx_nox_runs() -> None:
    noxfile = ast.parse((ROOT / "noxfile.py").read_text())
    (default,) = [
        ast.literal_eval(node.value)
        for node in ast.walk(noxfile)
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "nox.options.sessions"
    ]
    readme = (ROOT / "README.md").read_text()
    assert [name for name in default if f"`{name}`" not in readme] == []
