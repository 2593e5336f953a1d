"""Which database, table and schema: one resolver (`settings.resolve`) for every caller, so
that `SqlBackend.from_url`, the CLI and Alembic read the environment the same way."""

from __future__ import annotations

import pytest

from typed_session_sql.backends.sql.settings import (
    SCHEMA_ENV,
    TABLE_ENV,
    URL_ENV,
    DatabaseSettings,
    resolve,
)
from typed_session_sql.backends.sql.table import DEFAULT_TABLE


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (URL_ENV, TABLE_ENV, SCHEMA_ENV):
        monkeypatch.delenv(name, raising=False)


def test_given_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve() == DatabaseSettings(None, DEFAULT_TABLE, None, None)
    assert resolve(default_url="sqlite://", default_url_as="demo").url_from == "demo"
    monkeypatch.setenv(URL_ENV, "postgresql://env/db")
    monkeypatch.setenv(TABLE_ENV, "env_table")
    monkeypatch.setenv(SCHEMA_ENV, "env_schema")
    assert resolve(default_url="sqlite://") == DatabaseSettings(
        "postgresql://env/db", "env_table", "env_schema", f"${URL_ENV}"
    )
    given = resolve("mysql://given/db", "t", "s", given_as="--url")
    assert given == DatabaseSettings("mysql://given/db", "t", "s", "--url")


def test_a_blank_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # What `export TYPED_SESSION_SQL_URL="$DATABASE_URL"` leaves when DATABASE_URL is unset.
    for name in (URL_ENV, TABLE_ENV, SCHEMA_ENV):
        monkeypatch.setenv(name, "  ")
    assert resolve() == DatabaseSettings(None, DEFAULT_TABLE, None, None)
    assert resolve(default_url="sqlite://").url == "sqlite://"


def test_from_url_reads_the_url_from_the_same_place(monkeypatch: pytest.MonkeyPatch) -> None:
    from typed_session_sql.backends.sql import SqlBackend

    monkeypatch.setenv(URL_ENV, "sqlite+aiosqlite://")
    backend = SqlBackend.from_url()
    assert backend.engine.url.render_as_string() == "sqlite+aiosqlite://"
