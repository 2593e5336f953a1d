"""Where a driver executor gets its connections: held for the backend, or one per statement.

A checkout from SQLAlchemy's pool and the check-in after it cost about as much, at 16
concurrent requests, as the primary-key read they wrap. A backend that owns its engine
therefore *holds* a fixed number of the pool's connections for its own statements
(`HeldConnections`); everything else using the engine (DDL, migrations, the purge
lock, stats, an application's own queries) uses the rest of the pool. An engine passed in
by the application is shared: the backend holds none of its connections unless told to,
and takes one from the pool for each statement (`PerStatement`).

Held connections are treated as the pool treats its own: replaced when older than
``recycle`` (``pool_recycle``), pinged before use with ``pre_ping`` (``pool_pre_ping``),
replaced when the driver says the server closed them, and dropped when the engine is
disposed, by the backend or by anyone else (SQLAlchemy's public ``engine_disposed`` event),
so no connection outlives its pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from time import monotonic
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection, QueuePool

from typed_session_sql.backends.sql.fair_slots import FairSlots

__all__ = ["Checkout", "ConnectionSource", "HeldConnections", "Holder", "PerStatement"]

_BORN = "typed_session_sql.connected_at"

# After the server refused a connection while others of ours were in use ("too many
# clients"), statements wait for those instead of asking for more: once this many seconds
# have passed, one may ask again.
_ASK_AGAIN_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class HeldConnections:
    """How many of the engine's connections a backend holds for its statements."""

    count: int
    """How many connections are held, at most: the backend's statements run on these alone
    (up to ``count`` at once; more wait for one to be free)."""
    recycle: float | None = None
    """Replace a connection older than this many seconds (as ``pool_recycle`` does)."""
    pre_ping: bool = False
    """Check that a connection is alive with a round trip before each use (as
    ``pool_pre_ping`` does). Rarely worth it: a connection the server closed is noticed by
    the driver at no cost, and a read that fails on a dead connection is run again."""
    timeout: float = 30.0
    """How long a statement waits for a free connection (as ``pool_timeout``) before the
    store is reported unavailable."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("count must be at least 1")
        if self.recycle is not None and self.recycle <= 0:
            raise ValueError("recycle must be positive (or None)")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")


class DriverConnections(Protocol):
    """What a connection source asks of the driver: the little it can't ask SQLAlchemy."""

    def is_closed(self, conn: Any) -> bool:
        """Whether the driver knows the connection is closed (no I/O)."""
        ...

    def ping(self, conn: Any) -> Awaitable[object]:
        """One round trip that fails on a dead connection."""
        ...

    def close(self, conn: Any) -> Awaitable[object]:
        """Close the connection gracefully."""
        ...

    def terminate(self, conn: Any) -> None:
        """Close the connection at once, without awaiting anything."""
        ...


class Checkout:
    """A connection of the pool a driver executor runs statements on: the pool's
    ``pooled`` connection, and its driver connection, looked up once when it is taken from
    the pool (SQLAlchemy finds it through three properties on each use, and a held
    connection's never changes: the pool only replaces it on a checkout)."""

    __slots__ = ("driver_connection", "pooled")

    def __init__(self, pooled: PoolProxiedConnection) -> None:
        self.pooled = pooled
        self.driver_connection: Any = pooled.driver_connection


class ConnectionSource(Protocol):
    """Pooled connections for a driver executor's statements."""

    held: int
    """How many connections it holds for the backend, at most (0: one per statement)."""

    async def acquire(self) -> Checkout:
        """A connection to run one statement on. Raises what the pool or driver raises
        when none can be had (refused, timed out, ...)."""
        ...

    def acquire_now(self) -> Checkout | None:
        """A connection at once, without awaiting anything, where one is ready; else None,
        and `acquire` is the way. (Every statement asks: a coroutine less when it works.)"""
        ...

    async def release(self, pooled: Checkout, *, reusable: bool) -> None:
        """Give ``pooled`` back; unless ``reusable``, close it at once, without I/O (it
        failed, or a statement on it was cancelled midway)."""
        ...

    def release_now(self, pooled: Checkout) -> bool:
        """Give back ``pooled``, reusable, if that needs nothing awaited; whether it was
        (if not, `release` is the way)."""
        ...

    async def aclose(self) -> None:
        """Close what is held. The engine stays usable."""
        ...


