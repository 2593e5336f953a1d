"""Shared bits of the throwaway MariaDB probes under notes/ (not part of the package or tests).

``show`` runs one statement and prints it with what the server answered: affected rows,
rows, warnings, or the error's class, code and message. The probes' output is what
notes/mariadb-findings.md quotes.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

import asyncmy
from asyncmy.constants import CLIENT

sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]

SHARED = {"host": "127.0.0.1", "port": 3306, "user": "root", "database": "test"}


async def connect(found_rows: bool = False, **options: Any) -> asyncmy.Connection:
    params: dict[str, Any] = {**SHARED, "autocommit": True}
    params.update(options)
    if found_rows:
        params["client_flag"] = CLIENT.FOUND_ROWS
    return await asyncmy.connect(**params)


def scratch(prefix: str = "probe") -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


def short(value: Any) -> Any:
    """Long arguments abbreviated for the log: bytes as hex, long strings by length."""
    if isinstance(value, tuple | list):
        return type(value)(short(v) for v in value)
    if isinstance(value, bytes) and len(value) > 8:
        return f"x'{value[:3].hex()}..{value[-2:].hex()}' ({len(value)} bytes)"
    if isinstance(value, str) and len(value) > 20:
        return f"'{value[:3]}...' ({len(value)} chars)"
    return value


def describe(error: BaseException) -> str:
    code = error.args[0] if error.args else None
    message = error.args[1] if len(error.args) > 1 else ""
    return f"ERROR {type(error).__module__}.{type(error).__name__} ({code}) {message}"


async def show(conn: asyncmy.Connection, sql: str, args: Any = None, label: str = "") -> Any:
    """Run ``sql``; print it and the answer; return the rowcount (or the error)."""
    shown = sql if args is None else f"{sql}  -- args {short(args)!r}"
    prefix = f"[{label}] " if label else ""
    async with conn.cursor() as cursor:
        try:
            count = await cursor.execute(sql, args)
        except Exception as error:
            print(f"{prefix}{shown}\n    -> {describe(error)}")
            return error
        rows = await cursor.fetchall() if cursor.description else None
        warnings = ""
        result = getattr(cursor, "_result", None)  # a probe may peek: asyncmy has no public count
        if result is not None and result.warning_count:
            await cursor.execute("SHOW WARNINGS")
            w = await cursor.fetchall()
            warnings = " warnings=" + "; ".join(f"{r[1]} {r[2]}" for r in w)
        answer = f"rowcount={count}"
        if rows is not None:
            answer += f" rows={[tuple(r) for r in rows]!r}"
        print(f"{prefix}{shown}\n    -> {answer}{warnings}")
        return count
