"""Turning the application's typed session data into bytes and back.

msgspec's JSON handles dataclasses, Structs, TypedDicts, attrs classes and builtins, and
validates on the way back in; pydantic models go through pydantic when the application uses
it (pydantic is never imported by this library unless the data type is a pydantic model).
Data-only formats: no pickle, so a tampered row can at worst fail to decode.

Two promises every built-in codec keeps, because the store compares encodings to decide
whether to write:

- What is stored loads back. A float JSON cannot hold (nan, inf) would be written as
  ``null`` and never decode again, so it is refused with `EncodeError`, as is a value
  of a type the codec cannot encode; nothing is written then.
- The encoding is deterministic where msgspec can make it so (sets and dicts with string
  keys are sorted), so an untouched session encodes to the bytes it was loaded from. Where
  it cannot (dicts with other keys, sets of unorderable values, pydantic), the session
  compares values instead: an untouched session is never written either way.
"""

from __future__ import annotations

import math
import sys
import typing
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from typed_session_sql.errors import SessionError

T = TypeVar("T")

__all__ = ["Codec", "DecodeError", "EncodeError", "MsgspecCodec", "PydanticCodec", "codec_for"]


class DecodeError(SessionError, ValueError):
    """Stored bytes do not decode into the session's data type. A custom codec raises it."""


class EncodeError(SessionError, ValueError):
    """Session data that cannot be stored: a type the codec cannot encode, or a float JSON
    cannot hold (nan, inf). Raised when the store is made (for the type) or on save, before
    anything is written. The message names the type or the problem, never the data."""


class Codec(Protocol[T]):
    """Encodes session data to bytes and decodes it back into a fresh, independent value."""

    def encode(self, data: T) -> bytes:
        """Raise `EncodeError` for data that would not decode back."""
        ...

    def decode(self, raw: bytes) -> T:
        """Raise `DecodeError` if ``raw`` is not valid data of the type."""
        ...


class MsgspecCodec(Generic[T]):
    """JSON through msgspec, typed and validated."""

    __slots__ = ("_decoder", "_encoder", "_fallback", "_name")

    def __init__(self, data_type: type[T]) -> None:
        self._name = _name_of(data_type)
        _check_msgspec_type(data_type, self._name)
        self._encoder = msgspec.json.Encoder(order="deterministic")
        self._fallback = msgspec.json.Encoder()
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(data_type)

    def encode(self, data: T) -> bytes:
        try:
            try:
                encoded = self._encoder.encode(data)
            except TypeError:  # keys other than str, elements without an order: as they come
                encoded = self._fallback.encode(data)
        except (TypeError, ValueError, OverflowError) as error:
            raise EncodeError(f"{self._name} data does not encode: {error}") from None
        return _finite(encoded, data, msgspec.to_builtins, self._name)

    def decode(self, raw: bytes) -> T:
        try:
            return self._decoder.decode(raw)
        except msgspec.DecodeError as error:
            raise DecodeError(_without_data(str(error))) from None


# msgspec messages that name only types, schema fields and positions, never stored data.
_SAFE_MSGSPEC = ("Expected ", "Object missing required field ", "JSON is malformed", "Number ")
# msgspec messages that quote the stored value or key: kept up to the quote.
_QUOTING_MSGSPEC = ("Invalid enum value", "Object contains unknown field")


def _without_data(message: str) -> str:
    """msgspec's message with nothing of the stored data: the kind of error and its path.

    The path (``$.cart.items[2]``) names schema fields and list positions; a dict key is
    written ``[...]``. Messages of unknown shape (a ``__post_init__``'s own text) may quote
    anything, so only their path is kept."""
    problem, at, path = message.partition(" - at `")
    suffix = f" - at `{path}" if at else ""
    if problem.startswith(_SAFE_MSGSPEC):
        return problem + suffix
    for kind in _QUOTING_MSGSPEC:
        if problem.startswith(kind):
            return kind + suffix
    return "Invalid value (rejected by the type's own validation)" + suffix


