"""Tells roster when a participant's connection comes and goes, in order, retrying while roster is away.

Reports never block signalling: they are queued and sent by one background task. When roster
answers allowed=false for a connect, the participant is dropped (removed, or the meeting is over)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from svpl.roster.v1 import roster_pb2, roster_pb2_grpc

from services.runtime import clients

log = logging.getLogger("svpl.media.reporter")


@dataclass
class Report:
    meeting_id: str
    connection_id: str
    participant_id: str
    connected: bool
    on_denied: Callable[[], Awaitable[None]] | None = None
    queued_at: float = 0.0


class ConnectionReporter:
    def __init__(self, channel: grpc.aio.Channel, service_token: str, instance_id: str,
                 max_backoff: float = 5.0, give_up_after: float = 600.0) -> None:
        self._stub = roster_pb2_grpc.RosterServiceStub(channel)
        self._token = service_token
        self._instance = instance_id
        self._queue: asyncio.Queue[Report] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._max_backoff = max_backoff
        self._give_up_after = give_up_after
        self.sent = 0
        self.failures = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="svpl-media-reporter")

    def report(self, report: Report) -> None:
        report.queued_at = time.monotonic()
        self._queue.put_nowait(report)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        while True:
            report = await self._queue.get()
            backoff = 0.2
            while True:
                try:
                    allowed = await self._send(report)
                    self.sent += 1
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - roster away or failing: retry, keep media working
                    self.failures += 1
                    if time.monotonic() - report.queued_at > self._give_up_after:
                        log.error("giving up a connection report after %.0fs: %s", self._give_up_after, exc)
                        allowed = True
                        break
                    why = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else exc.__class__.__name__
                    log.warning("connection report to roster failed (%s); retrying in %.1fs", why, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
            if not allowed and report.connected and report.on_denied is not None:
                try:
                    await report.on_denied()
                except Exception:
                    log.exception("dropping a denied participant failed")

    async def _send(self, r: Report) -> bool:
        response = await self._stub.ReportConnection(
            roster_pb2.ReportConnectionRequest(
                meeting_id=r.meeting_id,
                connection_id=r.connection_id,
                kind=roster_pb2.CONNECTION_KIND_WEBRTC,
                participant_id=r.participant_id,
                connected=r.connected,
                media_instance=self._instance,
            ),
            metadata=clients.metadata(self._token),
            timeout=3,
        )
        return response.allowed

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
