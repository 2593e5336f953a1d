"""The package's layers: no import runs from a lower layer up, and no import cycle.

Every import counts, wherever it is written: inside a function (loaded when used is still
a dependency of the design), under ``TYPE_CHECKING``, relative or absolute. An import
names the module it reads from; a package's ``__init__`` that gathers its modules is not
taken as imported by each of them (``from typed_session_sql.backends.sql.table import X``
is an edge to ``table``, not to ``backends.sql``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "typed_session_sql"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Lowest first. A module may import from its own layer and the ones before it, never from a
# later one. A name covers its submodules too; a new module must be given a place here.
LAYERS: dict[str, list[str]] = {
    # What a session is and how it is stored, with no database and no web framework.
    # ``scope`` is the contract an adapter fills (the slot under SCOPE_KEY), so that
    # ``store.session`` needs nothing from the web layer.
    "core": [
        "errors",
        "events",
        "expiry",
        "ids",
        "codec",
        "cookie_commands",
        "commands",
        "backend",
        "session",
        "telemetry",
        "pacing",
        "purge",
        "stats",
        "scope",
        "store",
        "scheduler",
    ],
    # The backends. ``pg_cron`` is the purge as a job inside PostgreSQL, built on the SQL
    # backend.
    "backends": ["backends", "urls", "pg_cron"],
    # The top level: what an application imports daily, gathered from the two above.
    "api": [""],
    # ASGI: the middleware and what it is made of, and the test client helpers.
    "web": ["cookies", "csrf", "request_session", "websocket_origins", "asgi", "testing"],
    # Programs and scripts built on all of it.
    # ``alembic_support`` is what an application's own Alembic env.py imports, built on the
    # SQL backend's runner and settings (backends/sql/migrate.py, settings.py).
    "tools": ["cli", "demo", "migrations", "alembic_support"],
}


def module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: set[str]) -> Iterator[str]:
    """The package's modules ``name`` (at ``path``) imports, anywhere in its code."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                start = package[: len(package) - node.level + 1]
                base = ".".join([*start, base] if base else start)
            for alias in node.names:
                named = f"{base}.{alias.name}"  # ``from package import module``
                found = named if named in modules else base
                if found in modules:
                    yield found


def graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {
        name: set(imports_of(name, path, set(modules))) - {name} for name, path in modules.items()
    }


def layer_of(module: str) -> int | None:
    """The index of the layer whose most specific name covers ``module``."""
    best: tuple[int, int] | None = None  # (length of the name matched, layer)
    for index, names in enumerate(LAYERS.values()):
        for short in names:
            full = f"{PACKAGE}.{short}" if short else PACKAGE
            covers = module == full or (short and module.startswith(full + "."))
            if covers and (best is None or len(full) > best[0]):
                best = (len(full), index)
    return None if best is None else best[1]


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    layers = list(LAYERS)
    found = []
    for module, imported in sorted(edges.items()):
        for target in sorted(imported):
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high > low:
                found.append(f"{module} ({layers[low]}) imports {target} ({layers[high]})")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in module_names(ROOT) if layer_of(name) is None]
    assert unplaced == [], "give these modules a layer in LAYERS"


def test_no_import_runs_from_a_lower_layer_up() -> None:
    assert upward_imports(graph(ROOT)) == []


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(graph(ROOT)) == []


def test_the_store_still_hands_out_the_typed_accessor() -> None:
    # The API the docs use, now without the core importing the web layer.
    from typed_session_sql import MemoryBackend, SessionStore
    from typed_session_sql.asgi import SessionAccessor, get_session
    from typed_session_sql.scope import SessionAccessor as FromScope
    from typed_session_sql.scope import get_session as get_session_from_scope

    store = SessionStore(dict, MemoryBackend())
    assert SessionAccessor is FromScope
    assert get_session is get_session_from_scope
    assert store.session == SessionAccessor(store)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A small package whose imports run up and around in every way the walk must see."""
    root = tmp_path / PACKAGE
    (root / "backends").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "errors.py": "",
        # Up, from inside a function: loaded when used is still an import.
        "store.py": "def f():\n    from typed_session_sql.asgi import X\n",
        # Up, for the type checker only, and relatively.
        "session.py": "import typing\nif typing.TYPE_CHECKING:\n    from . import csrf\n",
        "asgi.py": "import typed_session_sql.store\n",
        "csrf.py": "",
        "backends/__init__.py": "",
        # Round: memory -> sql -> memory, one of them a relative ``from . import``.
        "backends/memory.py": "from typed_session_sql.backends import sql\nfrom .. import errors\n",
        "backends/sql.py": "from .memory import X\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_the_walk_sees_every_kind_of_import(package: Path) -> None:
    edges = graph(package)
    assert edges["typed_session_sql.backends.memory"] == {
        "typed_session_sql.backends.sql",
        "typed_session_sql.errors",
    }
    assert upward_imports(edges) == [
        "typed_session_sql.session (core) imports typed_session_sql.csrf (web)",
        "typed_session_sql.store (core) imports typed_session_sql.asgi (web)",
    ]
    assert cycles(edges) == [
        ["typed_session_sql.asgi", "typed_session_sql.store"],
        ["typed_session_sql.backends.memory", "typed_session_sql.backends.sql"],
    ]
