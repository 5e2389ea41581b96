"""The one way tests wait for something that happens in the background: poll, never sleep a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def poll(check: Callable[[], Any], timeout: float, what: str | Callable[[], str], interval: float = 0.05, *,
               until: Callable[[Any], bool] | None = None) -> Any:
    """Call `check` (plain or async) until its result is truthy, or until `until(result)` holds when
    given, and return that result; after `timeout` seconds fail with an AssertionError naming `what`
    (a string, or a callable giving one at that moment) and the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if until(result) if until is not None else result:
            return result
        if time.monotonic() > deadline:
            last = repr(result)
            raise AssertionError(f"not within {timeout} s: {what() if callable(what) else what}"
                                 f" (last: {last[:500] + '…' if len(last) > 500 else last})")
        await asyncio.sleep(interval)


def poll_blocking(check: Callable[[], Any], timeout: float, what: str | Callable[[], str], interval: float = 0.1, *,
                  until: Callable[[Any], bool] | None = None) -> Any:
    """`poll` for tests that are not coroutines (processes started by devstack.stack): the same rules."""
    return asyncio.run(poll(check, timeout, what, interval, until=until))
