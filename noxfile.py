"""Developer tasks: `nox` runs tests, lint and typecheck; `nox -s demo` starts the demo."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "tests_bounds", "lint", "typecheck"]
nox.options.reuse_venv = "yes"

PYTHON = "3.11"

# pyenv's interpreters (3.13 for the bounds below) are not on PATH by themselves.
_PYENV = sorted(Path("~/.pyenv/versions").expanduser().glob("3.*/bin"), reverse=True)
os.environ["PATH"] = os.pathsep.join([*map(str, _PYENV), os.environ.get("PATH", "")])

# The floor of the SQLAlchemy range pyproject.toml allows (the newest below its cap is what
# resolves by default).
SQLALCHEMY_FLOOR = "sqlalchemy[asyncio]==2.0.43"
SQL_SUITES = ["tests/test_contract.py", "tests/test_contract_principals.py", "tests/test_sql_*"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, against MemoryBackend, SQLite and the PostgreSQL server, on
    the newest SQLAlchemy the range allows."""
    session.install("-e", ".[postgres,demo]", "--group", "test")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=["3.11", "3.13"])
@nox.parametrize("sqlalchemy", ["floor", "newest"])
def tests_bounds(session: nox.Session, sqlalchemy: str) -> None:
    """The contract suite and the SQL backend's own tests (every database x executor) on
    both ends of the SQLAlchemy range and both ends of the Python range: what an upgrade
    of either can break. The rest does not touch SQLAlchemy's execution, and `tests` runs
    all of it on 3.11 with the newest SQLAlchemy, which this session then skips."""
    if session.python == PYTHON and sqlalchemy == "newest":
        session.skip("the tests session runs the whole suite here")
    session.install("-e", ".[postgres,demo]", "--group", "test")
    if sqlalchemy == "floor":
        session.install(SQLALCHEMY_FLOOR)
    suites = [str(p) for pattern in SQL_SUITES for p in sorted(Path().glob(pattern))]
    session.run("python", "-m", "pytest", "-q", *suites, *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("--group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    session.install("-e", ".[postgres,demo]", "--group", "typecheck")
    session.run("mypy")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The demo app on http://127.0.0.1:8000, on ./sessions.db unless --url is given."""
    session.install("-e", ".[demo]")
    session.run("typed-session-sql", "demo", *session.posargs)
