"""WebSocket /api/v1/meetings/{id}/events: roster.WatchMeeting relayed as JSON, one message
per change, starting with a snapshot. Authenticated by the session cookie; the handshake
must come from this site's own pages (Origin check: a cookie-authenticated WebSocket is
otherwise open to cross-site hijacking)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

import grpc
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from prometheus_client import Gauge
from svpl.roster.v1 import roster_pb2

from services.gateway import access, protojson
from services.gateway.problems import Problem, from_rpc_error
from services.gateway.security import session_from
from services.runtime import clients

router = APIRouter()
OPEN_EVENT_STREAMS = Gauge("svpl_gateway_event_streams", "Meeting event WebSockets open now (each holds one roster stream).")
MEETING_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin", "")
    host = ws.headers.get("host", "")
    return bool(origin) and origin.split("://", 1)[-1] == host


async def _refuse(ws: WebSocket, problem: Problem) -> None:
    await ws.accept()
    await ws.send_text(json.dumps({"error": problem.body(ws.url.path)}))
    # Close codes 4000 + HTTP status: the portal tells "removed" / "ended" from "not logged in".
    await ws.close(code=4000 + problem.status, reason=problem.detail[:100])


@router.websocket("/api/v1/meetings/{meeting_id}/events")
@access.relays("roster", "WatchMeeting")
async def meeting_events(ws: WebSocket, meeting_id: str) -> None:
    if not _same_origin(ws):
        await _refuse(ws, Problem(403, "anslutningen måste komma från portalens egna sidor", reason="ORIGIN"))
        return
    if not MEETING_ID.match(meeting_id):
        await _refuse(ws, Problem(400, "meeting_id: inte ett mötes-id"))
        return
    try:
        session = await session_from(ws)
    except Problem as problem:
        await _refuse(ws, problem)
        return
    stub = ws.app.state.backends.roster
    call = access.stub_method(ws, stub)(roster_pb2.WatchMeetingRequest(meeting_id=meeting_id),
                             metadata=clients.metadata(session.token))
    await ws.accept()

    async def client_gone() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await ws.receive_text()

    async def relay() -> None:
        async for event in call:
            await ws.send_text(json.dumps(protojson.to_json(event), ensure_ascii=False))
        await ws.close(code=1000, reason="the meeting stream ended")

    # Whichever ends first ends both: a page closed (or its network gone) cancels roster's stream
    # (and the database change stream behind it) at once, not at the meeting's next change.
    watcher, relaying = asyncio.create_task(client_gone()), asyncio.create_task(relay())
    OPEN_EVENT_STREAMS.inc()
    try:
        await asyncio.wait((watcher, relaying), return_when=asyncio.FIRST_COMPLETED)
        if relaying.done() and not watcher.done():
            relaying.result()
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            problem = from_rpc_error(exc)
            with contextlib.suppress(Exception):
                await ws.send_text(json.dumps({"error": problem.body(ws.url.path)}))
                await ws.close(code=4000 + problem.status, reason=problem.detail[:100])
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        OPEN_EVENT_STREAMS.dec()
        call.cancel()
        for task in (watcher, relaying):
            task.cancel()
        await asyncio.gather(watcher, relaying, return_exceptions=True)
