"""services/runtime/fanout.py: one source shared by many watchers, with its end, its laggards and its close."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import CollectorRegistry, Gauge

from services.runtime.fanout import FanOuts, Lagging, SourceEnded
from tests.polling import poll


class Source:
    """A source the test feeds by hand; counts how often it was opened and closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.opened = 0
        self.closed = 0

    def open(self):
        self.opened += 1
        return self._items(), self._close

    def _close(self) -> None:
        self.closed += 1

    async def _items(self):
        while True:
            item = await self.queue.get()
            if item is StopAsyncIteration:
                return
            if isinstance(item, Exception):
                raise item
            yield item


async def drain(queue: asyncio.Queue, n: int) -> list:
    return [await asyncio.wait_for(queue.get(), 5) for _ in range(n)]


async def test_watchers_share_one_source_and_a_late_one_starts_from_the_latest_item():
    source = Source()
    fans: FanOuts[int] = FanOuts(name="t")
    first = fans.get("topic", source.open)
    a = first.join()
    source.queue.put_nowait(1)
    source.queue.put_nowait(2)
    assert await drain(a, 2) == [1, 2]
    again = fans.get("topic", source.open)
    assert again is first and source.opened == 1
    b = again.join(snapshot=lambda latest: latest * 100)
    assert await drain(b, 1) == [200]
    source.queue.put_nowait(3)
    assert await drain(a, 1) == [3] and await drain(b, 1) == [3]


async def test_the_last_watcher_leaving_closes_the_source_and_the_next_one_opens_a_new_one():
    source = Source()
    registry = CollectorRegistry()
    gauge = Gauge("open_fans", "open fan-outs", registry=registry)
    fans: FanOuts[int] = FanOuts(name="t", open_fans=gauge)
    fan = fans.get("topic", source.open)
    a, b = fan.join(), fan.join()
    assert registry.get_sample_value("open_fans") == 1
    await fan.leave(a)
    assert source.closed == 0 and len(fans) == 1
    await fan.leave(b)
    assert source.closed == 1 and len(fans) == 0
    assert registry.get_sample_value("open_fans") == 0
    assert fans.get("topic", source.open) is not fan and source.opened == 2


async def test_the_end_and_an_expected_error_reach_every_watcher_and_a_new_source_opens_after():
    source = Source()
    fans: FanOuts[int] = FanOuts(name="t", errors=(KeyError,))
    fan = fans.get("topic", source.open)
    a, b = fan.join(), fan.join()
    source.queue.put_nowait(KeyError("gone"))
    for queue in (a, b):
        end = await drain(queue, 1)
        assert isinstance(end[0], KeyError)
    # A watcher holding the ended fan-out gets its end at once; the topic opens anew.
    late = fan.join()
    assert isinstance((await drain(late, 1))[0], KeyError)
    assert fans.get("topic", source.open) is not fan
    ended = fans.get("topic", source.open)
    c = ended.join()
    source.queue.put_nowait(StopAsyncIteration)
    assert isinstance((await drain(c, 1))[0], SourceEnded)


async def test_a_watcher_that_falls_behind_is_dropped_and_the_others_keep_going():
    source = Source()
    fans: FanOuts[int] = FanOuts(name="t", backlog=3)
    fan = fans.get("topic", source.open)
    slow, fast = fan.join(), fan.join()
    got: list[int] = []

    async def keep_up() -> None:
        while True:
            got.append(await fast.get())

    reader = asyncio.create_task(keep_up())
    for i in range(6):
        source.queue.put_nowait(i)
        await poll(lambda i=i: i in got, 5, f"item {i} at the fast watcher")
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    items = await drain(slow, slow.qsize())
    assert isinstance(items[-1], Lagging), items
    assert fan.watchers == 1  # only the fast one is still fed


async def test_items_raises_the_end_and_leaves_when_the_caller_stops():
    source = Source()
    fans: FanOuts[int] = FanOuts(name="t")
    fan = fans.get("topic", source.open)
    source.queue.put_nowait(7)
    async with contextlib.aclosing(fan.items()) as items:
        assert await items.__anext__() == 7
    assert fan.watchers == 0 and source.closed == 1
    fan = fans.get("topic", source.open)
    source.queue.put_nowait(StopAsyncIteration)
    with pytest.raises(SourceEnded):
        async for _ in fan.items():
            pass
