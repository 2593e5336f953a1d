"""Changing the session type between deploys: which old rows still load, and what the
store does with those that no longer decode. Rows are written by the old type through a
store, then loaded by a store of the new type, on every backend.

The rules (docs/sessions.md, "Changing the session type"), the same for dataclasses,
msgspec Structs, TypedDicts and pydantic models:

- a field added with a default: old rows load, with the default;
- a field added without one (required): old rows do not decode;
- a field removed: old rows load (the stored value is ignored);
- a field renamed: as removing the old and adding the new one (its value is lost);
- a field retyped incompatibly (str to int): old rows do not decode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NotRequired, TypedDict

import msgspec
import pydantic
import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.contract import cookie_of, must_load
from typed_session_sql import (
    DoNothing,
    EventKind,
    SessionConflictError,
    SessionEvent,
    SessionStore,
)

pytestmark = pytest.mark.anyio

# Each field: (name, type, has a default). The old type has items and name.
OLD = [("items", list[int], True), ("name", str, True)]
CHANGES: dict[str, tuple[list[tuple[str, Any, bool]], bool]] = {
    # change: (the new type's fields, whether old rows still decode)
    "add with default": ([*OLD, ("note", str, True)], True),
    "add without default": ([*OLD, ("note", str, False)], False),
    "remove": ([("items", list[int], True)], True),
    "rename": ([("items", list[int], True), ("title", str, True)], True),
    "retype": ([("items", list[int], True), ("name", int, True)], False),
}
DEFAULTS: dict[Any, Any] = {str: "", int: 0}


def with_defaults(fields: list[tuple[str, Any, bool]], default: Callable[[Any], Any]) -> list[Any]:
    """``(name, type)`` or ``(name, type, default(type))`` specs, fields without one first."""
    return [
        (name, kind, default(kind)) if has_default else (name, kind)
        for name, kind, has_default in sorted(fields, key=lambda spec: spec[2])
    ]


def dataclass_type(fields: list[tuple[str, Any, bool]]) -> type[Any]:
    specs = with_defaults(
        fields,
        lambda kind: (
            dataclasses.field(default_factory=list)
            if kind == list[int]
            else dataclasses.field(default=DEFAULTS[kind])
        ),
    )
    return dataclasses.make_dataclass("Data", specs)


def struct_type(fields: list[tuple[str, Any, bool]]) -> type[Any]:
    specs = with_defaults(
        fields,
        lambda kind: msgspec.field(default_factory=list) if kind == list[int] else DEFAULTS[kind],
    )
    return msgspec.defstruct("Data", specs)


def typeddict_type(fields: list[tuple[str, Any, bool]]) -> type[Any]:
    # A TypedDict has no defaults: a key "with a default" is a NotRequired one.
    keys = {name: kind if not optional else NotRequired[kind] for name, kind, optional in fields}
    made: type[Any] = TypedDict("Data", keys)  # type: ignore[misc]
    return made


def pydantic_type(fields: list[tuple[str, Any, bool]]) -> type[Any]:
    specs: dict[str, Any] = {}
    for name, kind, has_default in fields:
        if not has_default:
            specs[name] = (kind, ...)
        elif kind == list[int]:
            specs[name] = (kind, pydantic.Field(default_factory=list))
        else:
            specs[name] = (kind, DEFAULTS[kind])
    model: type[Any] = pydantic.create_model("Data", **specs)
    return model


FAMILIES = {
    "dataclass": dataclass_type,
    "msgspec Struct": struct_type,
    "TypedDict": typeddict_type,
    "pydantic": pydantic_type,
}


def value_of(data: Any, name: str) -> Any:
    """A field of any of the four kinds of data; None if it has no such field."""
    return data.get(name) if isinstance(data, dict) else getattr(data, name, None)


async def old_row(backend: RecordingBackend, clock: FakeClock, family: str) -> str:
    """A signed-in session written by the old type; its cookie value."""
    old_type = FAMILIES[family](OLD)
    store = SessionStore(old_type, backend, clock=clock)
    session = store.new(old_type(items=[1, 2], name="ann"))
    session.sign_in("alice")
    return await cookie_of(store, session)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("change", CHANGES)
async def test_old_rows_after_a_change_of_the_session_type(
    backend: RecordingBackend, clock: FakeClock, family: str, change: str
) -> None:
    value = await old_row(backend, clock, family)
    fields, decodes = CHANGES[change]
    events: list[SessionEvent] = []
    new_store = SessionStore(FAMILIES[family](fields), backend, clock=clock, on_event=events.append)

    session = await new_store.load(value)
    if not decodes:
        assert session is None  # the default: the user starts anew, signed out
        assert [event.kind for event in events] == [EventKind.UNDECODABLE]
        return
    assert session is not None
    data = session.data
    assert value_of(data, "items") == [1, 2]
    assert value_of(data, "name") == ("ann" if change == "add with default" else None)
    if change == "add with default":
        assert value_of(data, "note") == ("" if family != "TypedDict" else None)
    if change == "rename":  # the old value does not follow the new name
        assert value_of(data, "title") == ("" if family != "TypedDict" else None)
    assert session.principal == "alice"
    assert not session.is_changed  # loading an old row costs no write by itself


@pytest.mark.parametrize("family", FAMILIES)
async def test_reset_data_keeps_the_sign_in_and_starts_the_data_afresh(
    backend: RecordingBackend, clock: FakeClock, family: str
) -> None:
    value = await old_row(backend, clock, family)
    old = await must_load(SessionStore(FAMILIES[family](OLD), backend, clock=clock), value)
    new_type = FAMILIES[family](CHANGES["add without default"][0])
    events: list[SessionEvent] = []
    store = SessionStore(
        new_type,
        backend,
        clock=clock,
        on_event=events.append,
        on_undecodable="reset_data",
        default_factory=lambda: new_type(items=[], name="", note="fresh"),
    )

    session = await store.load(value)
    assert session is not None
    assert [event.kind for event in events] == [EventKind.DATA_RESET, EventKind.LOADED]
    assert "DecodeError" in events[0].detail
    assert value_of(session.data, "note") == "fresh"
    assert (session.principal, session.authenticated_at) == (old.principal, old.authenticated_at)
    assert (session.handle, session.created_at) == (old.handle, old.created_at)
    assert session.is_changed  # the reset is written on save, like any change
    backend.kinds.clear()
    assert await store.save(session) == DoNothing()  # same id, same expiry
    assert backend.kinds == ["update"]

    events.clear()
    again = await must_load(store, value)
    assert [event.kind for event in events] == [EventKind.LOADED]
    assert value_of(again.data, "note") == "fresh"
    assert again.principal == "alice"
    assert not again.is_changed


async def test_a_reset_racing_a_change_never_loses_the_change(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    value = await old_row(backend, clock, "dataclass")
    new_type = FAMILIES["dataclass"](CHANGES["retype"][0])
    store = SessionStore(new_type, backend, clock=clock, on_undecodable="reset_data")
    reader, writer, assigner = [await must_load(store, value) for _ in range(3)]
    writer.modify(lambda data: data.items.append(3))
    assigner.data = new_type(items=[9], name=9)

    assert await store.save(writer) == DoNothing()  # the first reset to be written wins
    assert await store.save(reader) == DoNothing()  # replayed onto it: nothing of its own
    with pytest.raises(SessionConflictError):  # an assignment is never replayed
        await store.save(assigner)
    current = await must_load(store, value)
    assert (value_of(current.data, "items"), value_of(current.data, "name")) == ([3], 0)
    assert current.version == 3
    assert current.principal == "alice"
