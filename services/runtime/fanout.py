"""One source stream shared by every watcher of it in this process.

Roster's meeting change streams, the gateway's WatchMeeting relays and support's ticket feed all
share one upstream stream among many watchers: the database (or the upstream service) serves
one cursor per topic, whatever the number of pages or subscribers. No library offers this
fan-out for asyncio with the semantics below, so it is written once here:

- A watcher that joins late gets the latest item first (optionally through `snapshot`): every
  user of this fan-out sends whole states, not deltas, so the latest item is a full picture.
- A watcher that falls `backlog` items behind is dropped: its queue ends with `Lagging` (it
  watches again and gets a new snapshot) instead of holding everyone's memory.
- When the source ends, every queue ends with `SourceEnded`, or with the error it ended with
  (one of `errors`); `on_idle` is called first, so a new watcher opens a new source.
- When the last watcher leaves, the source is closed (`close`, e.g. a gRPC call's cancel) and
  its task cancelled.

A queue's items are the source's items, then exactly one terminal `Exception` instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Generic, TypeVar, cast

from prometheus_client import Gauge

T = TypeVar("T")

_NOTHING = object()  # no item yet (None can be an item)


class Lagging(Exception):
    """The watcher fell too far behind the source and was dropped: watch again."""


class SourceEnded(Exception):
    """The source stream ended without an error."""


class FanOut(Generic[T]):
    def __init__(self, source: AsyncIterator[T], on_idle: Callable[[FanOut[T]], None], *, name: str,
                 backlog: int = 256, errors: tuple[type[Exception], ...] = (),
                 close: Callable[[], object] | None = None) -> None:
        self._source = source
        self._on_idle: Callable[[FanOut[T]], None] | None = on_idle
        self._backlog = backlog
        self._errors = errors
        self._close = close
        self._queues: set[asyncio.Queue[object]] = set()
        self._latest: object = _NOTHING
        self._end: Exception | None = None
        self._task = asyncio.create_task(self._pump(), name=name)

    @property
    def watchers(self) -> int:
        return len(self._queues)

    async def _pump(self) -> None:
        end: Exception = SourceEnded()
        try:
            async for item in self._source:
                self._latest = item
                for queue in list(self._queues):
                    self._put(queue, item)
        except self._errors as exc:
            end = exc
        finally:
            self._idle()
        self._end = end
        for queue in list(self._queues):
            self._put(queue, end)

    def _idle(self) -> None:
        """Ended or closed (once): a watcher that comes now opens a new source (and a new snapshot)."""
        on_idle, self._on_idle = self._on_idle, None
        if on_idle is not None:
            on_idle(self)

    def _put(self, queue: asyncio.Queue[object], item: object) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:  # too slow to keep up: it ends, and watches again
            queue.get_nowait()
            queue.put_nowait(Lagging("too far behind the stream; watch again"))
            self._queues.discard(queue)

    def join(self, snapshot: Callable[[T], T] | None = None) -> asyncio.Queue[object]:
        """A new watcher's queue: the latest item first (if any; through `snapshot` if given), then
        each new one, then the end."""
        queue: asyncio.Queue[object] = asyncio.Queue(self._backlog)
        if self._latest is not _NOTHING:
            latest: T = self._latest  # type: ignore[assignment]
            queue.put_nowait(snapshot(latest) if snapshot else latest)
        if self._end is not None:
            queue.put_nowait(self._end)
        else:
            self._queues.add(queue)
        return queue

    async def leave(self, queue: asyncio.Queue[object]) -> None:
        """The watcher is done; the last one out closes the source."""
        self._queues.discard(queue)
        if not self._queues and not self._task.done():
            if self._close is not None:
                self._close()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._idle()  # also when the task was cancelled before it ever ran

    async def items(self, snapshot: Callable[[T], T] | None = None) -> AsyncGenerator[T, None]:
        """Join and yield the items; the end is raised (`SourceEnded`, `Lagging` or the source's
        error); leaving is done however the caller stops (close this generator: contextlib.aclosing)."""
        queue = self.join(snapshot)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield cast(T, item)  # not an Exception: one of the source's items
        finally:
            await self.leave(queue)


class FanOuts(Generic[T]):
    """This process's fan-outs by key: one per key while it has watchers (`open_fans`, if given, is a
    gauge of how many are open)."""

    def __init__(self, *, name: str, backlog: int = 256, errors: tuple[type[Exception], ...] = (),
                 open_fans: Gauge | None = None) -> None:
        self._name = name
        self._backlog = backlog
        self._errors = errors
        self._gauge = open_fans
        self._open: dict[str, FanOut[T]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def get(self, key: str, open_source: Callable[[], tuple[AsyncIterator[T], Callable[[], object] | None]]) -> FanOut[T]:
        """The key's fan-out; if none is open, one on `open_source()`: the source and how to close it."""
        fan = self._open.get(key)
        if fan is None:
            source, close = open_source()
            fan = self._open[key] = FanOut(source, lambda f: self._forget(key, f), name=f"{self._name}-{key[:16]}",
                                           backlog=self._backlog, errors=self._errors, close=close)
            if self._gauge is not None:
                self._gauge.inc()
        return fan

    def _forget(self, key: str, fan: FanOut[T]) -> None:
        if self._open.get(key) is fan:
            del self._open[key]
            if self._gauge is not None:
                self._gauge.dec()