class PydanticCodec(Generic[T]):
    """JSON through pydantic, for pydantic models."""

    __slots__ = (
        "_adapter",
        "_fields",
        "_model",
        "_name",
        "_serialization_error",
        "_validation_error",
    )

    def __init__(self, model: type[T]) -> None:
        import pydantic
        import pydantic_core

        self._model = model
        self._fields: frozenset[str] | None = None  # worked out on the first decode error
        self._adapter = pydantic.TypeAdapter(model)
        self._name = _name_of(model)
        self._validation_error = pydantic.ValidationError
        self._serialization_error = pydantic_core.PydanticSerializationError

    def encode(self, data: T) -> bytes:
        try:
            encoded = self._adapter.dump_json(data)
        except self._serialization_error as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise EncodeError(f"{self._name} data does not encode: {first}") from None
        return _finite(encoded, data, self._adapter.dump_python, self._name)

    def decode(self, raw: bytes) -> T:
        try:
            return self._adapter.validate_json(raw)
        except self._validation_error as error:
            # The error's type and where, never pydantic's text: its messages can quote the
            # input (a validator's own words), its locations hold dict keys and unknown fields.
            problems = "; ".join(
                f"{problem['type']} at {self._path(problem['loc'])}"
                for problem in error.errors(include_url=False, include_input=False)[:3]
            )
            raise DecodeError(f"{error.error_count()} validation error(s): {problems}") from None

    def _path(self, loc: tuple[int | str, ...]) -> str:
        """``loc`` with every string that is no field name of the model (a dict key, an
        unknown field's name) written ``[...]``."""
        if self._fields is None:
            self._fields = _field_names(self._model)
        parts = ["$"]
        for part in loc:
            if isinstance(part, int):
                parts.append(f"[{part}]")
            else:
                parts.append(f".{part}" if part in self._fields else "[...]")
        return "".join(parts)


def _field_names(model: object) -> frozenset[str]:
    """The field names and aliases of a pydantic model and of the models inside it."""
    import pydantic

    names: set[str] = set()
    seen: set[int] = set()
    pending = [model]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, type) and issubclass(node, pydantic.BaseModel):
            for name, info in node.model_fields.items():
                names.update(
                    n for n in (name, info.alias, info.validation_alias) if isinstance(n, str)
                )
                pending.append(info.annotation)
        pending.extend(typing.get_args(node))
    return frozenset(names)


def _finite(encoded: bytes, data: Any, as_builtins: Callable[[Any], Any], name: str) -> bytes:
    """``encoded``, unless ``data`` holds a non-finite float (which JSON writes as null).

    Most data has no null at all, so this costs one scan of the bytes; only data with a
    null is turned into builtins (no closure made for the rest) and walked."""
    if b"null" in encoded and _has_non_finite(as_builtins(data)):
        raise EncodeError(
            f"{name} data holds a non-finite float (nan or infinity), which JSON cannot store"
        )
    return encoded


def _has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(key) or _has_non_finite(item) for key, item in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_has_non_finite(item) for item in value)
    return False


def _check_msgspec_type(data_type: object, name: str) -> None:
    """Refuse, when the store is made, a type msgspec could decode but never encode (a plain
    class anywhere in it), instead of failing on the first save."""
    try:
        info = msgspec.inspect.type_info(data_type)
    except TypeError as error:
        raise EncodeError(f"{name} is not a type msgspec can encode: {error}") from None
    seen: set[int] = set()
    pending: list[object] = [info]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, msgspec.inspect.CustomType):
            what = name if node is info else f"{name} holds a {_name_of(node.cls)}, which"
            raise EncodeError(
                f"{what} is not a type msgspec can encode; use a dataclass, msgspec Struct,"
                " TypedDict, pydantic model or builtin type, or pass codec="
            )
        if isinstance(node, msgspec.inspect.Type | msgspec.inspect.Field):
            pending.extend(getattr(node, attr) for attr in node.__struct_fields__)
        elif isinstance(node, tuple):
            pending.extend(node)


def _name_of(data_type: object) -> str:
    return data_type.__qualname__ if isinstance(data_type, type) else repr(data_type)


def _is_pydantic_model(data_type: object) -> bool:
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:  # a pydantic model's class cannot exist before pydantic is imported
        return False
    return isinstance(data_type, type) and issubclass(data_type, pydantic.BaseModel)


def codec_for(data_type: type[T]) -> Codec[T]:
    """The default codec for ``data_type``: pydantic for pydantic models, msgspec for the rest.

    Raises `EncodeError` for a type msgspec cannot encode.
    """
    if _is_pydantic_model(data_type):
        return PydanticCodec(data_type)
    return MsgspecCodec(data_type)
