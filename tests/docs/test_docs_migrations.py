"""docs/migrations.md as a user follows it: the examples run, the command lines print what
the doc shows, and each way of running our revisions next to an application's own Alembic
environment works end to end in a project made by ``alembic init -t async``, with the real
``alembic`` command: upgrade creates the app's tables and ours, autogenerate afterwards
writes an empty revision, downgrade works."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from tests import markdown
from tests.sql_backends import require_postgres, unique_name
from typed_session_sql.backends.sql import create_engine

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "migrations.md"
BIN = Path(sys.executable).parent

# The app's own models, before it meets this package.
MODELS = """\
from sqlalchemy import Column, Integer, MetaData, String, Table

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("n", String(9)))
"""


def blocks(language: str) -> list[str]:
    return markdown.blocks(DOC.read_text(), language)


def block_with(language: str, marker: str) -> str:
    (block,) = [b for b in blocks(language) if marker in b]
    return block


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPED_SESSION_SQL_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def tables_in(url: str) -> set[str]:
    async def look() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:

                def names(sync: Connection) -> set[str]:
                    return set(inspect(sync).get_table_names())

                return await conn.run_sync(names)
        finally:
            await engine.dispose()

    return asyncio.run(look())


# -- the examples and the command lines -------------------------------------------------


def test_migrate_at_start_up_and_two_tables_in_one_schema(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    one_line = block_with("python", "await backend.migrate()  # Alembic")
    namespace: dict[str, Any] = {}
    exec(compile(block_with("python", "def migrate_both"), str(DOC), "exec"), namespace)

    async def start_up() -> None:
        from typed_session_sql import SqlBackend

        async with SqlBackend.from_url(url, table_name="first") as backend:
            scope: dict[str, Any] = {"backend": backend}
            exec(compile(f"async def _f():\n    {one_line.strip()}", str(DOC), "exec"), scope)
            await scope["_f"]()
        await namespace["migrate_both"](url)

    asyncio.run(start_up())
    assert {"first", "shop_sessions", "admin_sessions"} <= tables_in(url)
    assert {"shop_sessions_alembic_version", "admin_sessions_alembic_version"} <= tables_in(url)


def test_the_command_lines_print_what_the_doc_shows(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    session = block_with("console", "migrate current")
    lines = session.splitlines()
    commands = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    assert len(commands) == 5
    for start, end in zip(commands, [*commands[1:], len(lines)], strict=True):
        words = shlex.split(lines[start][2:])
        words = [url if w == "postgresql+asyncpg://app@db.internal/app" else w for w in words]
        done = subprocess.run(
            words, capture_output=True, text=True, env=clean_env(), cwd=tmp_path, check=False
        )
        assert done.returncode == 0, done.stderr
        shown = [line.replace("postgresql+asyncpg://app@db.internal/app", url) for line in lines]
        assert done.stdout.splitlines() == shown[start + 1 : end], words
        assert done.stderr == ""


# -- an application with its own Alembic environment ----------------------------------


@dataclass
class Project:
    path: Path
    url: str
    first_revision: str

    def run(self, *words: str, code: int = 0) -> str:
        done = subprocess.run(
            [str(BIN / words[0]), *words[1:]],
            cwd=self.path, env=clean_env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == code, f"{words}: {done.stdout}{done.stderr}"
        return done.stdout + done.stderr

    def console(self, block: str, **replace: str) -> None:
        """Run each ``$ `` line of ``block``, ``<...>`` and ``$VARS`` replaced."""
        for line in block.splitlines():
            if line.startswith("$ "):
                command = line[2:]
                for old, new in replace.items():
                    command = command.replace(old, new)
                self.run(*shlex.split(command))

    def autogenerate(self, *extra: str) -> str:
        """Autogenerate a revision; return its upgrade() and downgrade() bodies."""
        out = self.run("alembic", "revision", "--autogenerate", "-m", "check", *extra)
        (path,) = re.findall(r"Generating (\S+\.py)", out)
        script = Path(path).read_text()
        return script[script.index("def upgrade") :]

    @property
    def tables(self) -> set[str]:
        return tables_in(self.url)


@pytest.fixture(params=["sqlite", "postgres"])
def app_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
        return
    server = make_url(require_postgres())
    name = unique_name("app")

    async def admin(statement: str) -> None:
        engine = create_engine(server.render_as_string(hide_password=False))
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def new_project(tmp_path: Path, url: str) -> Project:
    """An app made by ``alembic init -t async``, with one table and its first revision."""
    path = tmp_path / "app"
    path.mkdir()
    project = Project(path, url, "")
    project.run("alembic", "init", "-t", "async", "alembic")
    (path / "models.py").write_text(MODELS)
    ini = path / "alembic.ini"
    ini.write_text(
        re.sub(r"(?m)^sqlalchemy\.url = .*$", f"sqlalchemy.url = {url}", ini.read_text())
    )
    env = path / "alembic" / "env.py"
    env.write_text(
        env.read_text().replace(
            "target_metadata = None\n",
            "from models import metadata\n\ntarget_metadata = metadata\n",
        )
    )
    out = project.run("alembic", "revision", "--autogenerate", "-m", "items")
    (project.first_revision,) = re.findall(r"versions/(\w+)_items\.py", out)
    return project


def apply_env_snippet(project: Project, snippet: str) -> None:
    """Put a doc's env.py snippet into the project's env.py: its imports at the top, its
    statements after ``target_metadata``, its extra keywords into both configure calls."""
    head, _, call = snippet.partition("# ... and in both context.configure(...) calls:")
    imports = [line for line in head.splitlines() if line.startswith(("from ", "import "))]
    statements = [
        line
        for line in head.splitlines()
        if line and not line.startswith(("from ", "import ", "#"))
    ]
    keywords = [
        line.split("#")[0].strip()
        for line in call.splitlines()
        if "=" in line
        and not line.strip().startswith(("connection=", "target_metadata=", "context.configure"))
    ]
    assert call
    assert keywords
    env_path = project.path / "alembic" / "env.py"
    env = env_path.read_text()
    replacements = [
        ("from alembic import context\n", "".join(f"{line}\n" for line in imports)),
        ("target_metadata = metadata\n", "".join(f"{line}\n" for line in statements)),
        (
            "        target_metadata=target_metadata,\n",
            "        " + " ".join(keywords) + "\n",
        ),
        (
            "context.configure(connection=connection, target_metadata=target_metadata)",
            ", " + " ".join(keywords),
        ),
    ]
    for old, added in replacements:  # each addition goes right after its anchor
        assert old in env, old
        if old.endswith(")"):
            env = env.replace(old, old[:-1] + added + ")")
        else:
            env = env.replace(old, old + added)
    env_path.write_text(env)


def assert_empty(revision: str) -> None:
    assert "drop_table" not in revision
    assert "op." not in revision, revision


def test_way_1_our_command_next_to_the_apps_alembic(tmp_path: Path, app_url: str) -> None:
    project = new_project(tmp_path, app_url)
    apply_env_snippet(project, block_with("python", "include_name=include_name"))
    project.console(block_with("console", "$DATABASE_URL"), **{"$DATABASE_URL": app_url})
    assert {"items", "typed_sessions", "typed_sessions_alembic_version"} <= project.tables

    assert_empty(project.autogenerate())  # not a drop_table in sight
    way_2 = project.path / "way2.ini"  # the same project, switched to way 2 by mistake
    ini = (project.path / "alembic.ini").read_text()
    way_2.write_text(
        ini.replace("\npath_separator = os\n", "\n" + block_with("ini", "version_locations"))
    )
    refused = project.run("alembic", "-c", str(way_2), "upgrade", "heads", code=255)
    assert "is migrated by typed-session-sql itself" in refused  # not "already exists"

    project.run("alembic", "downgrade", "base")
    assert "items" not in project.tables
    assert "typed_sessions" in project.tables  # the app's downgrade leaves sessions alone
    project.run("typed-session-sql", "migrate", "downgrade", "base", "--url", app_url)
    assert "typed_sessions" not in project.tables


def test_way_2_our_revisions_inside_the_apps_environment(tmp_path: Path, app_url: str) -> None:
    project = new_project(tmp_path, app_url)
    ini_path = project.path / "alembic.ini"
    ini = ini_path.read_text()
    assert "\npath_separator = os\n" in ini  # what alembic init writes, and the doc replaces
    ini_path.write_text(
        ini.replace("\npath_separator = os\n", "\n" + block_with("ini", "version_locations"))
    )
    apply_env_snippet(project, block_with("python", "include_name=include_name"))
    heads = project.run("alembic", "heads")
    assert "0003 (typed_session_sql) (head)" in heads
    assert f"{project.first_revision} (head)" in heads

    project.console(
        block_with("console", "alembic upgrade heads"),
        **{"<your head>": project.first_revision},
    )
    assert {"items", "typed_sessions"} <= project.tables
    # The README's start-up migration next to way 2 (N2): refused, saying what to do, where
    # it used to fail on CREATE TABLE and exit 69 ("could not be reached").
    refused = project.run(
        "typed-session-sql", "migrate", "upgrade", "head", "--url", app_url, code=1
    )
    assert "managed by your own Alembic history" in refused
    assert "remove `backend.migrate()`" in refused
    (check,) = (project.path / "alembic" / "versions").glob("*_add_orders.py")
    script = check.read_text()
    assert_empty(script[script.index("def upgrade") :])

    project.run("alembic", "upgrade", "heads")
    assert_empty(project.autogenerate("--head", f"{project.first_revision}@head"))
    project.run("alembic", "downgrade", "base")
    assert not {"items", "typed_sessions"} & project.tables


def test_our_table_in_the_apps_metadata(tmp_path: Path) -> None:
    # Plain Alembic on the app's side only, so SQLite shows it (and runs in half the time).
    project = new_project(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    project.run("alembic", "upgrade", "head")
    apply_env_snippet(project, block_with("python", "render_item=render_item"))
    revision = project.autogenerate()
    assert "create_table('typed_sessions'" in revision
    assert "sa.BigInteger()" in revision
    assert "typed_session_sql" not in revision  # nothing that needs an import (F6)
    project.run("alembic", "upgrade", "head")
    assert "typed_sessions" in project.tables
    assert_empty(project.autogenerate())
    project.run("alembic", "downgrade", "base")
    assert not {"items", "typed_sessions"} & project.tables