class PerStatement:
    """One connection from the engine's pool for each statement, back right after it."""

    held = 0

    def __init__(self, engine: AsyncEngine, driver: DriverConnections) -> None:
        self._engine = engine
        self._driver = driver

    async def acquire(self) -> Checkout:
        return await _open_from_pool(self._engine, self._driver)

    def acquire_now(self) -> None:
        return None  # a checkout runs in SQLAlchemy's greenlet: it may connect

    async def release(self, pooled: Checkout, *, reusable: bool) -> None:
        if not reusable:
            _discard(self._driver, pooled)
        elif not self.release_now(pooled):
            # The pool would close it (an overflow connection): close it here, where I/O
            # can be awaited, and hand back an empty place.
            await _close(self._driver, pooled)

    def release_now(self, pooled: Checkout) -> bool:
        pool = self._engine.sync_engine.pool
        if isinstance(pool, QueuePool) and pool.checkedin() < pool.size():
            # The statement ran in autocommit on the driver itself: no transaction is open,
            # so checking it in (the pool's reset and events included) has no I/O to do.
            pooled.pooled.close()
            return True
        return False

    async def aclose(self) -> None:
        pass


class Holder:
    """Up to ``config.count`` connections taken from the engine's pool and kept checked out
    for the backend's own statements; the most recently used first.

    Where the server refuses another connection while some of the held ones are in use (it
    is full), the statement waits for one of those, as long as ``config.timeout``, instead
    of failing; and until ``_ASK_AGAIN_AFTER`` has passed, statements share the connections
    there are rather than ask for more.
    """

    def __init__(
        self, engine: AsyncEngine, config: HeldConnections, driver: DriverConnections
    ) -> None:
        self.config = config
        self.held = config.count
        self._engine = engine
        self._driver = driver
        self._slots = FairSlots(self._allowed)  # statements holding a connection
        self._opening = 0  # connections being opened
        self._refused_at = -_ASK_AGAIN_AFTER  # when the server last refused one more
        self._idle: list[Checkout] = []
        self._busy: set[Checkout] = set()
        self._stale: set[Checkout] = set()
        self._closing: set[asyncio.Task[None]] = set()
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "engine_disposed", self._on_engine_disposed)
        event.listen(sync_engine, "connect", _stamp_birth)

    def acquire_now(self) -> Checkout | None:
        # The common case, kept short: it is every statement's.
        if not self._idle or self.config.pre_ping or not self._slots.take_now():
            return None
        pooled = self._take_idle()
        if pooled is None:  # each idle one was closed or too old
            self._slots.give_back()
            return None
        self._busy.add(pooled)
        return pooled

    async def acquire(self) -> Checkout:
        if self._slots.take_now():
            if not self.config.pre_ping:
                pooled = self._take_idle()
                if pooled is not None:
                    self._busy.add(pooled)
                    return pooled
            deadline = monotonic() + self.config.timeout
        else:
            deadline = monotonic() + self.config.timeout
            await self._wait_for_a_slot(self.config.timeout)
        while True:
            try:
                pooled = await self._connection()
            except _Full as full:
                # Wait for a connection in use, having given up the slot to no one.
                self._slots.give_up()
                try:
                    await self._wait_for_a_slot(max(0.0, deadline - monotonic()))
                except TimeoutError:
                    if full.refusal is None:
                        raise
                    raise full.refusal from None
                continue
            except BaseException:
                self._slots.give_back()
                raise
            self._busy.add(pooled)
            return pooled

    async def _connection(self) -> Checkout:
        """An idle connection fit for use, else a new one. Raises `_Full` rather than
        ask for one the server would refuse while others of ours are in use."""
        while True:
            pooled = self._take_idle()
            if pooled is not None:
                if not self.config.pre_ping or await self._answers(pooled):
                    return pooled
                continue
            if (self._busy or self._opening) and self._refused_lately():
                raise _Full(None)
            self._opening += 1
            asked = monotonic()
            try:
                pooled = await _open_from_pool(self._engine, self._driver)
            except Exception as error:
                self._refused_at = monotonic()
                if self._idle:
                    continue  # one came back meanwhile
                if self._busy or self._opening > 1:  # others have, or may get, one
                    raise _Full(error) from error
                raise
            finally:
                self._opening -= 1
            if asked > self._refused_at:
                self._refused_at = -_ASK_AGAIN_AFTER  # asked since the refusal: there is room
            pooled.pooled.info.setdefault(_BORN, monotonic())
            return pooled

    def _refused_lately(self) -> bool:
        if self._refused_at == -_ASK_AGAIN_AFTER:  # never, or asked since: no clock to read
            return False
        return monotonic() - self._refused_at < _ASK_AGAIN_AFTER

    def _allowed(self) -> int:
        """How many statements may hold a connection at once now: after a refusal, as many
        as there are connections (none: the server is down, not full, and each may try)."""
        if self._refused_at == -_ASK_AGAIN_AFTER:  # the common case: no refusal to weigh
            return self.held
        there = len(self._busy) + len(self._idle) + self._opening
        if there and self._refused_lately():
            return min(self.held, there)
        return self.held

    async def release(self, pooled: Checkout, *, reusable: bool) -> None:
        self.release_now(pooled, reusable)

    def release_now(self, pooled: Checkout, reusable: bool = True) -> bool:
        # Never awaits: `release` is this too (every statement gives one back through here).
        self._busy.discard(pooled)
        if reusable and pooled not in self._stale:
            self._idle.append(pooled)
        else:
            self._stale.discard(pooled)
            _discard(self._driver, pooled)
        self._slots.give_back()
        return True

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for pooled in idle:
            await _close(self._driver, pooled)
        await asyncio.gather(*self._closing)
        sync_engine = self._engine.sync_engine
        for name, listener in (
            ("engine_disposed", self._on_engine_disposed),
            ("connect", _stamp_birth),
        ):
            if event.contains(sync_engine, name, listener):
                event.remove(sync_engine, name, listener)

    def _take_idle(self) -> Checkout | None:
        """The most recently used idle connection still fit for use, if any."""
        recycle = self.config.recycle
        now = 0.0 if recycle is None else monotonic()
        while self._idle:
            pooled = self._idle.pop()
            if self._driver.is_closed(pooled.driver_connection):
                _discard(self._driver, pooled)
            elif recycle is not None and now - pooled.pooled.info.get(_BORN, now) > recycle:
                closing = asyncio.get_running_loop().create_task(_close(self._driver, pooled))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            else:
                return pooled
        return None

    async def _answers(self, pooled: Checkout) -> bool:
        """Whether ``pooled`` answers a ping (``pre_ping``); if not, it is discarded."""
        try:
            await self._driver.ping(pooled.driver_connection)
        except Exception:
            _discard(self._driver, pooled)
            return False
        return True

    async def _wait_for_a_slot(self, within: float) -> None:
        try:
            await self._slots.wait(within)
        except TimeoutError:
            raise TimeoutError(
                f"no held connection was free within {self.config.timeout} s"
            ) from None

    def _on_engine_disposed(self, engine: Any) -> None:
        # Someone disposed the engine: its pool, which these connections belong to, is
        # gone. Close the idle ones now; the busy ones when their statement ends.
        idle, self._idle = self._idle, []
        for pooled in idle:
            _discard(self._driver, pooled)
        self._stale |= self._busy


