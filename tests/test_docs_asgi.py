"""The examples in docs/asgi.md run as written (on MemoryBackend instead of PostgreSQL)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parent.parent / "docs" / "asgi.md"
PRODUCTION_BACKEND = 'SqlBackend.from_url("postgresql+asyncpg://app@db/app")'


def python_blocks() -> list[str]:
    text = DOC.read_text().replace(PRODUCTION_BACKEND, "MemoryBackend()")
    text = text.replace(
        "from typed_session_sql import Session,",
        "from typed_session_sql import MemoryBackend, Session,",
    )
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def namespace_for(framework: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The Starlette example, then the given framework's example on top of it, run as a
    module (dataclasses look their module up)."""
    blocks = python_blocks()
    module = types.ModuleType(f"docs_asgi_{framework}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    exec(blocks[0] + blocks[1], namespace)
    extra = {"starlette": None, "fastapi": blocks[2], "litestar": blocks[3]}[framework]
    if extra is not None:
        exec(extra, namespace)
    return namespace


@pytest.mark.parametrize(
    ("framework", "body"),
    [("starlette", "1 items"), ("fastapi", '{"items":1}'), ("litestar", '{"items":1}')],
)
async def test_each_frameworks_example_serves_a_session(
    framework: str, body: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = namespace_for(framework, monkeypatch)["app"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.post("/add")
    assert response.status_code in (200, 201)
    assert response.text == body
    assert response.headers["set-cookie"].startswith("__Host-id=")


def test_the_custom_error_response_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = namespace_for("starlette", monkeypatch)
    (block,) = [block for block in python_blocks() if "def error_response" in block]
    exec(block, namespace)
    assert namespace["error_response"] is not None
