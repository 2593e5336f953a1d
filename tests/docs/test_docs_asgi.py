"""The examples in docs/asgi.md run as written (on MemoryBackend instead of PostgreSQL)."""

from __future__ import annotations

import inspect
import re
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.markdown import blocks

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "asgi.md"
PRODUCTION_BACKEND = 'SqlBackend.from_url("postgresql+asyncpg://app@db/app")'


def python_blocks() -> list[str]:
    text = DOC.read_text().replace(PRODUCTION_BACKEND, "MemoryBackend()")
    text = text.replace(
        "from typed_session_sql import SessionStore,",
        "from typed_session_sql import MemoryBackend, SessionStore,",
    )
    return blocks(text)


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


def example(namespace: dict[str, Any], marker: str) -> dict[str, Any]:
    """Run the one block containing ``marker`` on top of ``namespace``."""
    (block,) = [block for block in python_blocks() if marker in block]
    exec(block, namespace)
    return namespace


def test_the_websocket_example_reads_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    namespace = example(namespace_for("starlette", monkeypatch), "WebSocketRoute")
    store, cart = namespace["store"], namespace["Cart"]
    with TestClient(namespace["app"]) as client:
        assert client.portal is not None  # entered: the app's event loop
        session = client.portal.call(store.save, store.new(cart(items=["fig", "pear"])))
        # A browser sends its page's Origin; the test client connects to ws://testserver.
        headers = {"cookie": f"__Host-id={session.value}", "origin": "http://testserver"}
        with client.websocket_connect("/feed", headers=headers) as socket:
            assert socket.receive_text() == "2 items in your cart"


def test_the_long_lived_websocket_example_closes_once_the_session_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from typed_session_sql.asgi import SessionMiddleware

    namespace = example(namespace_for("starlette", monkeypatch), "still_valid(session)")
    store, cart = namespace["store"], namespace["Cart"]
    app = SessionMiddleware(
        Starlette(routes=[WebSocketRoute("/orders", namespace["orders"])]), store
    )
    with TestClient(app) as client:
        assert client.portal is not None
        session = store.new(cart(items=["fig", "pear"]))
        cookie = client.portal.call(store.save, session)
        headers = {"cookie": f"__Host-id={cookie.value}", "origin": "http://testserver"}
        with client.websocket_connect("/orders", headers=headers) as socket:
            socket.send_text("hello")
            assert socket.receive_text() == "hello: 2 items"
            client.portal.call(store.clear)  # signed out everywhere, as far as it knows
            socket.send_text("again")
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_text()
        assert closed.value.code == 4401


async def test_the_request_session_example_saves_request_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace = example(namespace_for("starlette", monkeypatch), 'request.session["next"]')
    transport = httpx.ASGITransport(app=namespace["app"])
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/remember")
    assert response.status_code == 303
    value = response.headers["set-cookie"].split(";")[0].removeprefix("__Host-id=")
    session = await namespace["web_store"].load(value)
    assert session.data == {"next": "/cart"}


async def test_the_csrf_example_refuses_a_post_without_the_pages_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace = example(namespace_for("starlette", monkeypatch), "csrf=True")
    transport = httpx.ASGITransport(app=namespace["app"])
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        page = await client.get("/")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        refused = await client.post("/add")
        added = await client.post("/add", data={"csrf_token": token.group(1)})
    assert refused.status_code == 403
    assert refused.text == "Forbidden: the CSRF check failed (no CSRF token).\n"
    assert added.status_code == 200
    assert added.text == "1 items"


def test_the_custom_error_response_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = namespace_for("starlette", monkeypatch)
    (block,) = [block for block in python_blocks() if "def error_response" in block]
    exec(block, namespace)
    assert namespace["error_response"] is not None


# -- docs/testing.md ----------------------------------------------------------------------

TESTING_DOC = DOC.parent / "testing.md"


def run_the_testing_doc(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every python block of docs/testing.md, in order, run as one module."""
    module = types.ModuleType("docs_testing")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    examples = blocks(TESTING_DOC.read_text())
    assert len(examples) == 5
    exec("\n".join(examples), module.__dict__)
    return module.__dict__


def doc_tests(namespace: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in namespace.items() if name.startswith("test_")}


def test_the_testing_docs_sync_tests_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    tests = doc_tests(run_the_testing_doc(monkeypatch))
    sync = {name: test for name, test in tests.items() if not inspect.iscoroutinefunction(test)}
    assert sorted(sync) == [
        "test_a_signed_in_user_sees_their_cart",
        "test_litestar_signed_in",
        "test_signing_out_everywhere_signs_out_the_other_device",
        "test_the_cart_keeps_its_items",
    ]
    for test in sync.values():
        test()


async def test_the_testing_docs_async_tests_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    tests = doc_tests(run_the_testing_doc(monkeypatch))
    asynchronous = [name for name, test in tests.items() if inspect.iscoroutinefunction(test)]
    assert sorted(asynchronous) == ["test_two_devices_on_one_loop", "test_with_httpx"]
    for name in asynchronous:
        # Pasted into a project, each runs under plain pytest: it carries anyio's marker.
        marks = getattr(tests[name], "pytestmark", [])
        assert [mark.name for mark in marks] == ["anyio"], name
        await tests[name]()


def test_the_testing_docs_tests_fail_without_the_jar(monkeypatch: pytest.MonkeyPatch) -> None:
    # The problem the page starts with is real: without the jar, the second POST sees an
    # empty session again.
    namespace = run_the_testing_doc(monkeypatch)
    namespace["SessionJar"] = lambda client, store: None
    with pytest.raises(AssertionError):
        namespace["test_the_cart_keeps_its_items"]()
