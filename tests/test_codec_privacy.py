"""Stored data that no longer decodes is reported by the kind and path of the error, never
by its value: the ``undecodable`` and ``data_reset`` events and their log lines quote no
enum value, unknown field name, dict key or validator message, with msgspec or pydantic."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import pydantic
import pytest

from tests.clock import FakeClock
from typed_session_sql import (
    EventKind,
    MemoryBackend,
    SessionEvent,
    SessionStore,
    SetCookie,
)
from typed_session_sql.backend import Record

pytestmark = pytest.mark.anyio

SECRET = "hunter2-SECRET"


class Role(enum.Enum):
    USER = "user"


@dataclass
class Account:
    role: Role = Role.USER
    plan: Literal["free", "paid"] = "free"
    limits: dict[str, int] = field(default_factory=dict)
    age: int = 0

    def __post_init__(self) -> None:
        if self.age < 0:
            raise ValueError(f"age {self.age} is negative")


class StrictAccount(msgspec.Struct, forbid_unknown_fields=True):
    role: Role = Role.USER


class PydanticInner(pydantic.BaseModel):
    limits: dict[str, int] = {}


class PydanticAccount(pydantic.BaseModel, extra="forbid"):
    role: Role = Role.USER
    inner: PydanticInner = PydanticInner()
    age: int = 0

    @pydantic.field_validator("age")
    @classmethod
    def non_negative(cls, age: int) -> int:
        if age < 0:
            raise ValueError(f"age {age} is negative")
        return age


# (data type, stored JSON quoting SECRET, what the detail must say)
CASES: list[tuple[Any, bytes, str]] = [
    (Account, b'{"role": "%s"}', "Invalid enum value - at `$.role`"),
    (Account, b'{"plan": "%s"}', "Invalid enum value - at `$.plan`"),
    (Account, b'{"age": -1, "x": "%s"}', "Invalid value (rejected by the type's own validation)"),
    (StrictAccount, b'{"%s": 1}', "Object contains unknown field"),
    (PydanticAccount, b'{"role": "%s"}', "enum at $.role"),
    (PydanticAccount, b'{"%s": 1}', "extra_forbidden at $[...]"),
    (PydanticAccount, b'{"inner": {"limits": {"%s": "x"}}}', "int_parsing at $.inner.limits[...]"),
    (PydanticAccount, b'{"age": -1, "role": "user"}', "value_error at $.age"),
]


@pytest.mark.parametrize("on_undecodable", ["drop", "reset_data"])
@pytest.mark.parametrize(("data_type", "stored", "expected"), CASES)
async def test_events_and_logs_name_the_error_not_the_data(
    data_type: Any,
    stored: bytes,
    expected: str,
    on_undecodable: Literal["drop", "reset_data"],
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[SessionEvent] = []
    clock = FakeClock()
    backend = MemoryBackend()
    store = SessionStore(
        data_type, backend, clock=clock, on_event=events.append, on_undecodable=on_undecodable
    )
    result = await store.save(store.new(data_type()))
    assert isinstance(result, SetCookie)
    (key,) = backend.rows
    row = backend.rows[key]
    # The secret, and the validator's "-1" (a value too), as an old deploy may have stored.
    backend.rows[key] = Record(stored.replace(b"%s", SECRET.encode()), 1, row.created_at, None)

    with caplog.at_level(logging.DEBUG, logger="typed_session_sql"):
        await store.load(result.value)

    kind = EventKind.UNDECODABLE if on_undecodable == "drop" else EventKind.DATA_RESET
    (event,) = [e for e in events if e.kind is kind]
    assert expected in event.detail
    for said in [event.detail, caplog.text]:
        assert SECRET not in said
        assert "-1" not in said
