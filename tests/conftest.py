from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.backends import BACKEND_FACTORIES, RecordingBackend
from tests.clock import FakeClock
from tests.contract import events, store  # noqa: F401 - the contract suite's fixtures


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
