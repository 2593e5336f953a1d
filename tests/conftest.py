from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.backends import BACKEND_FACTORIES, RecordingBackend
from tests.clock import FakeClock
from tests.contract import events, store  # noqa: F401 - the contract suite's fixtures
from tests.sql_backends import SQL_TARGETS, SqlTarget
from typed_session_sql.backends.sql import SqlBackend


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that takes `backend` runs once per backend; the in-memory one also runs
    # under trio, to prove the core uses no asyncio-only API.
    if "backend" in metafunc.fixturenames:
        params = []
        for name, (_, trio_too) in BACKEND_FACTORIES.items():
            params.append(pytest.param(name, "asyncio", id=f"{name}-asyncio"))
            if trio_too:
                params.append(pytest.param(name, "trio", id=f"{name}-trio"))
        metafunc.parametrize(("backend_name", "anyio_backend"), params)
    # Every test that takes `sql_target` (or `sql_backend`) runs once per database x
    # executor, or on those a `sql(database=..., execution=...)` mark keeps.
    if "sql_target" in metafunc.fixturenames:
        marks = list(metafunc.definition.iter_markers("sql"))  # the test's, its module's
        targets = [
            target
            for target in SQL_TARGETS
            if all(
                getattr(target, key) in _as_tuple(value)
                for mark in marks
                for key, value in mark.kwargs.items()
            )
        ]
        metafunc.parametrize("sql_target", targets, ids=[target.id for target in targets])


def _as_tuple(value: object) -> tuple[object, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def backend(backend_name: str) -> AsyncIterator[RecordingBackend]:
    factory, _ = BACKEND_FACTORIES[backend_name]
    async with factory() as inner:
        yield RecordingBackend(inner)


@pytest.fixture
async def sql_backend(sql_target: SqlTarget) -> AsyncIterator[SqlBackend]:
    """A backend on a fresh table (see :meth:`SqlTarget.open`), for each database x executor."""
    async with sql_target.open() as opened:
        yield opened
