"""The core guide's examples run as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.contract import must_load, stored
from tests.markdown import blocks
from tests.models import Cart
from typed_session_sql import DoNothing, MemoryBackend, SessionStore

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "sessions.md"


def python_block(containing: str) -> str:
    (block,) = [block for block in blocks(DOC.read_text()) if containing in block]
    return block


async def test_the_rate_limiting_example_counts_replays_per_session(clock: FakeClock) -> None:
    example: dict[str, Any] = {}
    exec(compile(python_block("def count_replays"), str(DOC), "exec"), example)
    store = SessionStore(
        Cart, RecordingBackend(MemoryBackend()), clock=clock, on_event=example["count_replays"]
    )
    value = await stored(store)
    racing = [await must_load(store, value) for _ in range(4)]
    for session in racing:
        assert example["may_write"](session)
        session.modify(lambda cart: cart.items.append(2))
        assert await store.save(session) == DoNothing()
    handle = racing[0].handle
    assert handle is not None
    assert example["replays"] == {handle: 3}  # three saves lost one race each

    example["replays"][handle] = 100  # a session that hammered its cart all minute
    assert not example["may_write"](await must_load(store, value))
