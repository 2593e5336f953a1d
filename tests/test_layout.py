"""The test families are directories: a session that runs a family names its directory
(noxfile.py's ``SQL_SUITES``), so no module of a family can be left out of it by a list or a
name pattern falling behind."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent

FAMILIES = {"test_contract": "contract", "test_sql_": "sql"}


def test_every_module_of_a_family_is_in_its_directory() -> None:
    astray = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("test_*.py")
        for prefix, family in FAMILIES.items()
        if path.name.startswith(prefix) and path.parent != TESTS / family
    ]
    assert astray == []


def test_the_bounds_session_runs_the_family_directories() -> None:
    noxfile = (TESTS.parent / "noxfile.py").read_text()
    assert 'SQL_SUITES = ["tests/contract", "tests/sql"]' in noxfile
    for family in FAMILIES.values():
        assert (TESTS / family / "__init__.py").is_file()
