"""The load the fault scenarios run: what a session holds, what each worker remembers.

Every worker task owns one *key* (``p1.t3``). An increment loads a shared session, adds
one to the task's own counter in it (``Session.modify``, so a lost race replays it) and
saves. Only that task ever changes that counter, one increment at a time, so the task
knows exactly what the database must hold:

- after an acknowledged increment, at least the value it wrote, for ever; a load that
  shows less means an acknowledged write was lost (``violations``);
- in the end, between the acknowledged count and that plus the increments whose outcome
  is unknown (the store answered "unavailable": committed or not, nobody can tell).

Sign-ins make a session of their own, sign in, keep a second copy (another request's
view), and sign out; the copy is saved later and must be refused
(:class:`~typed_session_sql.SessionDeletedError`), and the signed-out cookie must never
load again: no resurrection.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

APP_CONFIG_ENV = "TYPED_SESSION_SQL_PRODUCTION_APP"
"""The app's database URL and table, as JSON (tests/production/app.py)."""

OP_TIMEOUT = 30.0
"""Seconds after which a worker gives up on one operation and counts it as a hang."""

ENGINE_OPTIONS: dict[str, Any] = {
    "pool_size": 4,
    "max_overflow": 2,
    "pool_timeout": 5,
    "connect_args": {"timeout": 5, "command_timeout": 10},
}
"""What each app process's engine gets: a connect timeout and a statement timeout, so
no operation waits for ever on a server that does not answer (docs/production.md)."""


@dataclass
class Counts:
    """A shared session's data: each task's own counter."""

    counts: dict[str, int] = field(default_factory=dict)


def increment(key: str) -> Any:
    """A ``Session.modify`` function that adds one to ``key``'s counter."""

    def apply(data: Counts) -> None:
        data.counts[key] = data.counts.get(key, 0) + 1

    return apply


@dataclass
class Ledger:
    """What one worker process knows about its own writes."""

    acked: Counter[str] = field(default_factory=Counter)
    """Acknowledged increments, by ``"<session index>/<key>"``."""
    unknown: Counter[str] = field(default_factory=Counter)
    """Increments that failed with "unavailable": committed or not."""
    last: dict[str, int] = field(default_factory=dict)
    """The value the last acknowledged increment wrote, by the same name."""
    violations: list[str] = field(default_factory=list)
    """Loads that showed less than an acknowledged write had left."""
    signed_out: list[str] = field(default_factory=list)
    """Cookies whose sign-out (delete) was acknowledged."""
    resurrected: int = 0
    """Signed-out sessions that a stale copy's save, or a load, brought back."""
    refused_stale_saves: int = 0
    pool_check: dict[str, int] = field(default_factory=dict)
    """After the load: a burst as wide as the pool, every operation on its own connection."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "acked": self.acked,
                "unknown": self.unknown,
                "last": self.last,
                "violations": self.violations,
                "signed_out": self.signed_out,
                "resurrected": self.resurrected,
                "refused_stale_saves": self.refused_stale_saves,
                "pool_check": self.pool_check,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Ledger:
        raw = json.loads(text)
        return cls(
            Counter(raw["acked"]),
            Counter(raw["unknown"]),
            dict(raw["last"]),
            list(raw["violations"]),
            list(raw["signed_out"]),
            int(raw["resurrected"]),
            int(raw["refused_stale_saves"]),
            dict(raw["pool_check"]),
        )


def slot(index: int, key: str) -> str:
    return f"{index}/{key}"
