"""A SQLite connection whose setup fails is closed, not stranded: SQLAlchemy before 2.1
leaves a connection whose connect event raised to the garbage collector, and an
aiosqlite connection's worker thread then keeps the process from exiting."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from typed_session_sql.backends.sql.dialects import sqlite as sqlite_support


class RefusingCursor:
    def execute(self, sql: str) -> None:
        if "journal_mode" in sql:
            raise sqlite3.OperationalError("database is locked")

    def close(self) -> None:
        pass


class Connection:
    closed = False

    def cursor(self) -> RefusingCursor:
        return RefusingCursor()

    def close(self) -> None:
        self.closed = True


def test_a_connection_whose_pragmas_fail_is_closed() -> None:
    connection = Connection()
    connect: Any = sqlite_support._pragmas
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        connect(connection, None)
    assert connection.closed


def test_a_connection_whose_pragmas_run_stays_open(tmp_path: Any) -> None:
    connection = sqlite3.connect(tmp_path / "s.db")
    try:
        sqlite_support._pragmas(connection, None)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()
