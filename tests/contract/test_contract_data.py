"""Data that must not cost writes, lose sessions or crash: unordered collections, floats
JSON cannot hold, values no codec can encode, timestamps at the end of the calendar.

The encoding tests run on every backend: an untouched session must cost no write whatever
its data type, and refused data must leave the stored row as it was.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

from tests.backends import RecordingBackend
from tests.clock import FakeClock
from tests.contract import cookie_of, make_store, must_load
from tests.models import Cart
from typed_session_sql import (
    EncodeError,
    EventKind,
    ExpiryPolicy,
    MemoryBackend,
    SessionEvent,
    SessionStore,
    ids,
)
from typed_session_sql.backend import Record, UnreadableRecordError

pytestmark = pytest.mark.anyio

WORDS = [f"word-{n}" for n in range(40)]  # enough for a set's order to change on decoding


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


@dataclass
class Tagged:
    tags: set[str] = field(default_factory=set)


@dataclass
class Frozen:
    seen: frozenset[str] = frozenset()


@dataclass
class Keyed:
    by_id: dict[int, str] = field(default_factory=dict)


class Struct(msgspec.Struct):
    colours: set[Colour] = msgspec.field(default_factory=set)  # no order: cannot be sorted
    mixed: dict[str, set[str]] = msgspec.field(default_factory=dict)


class Typed(TypedDict):
    tags: set[str]


class Model(pydantic.BaseModel):
    tags: set[str] = set()
    by_id: dict[int, str] = {}


# Each type with a value whose encoding, before this was fixed, could change between the
# session that stored it and the one that loaded it back (a set's order after decoding).
UNORDERED: dict[str, tuple[type[Any], Any]] = {
    "set[str]": (Tagged, Tagged(set(WORDS))),
    "frozenset[str]": (Frozen, Frozen(frozenset(WORDS))),
    "dict[int, str]": (Keyed, Keyed({n: str(n) for n in range(30, 0, -1)})),  # not sortable
    "Struct with set[Enum]": (
        Struct,
        Struct(set(Colour), {"a": set(WORDS)}),
    ),
    "TypedDict with set[str]": (Typed, Typed(tags=set(WORDS))),
    "pydantic with set and int keys": (
        Model,
        Model(tags=set(WORDS), by_id={n: str(n) for n in range(30, 0, -1)}),
    ),
}


@pytest.mark.parametrize(("data_type", "data"), UNORDERED.values(), ids=UNORDERED.keys())
async def test_untouched_sessions_cost_no_write_whatever_the_data_type(
    backend: RecordingBackend, clock: FakeClock, data_type: type[Any], data: Any
) -> None:
    store = SessionStore(data_type, backend, clock=clock)
    value = await cookie_of(store, store.new(data))
    backend.kinds.clear()
    for _ in range(250):
        session = await store.load(value)
        assert session is not None
        assert not session.is_changed
        await store.save(session)
    assert backend.kinds == ["read"] * 250
    session = await store.load(value)
    assert session is not None
    assert session.data == data


@dataclass
class Priced:
    price: float = 1.0
    history: dict[str, list[float]] = field(default_factory=dict)
    extra: Any = None


NON_FINITE: dict[str, Any] = {
    "nan": lambda data: setattr(data, "price", math.nan),
    "inf": lambda data: setattr(data, "price", math.inf),
    "-inf, nested": lambda data: data.history.setdefault("a", [1.0]).append(-math.inf),
    "nan in an Any field": lambda data: setattr(data, "extra", {"a": [math.nan]}),
}


@pytest.mark.parametrize("change", NON_FINITE.values(), ids=NON_FINITE.keys())
async def test_non_finite_floats_are_refused_at_save_and_nothing_is_written(
    backend: RecordingBackend, clock: FakeClock, change: Any
) -> None:
    store = SessionStore(Priced, backend, clock=clock)
    fresh = store.new()
    change(fresh.data)
    with pytest.raises(EncodeError, match="non-finite float"):
        await store.save(fresh)
    assert backend.kinds == []

    value = await cookie_of(store, store.new(Priced(history={"a": [2.0]})))
    session = await store.load(value)
    assert session is not None
    change(session.data)
    backend.kinds.clear()
    with pytest.raises(EncodeError, match="Priced data holds a non-finite float"):
        await store.save(session)
    assert backend.kinds == []
    again = await store.load(value)  # the stored row is untouched and still loads
    assert again is not None
    assert again.data == Priced(history={"a": [2.0]})


async def test_a_value_no_codec_can_encode_is_refused_naming_its_type(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    class Opaque:
        pass

    store = SessionStore(Priced, backend, clock=clock)
    session = store.new()
    session.data.extra = Opaque()
    with pytest.raises(EncodeError, match=r"Priced data does not encode:.*Opaque"):
        await store.save(session)
    assert backend.kinds == []


@dataclass
class Connection:
    socket: object


class Plain:
    def __init__(self) -> None:
        self.items: list[int] = []


@dataclass
class HoldsPlain:
    plain: Plain | None = None


@pytest.mark.parametrize(
    ("data_type", "named"),
    [
        (Plain, "Plain is not a type"),
        (HoldsPlain, "HoldsPlain holds a Plain"),
        (list[Plain], "holds a Plain"),
    ],
    ids=["plain class", "dataclass holding one", "list of them"],
)
def test_a_type_no_codec_can_encode_is_refused_when_the_store_is_made(
    data_type: Any, named: str
) -> None:
    with pytest.raises(EncodeError, match=named):
        SessionStore(data_type, MemoryBackend())


# -- rows the store cannot read back -------------------------------------------------------


class UnreadableBackend(MemoryBackend):
    """A memory backend holding rows whose columns cannot be read (say, a timestamp out of
    range on SQL): its read raises, as the protocol says."""

    def __init__(self) -> None:
        super().__init__()
        self.unreadable: set[bytes] = set()

    async def read(self, id_hash: bytes) -> Record | None:
        if id_hash in self.unreadable:
            raise UnreadableRecordError("created_at: year 10000 is out of range")
        return await super().read(id_hash)


async def test_a_row_that_cannot_be_read_back_loads_as_undecodable(clock: FakeClock) -> None:
    events: list[SessionEvent] = []
    backend = UnreadableBackend()
    for on_undecodable in ("drop", "reset_data"):
        store = SessionStore(
            Cart, backend, clock=clock, on_event=events.append, on_undecodable=on_undecodable
        )
        value = await cookie_of(store, store.new(Cart(items=[1])))
        backend.unreadable.add(ids.IdHasher()(value))
        events.clear()
        assert await store.load(value) is None  # even reset_data: there is no sign-in to keep
        assert [event.kind for event in events] == [EventKind.UNDECODABLE]
        assert "UnreadableRecordError: created_at" in events[0].detail


LATEST = datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "created_at",
    [LATEST - timedelta(hours=1), LATEST, LATEST - timedelta(days=1)],
    ids=["an hour before the end", "the very end", "a day before"],
)
async def test_timestamps_at_the_end_of_the_calendar_never_overflow(
    clock: FakeClock, created_at: datetime
) -> None:
    backend = MemoryBackend()
    # Rows from the store's own future load only with that much clock skew allowed (which
    # saturates too).
    lenient = ExpiryPolicy(clock_skew=timedelta.max)
    store = make_store(backend, clock, expiry=lenient)  # type: ignore[arg-type]
    value = ids.new_cookie_value()
    row = Record(b'{"items":[5]}', 1, created_at, LATEST, "alice", created_at)
    backend.rows[ids.IdHasher()(value)] = row

    session = await must_load(store, value)  # 12 h after created_at is past year 9999
    assert session.data == Cart(items=[5])
    assert [info.created_at for info in await store.sessions_of("alice")] == [created_at]
    session.expire_in(timedelta.max)
    session.data.items.append(6)
    await store.save(session)
    assert (await must_load(store, value)).data.items == [5, 6]


async def test_an_expiry_beyond_the_calendar_saturates(
    backend: RecordingBackend, clock: FakeClock
) -> None:
    store = make_store(backend, clock, expiry=ExpiryPolicy(idle=None, absolute=timedelta.max))
    session = store.new(Cart(items=[1]))
    assert session.expires_at == LATEST
    session.expire_in(timedelta.max)
    session.expire_in(timedelta.min)  # the past: expired at once on the next load
    value = await cookie_of(store, session)
    assert await store.load(value) is None
