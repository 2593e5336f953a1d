"""The session data type the tests store: one copy, shared by every test module."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cart:
    items: list[int] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    count: int = 0
