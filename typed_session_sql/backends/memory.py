"""An in-process backend for development and tests, with an operation log to assert against.

Every method runs to completion without awaiting anything, so each is atomic with respect
to other tasks on the same event loop, exactly like one SQL statement. It uses no
asyncio-only API and runs under trio as well.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from typed_session_sql.backend import PrincipalRow, Record, TableStats, Update, UpdateOutcome

OperationKind = Literal[
    "create", "read", "update", "touch", "delete", "purge", "clear", "list", "delete_by_principal"
]


@dataclass(frozen=True, slots=True)
class Operation:
    """One call the store made on the backend."""

    kind: OperationKind
    id_hash: bytes | None = None

    def __repr__(self) -> str:  # the hash is not a secret, but it is noise in test output
        return f"Operation({self.kind!r})"


class MemoryBackend:
    """Sessions in a dict, lost when the process ends. Not for production."""

    def __init__(self) -> None:
        self.rows: dict[bytes, Record] = {}
        self.operations: list[Operation] = []

    @property
    def kinds(self) -> list[OperationKind]:
        """The kinds of the recorded operations, in order (handy in assertions)."""
        return [operation.kind for operation in self.operations]

    async def create(self, id_hash: bytes, record: Record) -> bool:
        self.operations.append(Operation("create", id_hash))
        if id_hash in self.rows:
            return False
        self.rows[id_hash] = record
        return True

    async def read(self, id_hash: bytes) -> Record | None:
        self.operations.append(Operation("read", id_hash))
        return self.rows.get(id_hash)

    async def update(self, change: Update) -> UpdateOutcome:
        id_hash = change.id_hash
        self.operations.append(Operation("update", id_hash))
        current = self.rows.get(id_hash)
        if current is None or current.version != change.expected_version:
            return UpdateOutcome.STALE
        target = id_hash if change.new_id_hash is None else change.new_id_hash
        if target != id_hash and target in self.rows:
            return UpdateOutcome.ID_TAKEN
        del self.rows[id_hash]
        updated = replace(
            current,
            data=change.data,
            expires_at=change.expires_at,
            expiry_pinned=change.expiry_pinned,
            version=change.expected_version + 1,
        )
        if change.sign_in is not None:
            sign_in = change.sign_in
            updated = replace(updated, principal=sign_in.principal, authenticated_at=sign_in.at)
        self.rows[target] = updated
        return UpdateOutcome.UPDATED

    async def touch(
        self, id_hash: bytes, version: int, expires_at: datetime, now: datetime
    ) -> bool:
        self.operations.append(Operation("touch", id_hash))
        current = self.rows.get(id_hash)
        if (
            current is None
            or current.version != version
            or current.expires_at is None
            or current.expiry_pinned
            or current.expires_at <= now
            or current.expires_at >= expires_at
        ):
            return False
        self.rows[id_hash] = replace(current, expires_at=expires_at)
        return True

    async def delete(self, id_hash: bytes) -> bool:
        self.operations.append(Operation("delete", id_hash))
        return self.rows.pop(id_hash, None) is not None

    async def list_by_principal(
        self, principal: str, *, live_at: datetime, created_after: datetime | None, limit: int
    ) -> list[PrincipalRow]:
        self.operations.append(Operation("list"))
        listed = [
            PrincipalRow(key, record.created_at, record.expires_at, record.authenticated_at)
            for key, record in self.rows.items()
            if record.principal == principal
            and (record.expires_at is None or record.expires_at > live_at)
            and (created_after is None or record.created_at > created_after)
        ]
        listed.sort(key=lambda row: (row.created_at, row.id_hash), reverse=True)
        return listed[:limit]

    async def delete_by_principal(
        self, principal: str, *, only: bytes | None = None, keep: bytes | None = None
    ) -> int:
        self.operations.append(Operation("delete_by_principal", only))
        if only is not None and keep is not None:
            raise ValueError("give only or keep, not both")
        doomed = [
            key
            for key, record in self.rows.items()
            if record.principal == principal
            and (only is None or key == only)
            and (keep is None or key != keep)
        ]
        for key in doomed:
            del self.rows[key]
        return len(doomed)

    async def purge(self, now: datetime, batch_size: int) -> int:
        self.operations.append(Operation("purge"))
        expired = [
            key
            for key, record in self.rows.items()
            if record.expires_at is not None and record.expires_at <= now
        ][:batch_size]
        for key in expired:
            del self.rows[key]
        return len(expired)

    async def clear(self) -> None:
        self.operations.append(Operation("clear"))
        self.rows.clear()

    # -- the purge lock, and the optional statistics (typed_session_sql.backend.ReportsStats)

    def purge_lock(self) -> AbstractAsyncContextManager[bool]:
        """Always free: one process, and each purge batch runs without awaiting."""
        return nullcontext(True)

    async def stats(self, now: datetime) -> TableStats:
        """What the dict holds at ``now``; no size on disk."""
        expiries = [r.expires_at for r in self.rows.values() if r.expires_at is not None]
        expired = sum(1 for expiry in expiries if expiry <= now)
        return TableStats(
            live=len(self.rows) - expired,
            never_expire=len(self.rows) - len(expiries),
            expired=expired,
            oldest_expiry=min(expiries, default=None),
            size_bytes=None,
            size_of="not measured (in memory)",
        )
