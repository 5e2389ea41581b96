"""Ending background tasks for sure."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("svpl.tasks")


async def cancel_and_wait(task: asyncio.Task[Any], name: str, give_up_after: float = 10.0) -> None:
    """Cancel `task` and wait until it has ended; an error it ended with is logged.

    A cancellation can be swallowed: pymongo turns one that arrives inside a database operation
    into a network error, which a loop that outlives database outages catches and goes on (seen
    here: a service's stop waiting for ever on its database watch). So the task is cancelled again
    at each short wait until it ends, and given up (logged) after `give_up_after` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    pause = 0.01
    while not task.done():
        if loop.time() > deadline:
            log.warning("background task %s did not end within %.0fs of being cancelled", name, give_up_after)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=pause)
        pause = min(pause * 1.7, 0.5)  # uneven: a loop's period cannot keep meeting the cancel in one place
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s had failed", name, exc_info=task.exception())
