"""What a service opens is registered once and closed in reverse, each close awaited; background tasks
are cancelled and awaited; a build that fails half-way closes what it had opened; indexes are created
at start."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.server import Component, Resources, start_server
from tests.runtime.test_server import ACCESS, DESCRIPTOR, ProbeServicer


class Thing:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.log.append(self.name)


class Indexed:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def ensure_indexes(self) -> None:
        self.log.append("indexes")


def binding():
    from svpl.support.v1 import support_pb2_grpc

    from services.runtime.server import Binding

    return Binding(DESCRIPTOR, ProbeServicer(), support_pb2_grpc.add_SupportServiceServicer_to_server, ACCESS)


async def test_everything_opened_is_closed_in_reverse_and_tasks_are_awaited(keyring):
    log: list[str] = []
    ran = asyncio.Event()

    async def background():
        ran.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)
            log.append("task ended")

    async with Resources() as opened:
        opened.closing(Thing("channel", log))
        opened.closing(Thing("client", log))
        opened.closing(Thing("dispatcher", log), lambda: log.append("dispatcher stopped"))
        component = Component([binding()], resources=opened.pop_all(), indexes=[Indexed(log)],
                              background={"svpl-test-background": background})
    assert log == []  # handed over: not closed when the build's block ends
    running = await start_server(component, keyring.keyset())
    await asyncio.wait_for(ran.wait(), 5)
    assert log == ["indexes"]
    await running.stop(0)
    assert log == ["indexes", "task ended", "dispatcher stopped", "client", "channel"]


async def test_a_build_that_fails_half_way_closes_what_it_opened():
    log: list[str] = []
    with pytest.raises(RuntimeError):
        async with Resources() as opened:
            opened.closing(Thing("channel", log))
            opened.closing(Thing("client", log))
            raise RuntimeError("bad settings")
    assert log == ["client", "channel"]


async def test_a_start_that_fails_closes_what_the_service_opened(keyring):
    log: list[str] = []

    async def start():
        raise RuntimeError("database away")

    resources = Resources()
    resources.closing(Thing("client", log))
    with pytest.raises(RuntimeError):
        await start_server(Component([binding()], resources=resources, start=start), keyring.keyset())
    assert log == ["client"]


async def test_a_task_that_swallows_its_cancellation_still_ends_on_close():
    """pymongo turns a cancellation inside a database operation into a network error; a loop that
    outlives database outages catches it and goes on. Closing must still end such a task (a
    service's stop used to wait for ever on its database watch)."""
    import asyncio

    from services.runtime.tasks import cancel_and_wait

    swallowed = 0

    async def outage_tolerant_loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.02)  # a database operation
            except asyncio.CancelledError:
                swallowed += 1  # as pymongo's AutoReconnect, caught by `except Exception`
            await asyncio.sleep(0.05)  # the loop's pause before the next check

    task = asyncio.create_task(outage_tolerant_loop())
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cancel_and_wait(task, "loop"), 5)
    assert task.done() and swallowed >= 1
