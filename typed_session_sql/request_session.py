"""``request.session`` for libraries written against Starlette's own sessions (Authlib,
sqladmin, starlette-admin): the session's data, a dict, as ``scope["session"]``, and at the
response what the app did through it, told in the typed API's terms (a sign-in, a sign-out,
a change). Used by `SessionMiddleware` with
``request_session=True``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, get_origin

from typed_session_sql.session import Session

if TYPE_CHECKING:
    from typed_session_sql.store import SessionStore

Scope = MutableMapping[str, Any]


def is_dict_type(data_type: object) -> bool:
    """Whether a store of ``data_type`` keeps dicts, as ``request.session`` must be."""
    origin = get_origin(data_type) or data_type
    return isinstance(origin, type) and issubclass(origin, dict)


class RequestSession(dict[str, Any]):
    """``request.session``: the session's data, in a dict that notes ``clear()``, a sign-out
    even when the session held no data, only a sign-in."""

    cleared = False

    def clear(self) -> None:
        self.cleared = True
        super().clear()


class Bridge:
    """``request.session`` as the app got it, to tell at the response what the app did."""

    __slots__ = ("before", "exposed", "scope", "signed_in")

    def __init__(self, session: Session[Any], scope: Scope, store: SessionStore[Any]) -> None:
        # The same content in a dict that notes clear(); through modify, so it is no change.
        session.modify(RequestSession)
        self.exposed: RequestSession = session.data
        # A deep copy (nested values change in place too); none for a new session.
        self.before = (
            None if session.is_new else store.codec.decode(store.codec.encode(self.exposed))
        )
        self.signed_in = (session.principal, session.authenticated_at)
        self.scope = scope
        scope["session"] = self.exposed

    def follow_scope(self, session: Session[Any]) -> None:
        """A dict the app put in the scope instead (Litestar's ``set_session``) is the data
        now; none (Litestar's ``clear_session``) is a sign-out. Otherwise the data is what
        ``request.session`` and the typed API made of it."""
        current = self.scope.get("session")
        if current is self.exposed or session.is_deleted:
            return
        if isinstance(current, dict):
            session.data = current
        else:
            session.delete()

    def ends(self, session: Session[Any]) -> bool:
        """Whether the app ended the stored session through ``request.session``: cleared it,
        or emptied it as Starlette's own sessions take it; a sign-in in the same request
        wins."""
        if session.is_new or session.is_deleted or self._signing_in(session):
            return False
        emptied = bool(self.before) and session.data is self.exposed and not self.exposed
        return self.exposed.cleared or emptied

    def changed(self, session: Session[Any]) -> bool:
        """Whether a stored session's data differs from what the request loaded."""
        if self.before is None or session.is_deleted or self._signing_in(session):
            return False  # a new session gets a fresh id anyway; a sign-in rotates already
        return bool(session.data != self.before)

    def _signing_in(self, session: Session[Any]) -> bool:
        return (session.principal, session.authenticated_at) != self.signed_in
