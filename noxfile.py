"""Developer tasks: `nox` runs tests, lint and typecheck; `nox -s demo` starts the demo."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_venv = "yes"

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, against MemoryBackend, SQLite and the PostgreSQL server."""
    session.install("-e", ".[postgres,demo]", "--group", "test")
    session.run("python", "-m", "pytest", *session.posargs)


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


@nox.session(python=PYTHON)
def production(session: nox.Session) -> None:
    """PostgreSQL as production runs it (tests/production): PgBouncer, a standby that takes
    over, restarts and running out of connections, under load. Runs as root: the servers
    it starts run as the postgres user. psycopg is here only to measure its PgBouncer path."""
    session.install("-e", ".[postgres,demo]", "--group", "test", "psycopg[binary]>=3.1")
    session.run("python", "-m", "pytest", "-m", "production", *session.posargs)
