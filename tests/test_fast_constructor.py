"""`fast_constructor` stands in for a frozen dataclass's own call on the hot path: it must
make the very object the class makes, and refuse any class whose ``__init__`` does more
than set its fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from typed_session_sql.backend import Record, Update, fast_constructor, make_record, make_update

NOW = datetime(2026, 12, 8, tzinfo=UTC)


def test_made_records_and_updates_equal_the_class_own() -> None:
    args = (b"{}", 3, NOW, NOW, "alice", NOW, True)
    assert make_record(*args) == Record(*args)
    assert type(make_record(*args)) is Record
    update = Update(b"h", 3, b"{}", NOW, new_id_hash=b"n")
    assert make_update(b"h", 3, b"{}", NOW, new_id_hash=b"n") == update


@dataclass(frozen=True, slots=True)
class WithDefault:
    a: int
    b: str = "x"


def test_defaults_and_keywords_work_as_in_the_class() -> None:
    make = fast_constructor(WithDefault)
    assert make(1) == WithDefault(1)
    assert make(1, b="y") == WithDefault(1, b="y")
    with pytest.raises(TypeError):
        make()  # type: ignore[call-arg]


@dataclass(slots=True)
class NotFrozen:
    a: int


@dataclass(frozen=True, slots=True)
class Checked:
    a: int

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError("negative")


@dataclass(frozen=True, slots=True)
class Factory:
    a: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class KeywordOnly:
    a: int = field(kw_only=True)


@pytest.mark.parametrize("cls", [NotFrozen, Checked, Factory, KeywordOnly, dict])
def test_refuses_classes_it_cannot_stand_in_for(cls: type) -> None:
    with pytest.raises(TypeError):
        fast_constructor(cls)
