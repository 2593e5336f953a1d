"""A new database is one module: every dialect module in ``backends/sql/dialects/`` fills in
every member of `DialectSupport`, `dialect_for` finds each by every name SQLAlchemy gives
it and refuses any other with a typed error, and no module outside ``dialects/`` branches
on a dialect's name (the few that must are listed below, each with its reason).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData

from typed_session_sql.backends.sql import SqlBackend, create_engine, dialects
from typed_session_sql.backends.sql.dialects import (
    SUPPORTED,
    DialectSupport,
    UnsupportedDialectError,
    dialect_for,
)
from typed_session_sql.backends.sql.table import session_table

PACKAGE = Path(dialects.__file__).resolve().parents[3]  # typed_session_sql/
DIALECTS = Path(dialects.__file__).resolve().parent
NAMES = frozenset({"postgresql", "postgres", "mysql", "mariadb", "sqlite"})

# Where a dialect's name may still be compared outside dialects/, and why.
ALLOWED = {
    # pg_cron is a PostgreSQL extension: the whole module is PostgreSQL's, and refusing
    # another database is its job, not a difference between dialects.
    "pg_cron.py": "pg_cron is PostgreSQL's",
    # `purge --pg-cron` refuses a URL of another database before connecting, for pg_cron.
    "cli/purge.py": "pg_cron is PostgreSQL's",
    # A revision is frozen history that Alembic runs without a backend; a dialect's DDL
    # that differs goes in the revision (and a new database adds its own branch there).
    "migrations/versions/": "revisions are history",
}


def dialect_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(DIALECTS)])
        if info.name != "support" and not info.name.startswith("_")
    )


def test_every_dialect_module_is_supported_and_fills_in_every_member() -> None:
    modules = [importlib.import_module(f"{dialects.__name__}.{m}") for m in dialect_modules()]
    assert sorted(id(module.SUPPORT) for module in modules) == sorted(map(id, SUPPORTED))
    # None is a member's documented "not on this dialect", where its type allows it.
    required = [f.name for f in dataclasses.fields(DialectSupport) if "None" not in str(f.type)]
    assert "purge_batch" in required
    for support in SUPPORTED:
        assert isinstance(support, DialectSupport)
        for name in required:
            assert getattr(support, name) is not None, (support.name, name)
        assert support.name in support.sqlalchemy_names
        assert callable(support.purge_batch)
        assert callable(support.table_size)
        assert callable(support.migration_lock.take)
        assert callable(support.migration_lock.end)
        assert callable(support.prepare_engine)


def test_dialect_for_finds_every_name_and_refuses_any_other() -> None:
    for support in SUPPORTED:
        for name in support.sqlalchemy_names:
            assert dialect_for(name) is support
    assert dialect_for("mariadb") is dialect_for("mysql")
    with pytest.raises(UnsupportedDialectError, match="'mssql'") as refused:
        dialect_for("mssql")
    assert isinstance(refused.value, ValueError)


def test_an_unsupported_database_is_refused_by_the_engine_and_the_backend() -> None:
    with pytest.raises(UnsupportedDialectError, match="'oracle'"):
        create_engine("oracle+oracledb://u:secret@h/db")
    from sqlalchemy.ext.asyncio import create_async_engine

    # An engine of the application's own, of a dialect the backend has no module for.
    engine = create_async_engine("sqlite+aiosqlite://")
    engine.sync_engine.dialect.name = "unheard_of"
    with pytest.raises(UnsupportedDialectError, match="'unheard_of'"):
        SqlBackend(engine)


def test_the_purge_batch_of_every_dialect_deletes_from_the_session_table() -> None:
    from sqlalchemy import Integer, bindparam, select

    table = session_table(MetaData(), "sessions")
    victims = select(table.c.id_hash).limit(bindparam("max_rows", type_=Integer))
    for support in SUPPORTED:
        assert support.purge_batch(table, victims).table is table


# -- no dialect branches outside dialects/ ----------------------------------------------


def _names_of_dialect_tuples(tree: ast.Module) -> set[str]:
    """Module-level names bound to a tuple or set of dialect names (``MYSQL_DIALECTS``)."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and _is_dialect_names(node.value):
            found.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return found


def _is_dialect_name(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value in NAMES


def _is_dialect_names(node: ast.expr) -> bool:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return bool(node.elts) and all(_is_dialect_name(e) for e in node.elts)
    if isinstance(node, ast.Call) and node.args:  # frozenset({...})
        return _is_dialect_names(node.args[0])
    return False


def dialect_branches(source: str, shared: set[str]) -> Iterator[int]:
    """The lines of ``source`` that compare something with a dialect's name."""
    tree = ast.parse(source)
    tuples = shared | _names_of_dialect_tuples(tree)

    def names_a_dialect(node: ast.expr) -> bool:
        if _is_dialect_name(node) or _is_dialect_names(node):
            return True
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        return name in tuples

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            if any(names_a_dialect(n) for n in [node.left, *node.comparators]):
                yield node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith")
            and node.args
            and names_a_dialect(node.args[0])
        ):
            yield node.lineno
        elif (
            isinstance(node, ast.match_case)
            and isinstance(node.pattern, ast.MatchValue)
            and _is_dialect_name(node.pattern.value)
        ):
            yield node.pattern.lineno


def _shared_tuples() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        found |= _names_of_dialect_tuples(ast.parse(path.read_text()))
    return found


def test_no_module_outside_dialects_branches_on_a_dialect_name() -> None:
    shared = _shared_tuples()
    assert "MYSQL_DIALECTS" in shared  # the detector sees the table's tuple
    offending: dict[str, list[int]] = {}
    used: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if path.is_relative_to(DIALECTS):
            continue
        lines = list(dialect_branches(path.read_text(), shared))
        allowed = [key for key in ALLOWED if relative.startswith(key)]
        if lines and allowed:
            used.update(allowed)
        elif lines:
            offending[relative] = lines
    assert not offending, f"ask the dialect's module (dialects/) instead: {offending}"
    assert used == set(ALLOWED), f"stale entries in ALLOWED: {set(ALLOWED) - used}"


def test_the_detector_finds_the_branches_it_is_for() -> None:
    source = """
MYSQL = ("mysql", "mariadb")
a = engine.dialect.name == "postgresql"
b = name in ("postgresql", "sqlite")
c = name in MYSQL
d = url.startswith(("sqlite", "mysql"))
e = name not in OTHER_TUPLE
match name:
    case "sqlite":
        pass
f = name == "asyncpg"  # a driver, not a dialect
"""
    assert list(dialect_branches(source, {"OTHER_TUPLE"})) == [3, 4, 5, 6, 7, 9]
