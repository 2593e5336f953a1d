"""The test families are directories: a session that runs a family names its directory
(noxfile.py's ``SQL_SUITES``), so no module of a family can be left out of it by a list or a
name pattern falling behind."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# A module's name prefix, and the directory of its family.
FAMILIES = {
    "test_contract": "contract",
    "test_sql_": "sql",
    "test_asgi": "asgi",
    "test_docs_": "docs",
    "test_readme": "docs",
    "test_cli": "cli",
    "test_purge": "purge",
    "test_migrations": "migrations",
}

# What touches SQLAlchemy's execution, so runs on both ends of its range (tests_bounds).
BOUNDS = ["tests/contract", "tests/sql", "tests/purge", "tests/migrations"]


def test_every_module_of_a_family_is_in_its_directory() -> None:
    astray = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("test_*.py")
        for prefix, family in FAMILIES.items()
        if path.name.startswith(prefix) and path.parent != TESTS / family
    ]
    assert astray == []


def test_every_family_is_a_package() -> None:
    assert all((TESTS / family / "__init__.py").is_file() for family in FAMILIES.values())


def test_the_bounds_session_runs_whole_family_directories() -> None:
    tree = ast.parse((TESTS.parent / "noxfile.py").read_text())
    (suites,) = (
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "SQL_SUITES" for t in node.targets)
    )
    assert ast.literal_eval(suites) == BOUNDS
    assert all((TESTS.parent / suite).is_dir() for suite in BOUNDS)
