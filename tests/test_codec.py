"""Every kind of typed data the issue names round-trips, and drift is reported, not raised."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict, TypeVar

import msgspec
import pydantic
import pytest

from tests.clock import FakeClock
from typed_session_sql import MemoryBackend, SessionStore, SetCookie
from typed_session_sql.codec import DecodeError, MsgspecCodec, PydanticCodec, codec_for

pytestmark = pytest.mark.anyio

T = TypeVar("T")


@dataclass
class DataclassCart:
    items: list[int] = field(default_factory=list)


class StructCart(msgspec.Struct):
    items: list[int] = msgspec.field(default_factory=list)


class DictCart(TypedDict, total=False):
    items: list[int]


class PydanticCart(pydantic.BaseModel):
    items: list[int] = []


async def roundtrip_nested_append(data_type: type[T], fresh: T) -> T:
    store = SessionStore(data_type, MemoryBackend(), clock=FakeClock())
    session = store.new(fresh)
    result = await store.save(session)
    assert isinstance(result, SetCookie)
    loaded = await store.load(result.value)
    assert loaded is not None
    items = loaded.data["items"] if isinstance(loaded.data, dict) else loaded.data.items  # type: ignore[attr-defined]
    items.append(2)  # in-place, nested: must be seen
    assert loaded.is_changed
    await store.save(loaded)
    again = await store.load(result.value)
    assert again is not None
    return again.data


async def test_dataclass() -> None:
    assert await roundtrip_nested_append(DataclassCart, DataclassCart([1])) == DataclassCart([1, 2])


async def test_msgspec_struct() -> None:
    assert await roundtrip_nested_append(StructCart, StructCart([1])) == StructCart([1, 2])


async def test_typeddict() -> None:
    assert await roundtrip_nested_append(DictCart, DictCart(items=[1])) == {"items": [1, 2]}


async def test_pydantic_model() -> None:
    assert isinstance(codec_for(PydanticCart), PydanticCodec)
    assert await roundtrip_nested_append(PydanticCart, PydanticCart(items=[1])) == PydanticCart(
        items=[1, 2]
    )


def test_invalid_bytes_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        MsgspecCodec(DataclassCart).decode(b'{"items": "not a list"}')
    with pytest.raises(DecodeError):
        PydanticCodec(PydanticCart).decode(b'{"items": "not a list"}')
    with pytest.raises(DecodeError):
        MsgspecCodec(DataclassCart).decode(b"\x80\x04pickle")
