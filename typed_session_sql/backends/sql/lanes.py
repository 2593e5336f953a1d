"""One engine and executor per event loop: a connection is never used outside its own loop.

A driver's connection belongs to the event loop that opened it. Used from another loop it
fails ("attached to a different loop"); used from two loops running at once (two test
clients, each running the app on a loop of its own in a thread of its own) it corrupts the
connection, and asyncpg then crashes the process. So the backend keeps what holds
connections apart per running loop, in a *lane*: made on the loop's first statement, and
closed *on that loop*, when `SqlBackend.dispose` runs there or when the loop shuts
down (``asyncio.run``, anyio and test clients cancel the loop's remaining tasks first: a
lane's keeper task closes it then). Nothing ever touches a connection from another loop.

The first lane runs on the backend's engine. Another lane running at the same time gets an
engine of its own, made like the first (`SqlBackend.from_url` knows how), except on
aiosqlite, whose connections run on threads of their own and serve any loop. An engine the
application passed in cannot be copied: a second loop while the first one's connections
may be in its pool raises `EventLoopError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from typed_session_sql.backends.sql.executor import Executor
from typed_session_sql.errors import EventLoopError

__all__ = ["Lane", "Lanes"]

# Drivers whose connections serve any event loop: aiosqlite runs each on a thread of its
# own and hands results back to whichever loop asked.
_LOOP_FREE_DRIVERS = frozenset({"aiosqlite"})


@dataclass(eq=False)
class Lane:
    """What one event loop uses: an engine, and the executor running statements on it."""

    engine: AsyncEngine
    executor: Executor
    keeper: asyncio.Task[None] | None = field(default=None, repr=False)


class Lanes:
    """The lanes of one backend, by event loop.

    Args:
        engine: the backend's engine (the first lane's).
        executor: the executor already made for ``engine`` (the first lane's).
        make_executor: makes an executor for an engine (each lane needs its own: a held
            connection's waiters are futures of one loop).
        owns_engine: whether closing the last lane on ``engine`` disposes it.

    ``make_engine`` makes another engine like ``engine``; None (an engine the application
    passed in) gives no lane an engine of its own.
    """

    make_engine: Callable[[], AsyncEngine] | None = None

    def __init__(
        self,
        engine: AsyncEngine,
        executor: Executor,
        make_executor: Callable[[AsyncEngine], Executor],
        *,
        owns_engine: bool,
    ) -> None:
        self.engine = engine
        self.first = Lane(engine, executor)
        self._unused: Executor | None = executor  # the first executor, until a lane takes it
        self._make_executor = make_executor
        self._owns_engine = owns_engine
        self._shared = engine.dialect.driver in _LOOP_FREE_DRIVERS
        self._lanes: dict[asyncio.AbstractEventLoop, Lane] = {}
        # The loop of the last lane made on `engine`: its pool may hold that loop's connections.
        self._last_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._lock = threading.Lock()  # lanes are made from the threads their loops run on

    def current(self) -> Lane:
        """The running loop's lane (made on first use); outside a loop, the first one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self.first
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._open(loop)
        return lane

    def _open(self, loop: asyncio.AbstractEventLoop) -> Lane:
        with self._lock:
            for other in [other for other in self._lanes if other.is_closed()]:
                # Closed without shutting down: its connections are left alone, unused.
                del self._lanes[other]
            engine = self.engine
            if not self._shared and self._others_connections_left(loop):
                if self.make_engine is None:
                    raise EventLoopError(
                        "this SqlBackend is used from another event loop than the one whose "
                        "connections the engine the application passed in still holds (each "
                        "connection belongs to the loop that opened it): use one event loop "
                        "(one test client, entered with `with`), dispose the engine when its "
                        "loop ends, or let the backend make its engine (SqlBackend.from_url)"
                    )
                engine = self.make_engine()
            executor = self._unused if engine is self.engine and self._unused else None
            if executor is None:
                executor = self._make_executor(engine)
            else:
                self._unused = None
            if engine is self.engine:
                self._last_loop = weakref.ref(loop)
            lane = Lane(engine, executor)
            self._lanes[loop] = lane
        lane.keeper = loop.create_task(self._keep(loop, lane), name="typed-session-sql lane")
        return lane

    def _others_connections_left(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``engine`` may hold connections of a loop other than ``loop``: another
        lane uses it, or its pool keeps some after the last lane on it, of another loop,
        closed (an application's engine, which closing a lane does not dispose, or a loop
        closed without shutting down)."""
        if any(lane.engine is self.engine for lane in self._lanes.values()):
            return True
        last = None if self._last_loop is None else self._last_loop()
        pool = self.engine.sync_engine.pool
        return (
            self._last_loop is not None
            and last is not loop
            and isinstance(pool, QueuePool)
            and pool.checkedin() > 0
        )

    async def _keep(self, loop: asyncio.AbstractEventLoop, lane: Lane) -> None:
        """Wait until the loop shuts down (this task is cancelled), then close the lane."""
        try:
            await loop.create_future()  # never done
        finally:
            if self._take(loop, lane):
                # Nobody awaits this task: a connection that fails to close (the server
                # went away) is closed all the same, and nothing is left to report to.
                with contextlib.suppress(Exception):
                    await self._close(lane)

    def _take(self, loop: asyncio.AbstractEventLoop, lane: Lane) -> bool:
        with self._lock:
            if self._lanes.get(loop) is not lane:
                return False  # closed by dispose() already
            del self._lanes[loop]
            return True

    async def close_current(self) -> None:
        """Close the running loop's lane, or, where no statement ran yet, what the backend
        made up front. Lanes of other loops close when those loops shut down."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is not None and self._take(loop, lane):
            if lane.keeper is not None:
                lane.keeper.cancel()
            await self._close(lane)
        elif not self._lanes:
            await self.first.executor.aclose()
            if self._owns_engine:
                await self.engine.dispose()

    async def _close(self, lane: Lane) -> None:
        await lane.executor.aclose()
        if lane.engine is not self.engine:
            await lane.engine.dispose()  # made for this lane
        elif self._owns_engine and not any(
            other.engine is self.engine for other in self._lanes.values()
        ):
            await self.engine.dispose()
