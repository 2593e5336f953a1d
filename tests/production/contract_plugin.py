"""A pytest plugin that runs the contract suite on backends named in an environment variable.

    TYPED_SESSION_SQL_CONTRACT_TARGETS='{"pgbouncer-transaction-driver": {"url": ...,
        "execution": "driver", "settings": "asyncpg-unnamed"}}' \\
        python -m pytest -p tests.production.contract_plugin tests/contract/

Loaded with ``-p``, it runs before any conftest: it replaces the entries of
``tests.sql_backends.SQL_BACKEND_FACTORIES`` (the contract suite's SQL backends, which
``tests/backends.py`` copies when it is first imported) with one factory per target, and
deselects every test that does not run on one of them (the memory backend's, and tests
that take no backend). The contract modules run unchanged; this is how
``test_pgbouncer.py`` runs them through PgBouncer.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from tests import sql_backends
from tests.production.backends import SETTINGS, Execution, Settings, fresh_backend
from typed_session_sql.backend import Backend

TARGETS_ENV = "TYPED_SESSION_SQL_CONTRACT_TARGETS"


def _factory(url: str, execution: Execution, settings: Settings) -> sql_backends.BackendFactory:
    @asynccontextmanager
    async def opened() -> AsyncIterator[Backend]:
        async with fresh_backend(url, execution, settings) as backend:
            yield backend

    return opened


_targets: dict[str, Any] = json.loads(os.environ.get(TARGETS_ENV, "{}"))
if _targets:
    sql_backends.SQL_BACKEND_FACTORIES.clear()
    for _name, _target in _targets.items():
        sql_backends.SQL_BACKEND_FACTORIES[_name] = _factory(
            _target["url"], cast(Execution, _target["execution"]), SETTINGS[_target["settings"]]
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _targets:
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("backend_name") if callspec is not None else None
        (kept if name in _targets else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
