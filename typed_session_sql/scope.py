"""Where a connection's session lives in its ASGI scope, and how a handler gets it:
``await store.session(request)`` or ``await get_session(request)``.

This is the contract between the store and whatever puts sessions in a scope (today
`SessionMiddleware`): the adapter keeps a `Slot` under
`SCOPE_KEY`, and a handler's accessor finds it there. It lives beside the store, not
in the web layer, so that ``store.session`` needs nothing from above: the core defines the
slot, an adapter fills it. No web framework is imported, except Starlette's connection
class when FastAPI asks for an accessor's signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from typed_session_sql.codec import Codec
from typed_session_sql.session import Session

__all__ = ["SCOPE_KEY", "SessionAccessor", "Slot", "get_session"]

T = TypeVar("T")

SCOPE_KEY = "typed_session_sql.session"
"""Where the middleware keeps the connection's session slot in the ASGI scope."""


@runtime_checkable
class Slot(Protocol):
    """One connection's session, as an adapter keeps it under `SCOPE_KEY`: loaded
    by ``get()`` on first use. ``outer`` is the slot of an enclosing adapter, if any, so
    that two stores can wrap one app."""

    @property
    def store(self) -> object: ...

    @property
    def outer(self) -> Slot | None: ...

    async def get(self) -> Session[Any]: ...


class _StoreOf(Protocol[T]):
    """What the accessor needs of a store: its data type, read off its codec. A protocol,
    not ``SessionStore``, because store.py imports this module."""

    @property
    def codec(self) -> Codec[T]: ...


class _HasScope(Protocol):
    @property
    def scope(self) -> Mapping[str, Any]: ...


# Classes already found to be slots. ``isinstance`` against a runtime-checkable protocol
# inspects the class's members each time (some 10 µs, a tenth of a session read); a class's
# members do not change, so each is checked once per process.
_SLOT_CLASSES: set[type] = set()


def _slot_of(connection: _HasScope, store: object | None) -> Slot:
    """The connection's slot: the innermost middleware's, or the one of ``store``."""
    slot: Any = connection.scope.get(SCOPE_KEY)  # a Slot: checked next
    if type(slot) not in _SLOT_CLASSES:
        if not isinstance(slot, Slot):
            raise RuntimeError(
                "no session for this request: wrap the app in SessionMiddleware "
                "(sessions are for HTTP requests and WebSocket connections)"
            )
        _SLOT_CLASSES.add(type(slot))
    checked: Slot = slot
    if store is None:
        return checked
    found: Slot | None = checked
    while found is not None and found.store is not store:
        found = found.outer
    if found is None:
        raise RuntimeError(f"no SessionMiddleware with {store!r} wraps this request")
    return found


def _connection_signature() -> inspect.Signature | None:
    """``(request: HTTPConnection) -> Session``: FastAPI injects the request (or WebSocket)
    into a dependency by the parameter's annotation, so it must see Starlette's class. It is
    imported only when someone asks, never when this module is imported."""
    try:
        from starlette.requests import HTTPConnection
    except ImportError:
        return None
    parameter = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
    )
    return inspect.Signature([parameter], return_annotation=Session)


class SessionAccessor(Generic[T]):
    """``await store.session(request)``: the request's ``Session[T]``, loaded on first use.

    Made by `SessionStore.session`; typed by the store, so a wrong annotation is a
    type error. ``request`` is anything with an ASGI ``.scope`` (a Starlette or FastAPI
    ``Request`` or ``WebSocket``, a Litestar ``Request``). In FastAPI it is a dependency:
    ``Annotated[Session[Cart], Depends(store.session)]``.
    """

    __slots__ = ("store",)

    def __init__(self, store: _StoreOf[T]) -> None:
        self.store = store

    async def __call__(self, request: _HasScope) -> Session[T]:
        session: Session[T] = await _slot_of(request, self.store).get()
        return session

    @property
    def __signature__(self) -> inspect.Signature:
        return _connection_signature() or inspect.signature(self.__call__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionAccessor) and other.store is self.store

    def __hash__(self) -> int:
        return hash((SessionAccessor, id(self.store)))

    def __repr__(self) -> str:
        return f"{self.store!r}.session"


class _GetSession:
    """``await get_session(request)``: the request's session, loaded on first use, from the
    innermost `SessionMiddleware`.

    Typed ``Session[Any]``: prefer ``store.session``, which knows the data type. This one
    is for code that has no store at hand. In FastAPI it is a dependency too.
    """

    async def __call__(self, request: _HasScope) -> Session[Any]:
        return await _slot_of(request, None).get()

    @property
    def __signature__(self) -> inspect.Signature:
        return _connection_signature() or inspect.signature(self.__call__)

    def __repr__(self) -> str:
        return "get_session"


get_session = _GetSession()
