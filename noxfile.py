"""Developer tasks: `nox` runs tests, lint and typecheck; `nox -s demo` starts the demo;
`nox -s docs`, `nox -s release` and `nox -s bench` build the site, check the packages and
run the published benchmarks."""

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
# Test families are directories, so a new module of a family is in its session without a list
# to keep up to date (tests/test_layout.py fails on a family's module outside its directory).
SQL_SUITES = ["tests/contract", "tests/sql", "tests/purge", "tests/migrations"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, against MemoryBackend, SQLite and the PostgreSQL server, on
    the newest SQLAlchemy the range allows."""
    session.install("-e", ".[postgres,demo]", "--group", "test")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=["3.11", "3.13"])
@nox.parametrize("sqlalchemy", ["floor", "newest"])
def tests_bounds(session: nox.Session, sqlalchemy: str) -> None:
    """The contract suite, the SQL backend's own tests (every database x executor), the purge
    and the migrations on both ends of the SQLAlchemy range and both ends of the Python
    range: what an upgrade of either can break (the slow wheel build runs in `tests` only).
    The rest does not touch SQLAlchemy's execution, and `tests` runs all of it on 3.11 with
    the newest SQLAlchemy, which this session then skips."""
    if session.python == PYTHON and sqlalchemy == "newest":
        session.skip("the tests session runs the whole suite here")
    session.install("-e", ".[postgres,demo]", "--group", "test")
    if sqlalchemy == "floor":
        session.install(SQLALCHEMY_FLOOR)
    session.run("python", "-m", "pytest", "-q", "-m", "not wheel", *SQL_SUITES, *session.posargs)


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
    """The demo app on http://127.0.0.1:8000, on ./sessions.db unless --url is given
    (`nox -s demo -- --url postgresql+asyncpg://...` works too: asyncpg is installed)."""
    session.install("-e", ".[demo,postgres]")
    session.run("typed-session-sql", "demo", *session.posargs)


# The peers and tools the benchmark compares against or draws with: installed into the
# bench session's virtualenv only, never dependencies of the package. Pinned, so a re-run
# measures the same code; results.json records every version that ran.
BENCH_REQUIREMENTS = [
    "django==5.2.19",
    "psycopg[binary]==3.3.9",
    "flask==3.1.3",
    "flask-session==0.8.0",
    "flask-sqlalchemy==3.1.1",
    "advanced-alchemy[uuid]==1.12.0",
    "litestar==2.25.0",
    "starsessions==2.2.1",
    "redis==8.1.0",
    "matplotlib==3.11.2",
    "uvloop==0.23.0",  # uvicorn picks uvloop and httptools when installed, as in production
    "httptools==0.9.0",
    "mypy>=1.11",
]


# The harness's modules (the other scripts in benchmarks/ are the SQL engineer's tools).
BENCH_HARNESS = (
    "run", "operations", "contenders", "peers", "timing", "web", "web_app", "loadgen",
    "growth", "bloat", "purge", "report", "in_process", "instructions",
)  # fmt: skip


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The published benchmarks into benchmarks/results/ (~12 min); `-- --quick` in seconds.

    Type-checks the harness first, then runs benchmarks/run.py on a PostgreSQL server of its
    own, the shared Redis, a temporary SQLite file and a table of its own on the machine's
    MariaDB server.
    """
    session.install("-e", ".[postgres,mysql,demo]", *BENCH_REQUIREMENTS)
    session.run("mypy", *(f"benchmarks/{name}.py" for name in BENCH_HARNESS))
    session.run("python", "benchmarks/run.py", "--require-all", *session.posargs)


DOCS_REQUIREMENTS = [
    "ruff",  # mkdocstrings formats the signatures with it
    "mkdocs==1.6.1",
    "mkdocs-material==9.8.1",
    "mkdocstrings[python]==1.0.8",
    "mkdocstrings-python==2.0.11",
]


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site (MkDocs, Material, mkdocstrings) into site/, warnings as errors.

    `nox -s docs -- serve` serves it on http://127.0.0.1:8000 instead.
    """
    session.install("-e", ".[postgres,demo]", *DOCS_REQUIREMENTS)
    quiet = {"NO_MKDOCS_2_WARNING": "1"}  # Material's banner about its successor
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:], env=quiet)
    else:
        session.run(
            "mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs, env=quiet
        )


def newest_python() -> str:
    """Python 3.13 (pyenv's, where the machine has it), else the oldest supported: the
    release is tested on the newest Python, every other session on the oldest."""
    pyenv = sorted(Path("~/.pyenv/versions").expanduser().glob("3.13.*/bin/python3.13"))
    return str(pyenv[-1]) if pyenv else PYTHON


@nox.session(python=newest_python())
def release(session: nox.Session) -> None:
    """Build the sdist and the wheel, check them with twine, then build and install the
    package from the unpacked sdist and run the tests there (all but the families that
    tests_bounds runs on the same Python)."""
    import shutil
    import tarfile
    import tempfile

    session.install("build>=1.2", "twine>=6")
    work = Path(session.create_tmp()).resolve()
    dist, unpacked = work / "dist", work / "unpacked"
    for folder in (dist, unpacked):
        shutil.rmtree(folder, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *(str(path) for path in sorted(dist.iterdir())))
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (tree,) = unpacked.iterdir()
    with session.chdir(tree):
        session.install(".[postgres,demo]", "--group", "test")  # built from the sdist's tree
        # create_tmp() pointed TMPDIR into the checkout, which may sit in a directory only
        # its owner can enter (a clone in `mktemp -d`): the servers some tests start run as
        # the postgres user and could not reach their data directories there.
        # tests_bounds ran its families on this Python already: here the rest, so each test
        # runs once on 3.13 (`-- tests/contract` runs one of them too).
        selection = session.posargs or [f"--ignore={suite}" for suite in SQL_SUITES]
        session.run(
            "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection,
            env={"TMPDIR": tempfile.gettempdir()},
        )  # fmt: skip


@nox.session(python=PYTHON)
def production(session: nox.Session) -> None:
    """PostgreSQL as production runs it (tests/production): PgBouncer, a standby that takes
    over, restarts and running out of connections, under load. Runs as root: the servers
    it starts run as the postgres user."""
    session.install("-e", ".[postgres,psycopg,demo]", "--group", "test")
    session.run("python", "-m", "pytest", "-m", "production", *session.posargs)
