"""The API reference (docs/reference/, rendered by mkdocstrings) leaves out no public module
and no name the package exports.

A public module is the package itself and every module of it that declares ``__all__``,
except the parts of a package that declares one too (``backends.sql.table`` and the like:
``backends.sql`` exports their public names).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import typed_session_sql

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference"
DIRECTIVE = re.compile(r"^::: (?P<name>[\w.]+)\s*$", re.M)


def public_modules() -> set[str]:
    found = {"typed_session_sql"}
    for info in pkgutil.walk_packages(typed_session_sql.__path__, "typed_session_sql."):
        if info.name.endswith(".__main__"):  # importing it runs the CLI
            continue
        module = importlib.import_module(info.name)
        parent = importlib.import_module(info.name.rpartition(".")[0])
        if hasattr(module, "__all__") and (
            parent is typed_session_sql or not hasattr(parent, "__all__")
        ):
            found.add(info.name)
    return found


def rendered(page: str = "*.md") -> list[str]:
    """What the ``::: name`` directives of the reference pages render."""
    return [
        match["name"]
        for path in sorted(REFERENCE.glob(page))
        for match in DIRECTIVE.finditer(path.read_text())
    ]


def test_every_public_module_has_a_page() -> None:
    assert public_modules() >= {
        "typed_session_sql",
        "typed_session_sql.testing",
        "typed_session_sql.alembic_support",
        "typed_session_sql.purge",
    }
    missing = public_modules() - set(rendered())
    assert not missing, f"add a `::: module` directive to a page of docs/reference/ for {missing}"


def test_the_package_page_shows_every_export_once() -> None:
    # The page lists the exports one by one, grouped; a new export must join a group.
    shown = [
        name.removeprefix("typed_session_sql.")
        for name in rendered("package.md")
        if name != "typed_session_sql"
    ]
    assert sorted(shown) == sorted(typed_session_sql.__all__)
    assert shown[:2] == ["SessionStore", "Session"], "the main classes come first"


# reST that mkdocstrings shows as typed: roles (`:meth:` and the like, with or without a
# domain), directives (`.. note::`), a paragraph ending in `::` (a literal block) and
# `text <url>`_ links. ``double backticks`` are left alone: Markdown renders them as code.
REST = re.compile(
    r":(?:py:)?[a-z]+:`"
    r"|^\s*\.\. [\w-]+::"
    r"|::$"
    r"|`[^`]*<[^>`]+>`__?",
    re.M,
)


def docstrings(path: Path) -> list[tuple[int, str]]:
    """Every docstring of a module: the module's, each class's and function's, and each
    attribute's (a bare string after an assignment): every bare string statement."""
    return [
        (node.lineno, node.value.value)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]


def test_no_docstring_has_rest_markup() -> None:
    package = Path(typed_session_sql.__file__).parent
    raw = [
        f"{path.relative_to(package.parent)}:{line}: {match[0]}"
        for path in sorted(package.rglob("*.py"))
        for line, text in docstrings(path)
        for match in REST.finditer(text)
    ]
    assert not raw, (
        "Markdown, not reST, in docstrings: mkdocstrings shows these as typed "
        "(write `code` in backticks, not :class: or :meth: roles):\n" + "\n".join(raw)
    )


def test_the_rest_pattern_finds_what_mkdocstrings_shows_raw() -> None:
    found = [
        text
        for text in [
            "What :meth:`SessionStore.save` returns",
            "a :py:class:`~x.Y`",
            "    .. note::",
            "Like this::",
            "`the docs <https://example.org>`_",
            "``literal`` and `code` and a [link](https://example.org)",
            "a time, 12:30, and ::1 (IPv6)",
        ]
        if REST.search(text)
    ]
    assert len(found) == 5
