"""The package's top level keeps to an application's daily vocabulary (issue 18.5, A8): the
names a backend or codec author needs live in their modules, and the old spellings still
import from the top level with a warning that says where to import them from instead."""

from __future__ import annotations

import importlib

import pytest

import typed_session_sql
from typed_session_sql import Session

TOP_LEVEL = {
    # the store, its sessions, how long they live
    "SessionStore", "Session", "SessionState", "SessionInfo", "ExpiryPolicy",
    # the backends an application constructs
    "SqlBackend", "MemoryBackend",
    # what a save returns
    "CookieCommand", "SetCookie", "DeleteCookie", "DoNothing",
    # a custom codec is passed as codec=; EncodeError is what a save raises for bad data
    "Codec", "EncodeError",
    # the errors it catches
    "SessionError", "SessionConflictError", "SessionDeletedError", "StoreUnavailableError",
    "SessionTableMissingError", "SessionTooLargeError", "DataRejectedError",
    "IdCollisionError", "EventLoopError",
    # the events it receives
    "SessionEvent", "EventKind", "EventHook",
    # cleaning up in the application's lifespan
    "PurgeScheduler", "PurgeResult",
}  # fmt: skip

# Every name an issue spelt out as imported from the top level: a contract.
CONTRACT = {
    "Session", "SessionStore", "ExpiryPolicy", "SetCookie", "DeleteCookie", "DoNothing",
    "MemoryBackend", "SqlBackend", "SessionError", "SessionConflictError", "IdCollisionError",
    "SessionTooLargeError", "StoreUnavailableError",
}  # fmt: skip

HOMES = {
    "typed_session_sql.backend": [
        "Backend", "Record", "Update", "UpdateOutcome", "SignIn", "PrincipalRow",
        "UnreadableRecordError", "MAX_PRINCIPAL_LENGTH",
    ],
    "typed_session_sql.codec": ["MsgspecCodec", "PydanticCodec", "DecodeError"],
    "typed_session_sql.events": ["RevokeScope"],
    "typed_session_sql.purge": ["PurgeProgress", "BatchHook"],
    "typed_session_sql.store": ["OnUndecodable"],
}  # fmt: skip
MOVED = {name: home for home, names in HOMES.items() for name in names}


def test_the_top_level_holds_what_an_application_writes() -> None:
    assert set(typed_session_sql.__all__) == TOP_LEVEL
    assert len(typed_session_sql.__all__) == len(TOP_LEVEL), "no name twice"
    assert TOP_LEVEL >= CONTRACT


@pytest.mark.parametrize(("name", "home"), sorted(MOVED.items()))
def test_a_moved_name_imports_from_the_top_level_with_a_warning(name: str, home: str) -> None:
    module = importlib.import_module(home)
    assert name in module.__all__
    with pytest.warns(DeprecationWarning, match=rf"import it from {home}$") as caught:
        found = getattr(typed_session_sql, name)
    assert found is getattr(module, name)
    assert len(caught) == 1
    assert caught[0].filename == __file__, "the warning points at the importing line"
    assert name not in typed_session_sql.__all__


def test_from_import_of_a_moved_name_warns_too() -> None:
    with pytest.warns(DeprecationWarning, match=r"typed_session_sql\.backend$"):
        from typed_session_sql import Record

    assert Record.__module__ == "typed_session_sql.backend"


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nonesuch'"):
        typed_session_sql.Nonesuch  # noqa: B018 - the lookup is the test


def test_session_shows_no_store_side_member() -> None:
    # A handler that called one of these corrupted the next save; only the store may.
    public = {name for name in dir(Session) if not name.startswith("_")}
    assert not public & {"pending_write", "rebase", "stored_as", "removed"}
    assert {"_pending_write", "_rebase", "_mark_stored", "_mark_removed"} <= set(dir(Session))


def test_cookie_commands_keep_their_old_module_with_a_warning() -> None:
    # "commands" read as the CLI's (A11): the module is cookie_commands now.
    from typed_session_sql import commands, cookie_commands

    with pytest.warns(DeprecationWarning, match="import SetCookie from there"):
        assert commands.SetCookie is cookie_commands.SetCookie
    assert typed_session_sql.SetCookie is cookie_commands.SetCookie
    assert not hasattr(commands, "__all__"), "the old module has no page of its own"
