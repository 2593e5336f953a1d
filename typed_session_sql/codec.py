"""Turning the application's typed session data into bytes and back.

msgspec's JSON handles dataclasses, Structs, TypedDicts, attrs classes and builtins, and
validates on the way back in; pydantic models go through pydantic when the application uses
it (pydantic is never imported by this library unless the data type is a pydantic model).
Data-only formats: no pickle, so a tampered row can at worst fail to decode.
"""

from __future__ import annotations

import sys
from typing import Generic, Protocol, TypeVar

import msgspec

T = TypeVar("T")


class DecodeError(ValueError):
    """Stored bytes do not decode into the session's data type."""


class Codec(Protocol[T]):
    """Encodes session data to bytes and decodes it back into a fresh, independent value."""

    def encode(self, data: T) -> bytes: ...

    def decode(self, raw: bytes) -> T:
        """Raise :class:`DecodeError` if ``raw`` is not valid data of the type."""
        ...


class MsgspecCodec(Generic[T]):
    """JSON through msgspec, typed and validated."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self, data_type: type[T]) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(data_type)

    def encode(self, data: T) -> bytes:
        return self._encoder.encode(data)

    def decode(self, raw: bytes) -> T:
        try:
            return self._decoder.decode(raw)
        except msgspec.DecodeError as error:
            raise DecodeError(str(error)) from error


class PydanticCodec(Generic[T]):
    """JSON through pydantic, for pydantic models."""

    __slots__ = ("_adapter", "_validation_error")

    def __init__(self, model: type[T]) -> None:
        import pydantic

        self._adapter = pydantic.TypeAdapter(model)
        self._validation_error = pydantic.ValidationError

    def encode(self, data: T) -> bytes:
        return self._adapter.dump_json(data)

    def decode(self, raw: bytes) -> T:
        try:
            return self._adapter.validate_json(raw)
        except self._validation_error as error:
            raise DecodeError(str(error)) from error


def _is_pydantic_model(data_type: object) -> bool:
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:  # a pydantic model's class cannot exist before pydantic is imported
        return False
    return isinstance(data_type, type) and issubclass(data_type, pydantic.BaseModel)


def codec_for(data_type: type[T]) -> Codec[T]:
    """The default codec for ``data_type``: pydantic for pydantic models, msgspec for the rest."""
    if _is_pydantic_model(data_type):
        return PydanticCodec(data_type)
    try:
        return MsgspecCodec(data_type)
    except TypeError as error:
        raise TypeError(
            f"{data_type!r} is not a type msgspec can encode; pass codec= to SessionStore"
        ) from error