class _Full(Exception):
    """The server refused a new connection (``refusal``), or lately did (None), while
    others of ours are in use."""

    def __init__(self, refusal: Exception | None) -> None:
        super().__init__("full")
        self.refusal = refusal


# A connection the backend closes itself is then detached from its pool: the pool forgets
# it and gives its place to a new one, without closing it once more (which would need
# SQLAlchemy's greenlet for I/O, and terminates differently across its versions).


async def _open_from_pool(engine: AsyncEngine, driver: DriverConnections) -> Checkout:
    """A connection from ``engine``'s pool that the server has not closed (the driver
    notices a close at no cost, unlike ``pool_pre_ping``)."""
    while True:
        pooled = Checkout(await engine.raw_connection())
        if not driver.is_closed(pooled.driver_connection):
            return pooled
        _discard(driver, pooled)  # closed while it sat in the pool: take another


async def _close(driver: DriverConnections, pooled: Checkout) -> None:
    """Close ``pooled`` gracefully, and give its place in the pool back."""
    try:
        await driver.close(pooled.driver_connection)
    except Exception:  # broken already
        driver.terminate(pooled.driver_connection)
    pooled.pooled.detach()


def _discard(driver: DriverConnections, pooled: Checkout) -> None:
    """Close ``pooled`` at once (no I/O awaited), and give its place in the pool back."""
    driver.terminate(pooled.driver_connection)
    pooled.pooled.detach()


def _stamp_birth(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_BORN] = monotonic()
