"""The locks' names are frozen: instances of an older version and a newer one must work out
the same key for the same table, or both would purge (or migrate) at once during a rolling
deploy. The expected values are the ones the purge and migration locks have always used."""

from __future__ import annotations

from blake3 import blake3

from typed_session_sql.backends.sql.locks import (
    advisory_key,
    lock_key,
    lock_name,
    server_lock_name,
)


def test_purge_lock_key_and_name_are_unchanged() -> None:
    digest = blake3(b"typed_session_sql purge public.typed_sessions").digest(8)
    assert lock_key("public.typed_sessions") == int.from_bytes(digest, "big", signed=True)
    hexdigest = blake3(b"typed_session_sql purge test.typed_sessions").hexdigest(8)
    assert lock_name("test", "typed_sessions") == f"typed_session_sql_purge_{hexdigest}"


def test_migration_lock_key_and_name_are_unchanged() -> None:
    digest = blake3(b"typed_session_sql migrate None.typed_sessions").digest(8)
    key = int.from_bytes(digest, "big", signed=True)
    assert advisory_key("migrate", "None.typed_sessions") == key
    hexdigest = blake3(b"typed_session_sql migrate test.typed_sessions").hexdigest(8)
    name = f"typed_session_sql_migrate_{hexdigest}"
    assert server_lock_name("migrate", "test.typed_sessions") == name


def test_names_fit_mysql_and_purposes_differ() -> None:
    purge, migrate = (server_lock_name(p, "d" * 64 + ".t" * 64) for p in ("purge", "migrate"))
    assert len(purge) <= 64
    assert len(migrate) <= 64
    assert purge != migrate
    assert advisory_key("purge", "t") != advisory_key("migrate", "t")
