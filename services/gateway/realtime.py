"""WebSocket /api/v1/meetings/{id}/events: roster.WatchMeeting relayed as JSON, one message
per change, starting with a snapshot. The support desk's queue view (/api/v1/desk/events,
support.WatchTickets) is relayed by the same machinery (`stream_events`): the same origin check,
session, caps, sharing per session and closing on logout. Authenticated by the session cookie; the handshake
must come from this site's own pages (Origin check, scheme included: a cookie-authenticated
WebSocket is otherwise open to cross-site hijacking).

Bounded, because each open page costs roster a stream: at most `event_streams_per_session` pages
per session and `event_streams_per_meeting` per meeting in this process (429 beyond), and a
session's pages of one meeting share one roster stream (roster decides what each person sees, so
streams are shared per session, not across people; roster in turn shares one database change
stream per meeting). A page is closed (4401) within the revocation poll when its session is logged
out, and when the session expires."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Annotated

import grpc
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from prometheus_client import Gauge
from svpl.roster.v1 import roster_pb2

from services.gateway import access, protojson
from services.gateway.backends import Backends
from services.gateway.config import GatewaySettings
from services.gateway.dependencies import BackendsDep, SettingsDep, get_event_streams
from services.gateway.problems import Problem, from_rpc_error
from services.gateway.security import Session, session_from
from services.runtime import auth, clients
from services.runtime.fanout import FanOut, FanOuts, Lagging, SourceEnded

router = APIRouter()
OPEN_EVENT_STREAMS = Gauge("svpl_gateway_event_streams", "Meeting event WebSockets open now.")
ROSTER_WATCHES = Gauge("svpl_gateway_roster_watches",
                       "Roster WatchMeeting streams open now (one per meeting and session, shared by its pages).")
MEETING_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
SNAPSHOT = "MEETING_EVENT_KIND_SNAPSHOT"
# Events a page may fall behind by before it is closed (it reconnects and gets a new snapshot).
BACKLOG = 256


def _expected_origin(ws: WebSocket, settings: GatewaySettings) -> str:
    """The portal's own origin: the public URL's when it is configured, else this request's scheme and host."""
    public = settings.public_url
    if public:
        parts = urllib.parse.urlsplit(public)
        return f"{parts.scheme}://{parts.netloc}".lower()
    scheme = "https" if ws.url.scheme == "wss" else "http"
    return f"{scheme}://{ws.headers.get('host', '')}".lower()


def _same_origin(ws: WebSocket, settings: GatewaySettings) -> bool:
    origin = ws.headers.get("origin", "").lower()
    return bool(origin) and origin == _expected_origin(ws, settings)


async def refused_origin(ws: WebSocket, settings: GatewaySettings) -> bool:
    """Refuse (and say so) a handshake that does not come from the portal's own pages."""
    if _same_origin(ws, settings):
        return False
    await _refuse(ws, Problem(403, "anslutningen måste komma från portalens egna sidor", reason="ORIGIN"))
    return True


async def _refuse(ws: WebSocket, problem: Problem) -> None:
    await ws.accept()
    await ws.send_text(json.dumps({"error": problem.body(ws.url.path)}))
    # Close codes 4000 + HTTP status: the portal tells "removed" / "ended" from "not logged in".
    await ws.close(code=4000 + problem.status, reason=problem.detail[:100])


class EventStreams:
    """This process's open event pages: the caps, and the shared roster watches."""

    def __init__(self, per_session: int, per_meeting: int) -> None:
        self.per_session = per_session
        self.per_meeting = per_meeting
        self._sessions: collections.Counter[str] = collections.Counter()
        self._meetings: collections.Counter[str] = collections.Counter()
        # One roster (or support) stream per topic and session, shared by the session's pages of it.
        self._watches: FanOuts[dict] = FanOuts(name="svpl-meeting-watch", backlog=BACKLOG,
                                               errors=(grpc.aio.AioRpcError,), open_fans=ROSTER_WATCHES)

    def take(self, session_id: str, meeting_id: str) -> None:
        """Count a new page, or refuse it (Problem 429) over either cap."""
        if self._sessions[session_id] >= self.per_session:
            raise Problem(429, f"för många öppna mötesflöden för den här inloggningen (högst {self.per_session}): "
                               "stäng en flik", reason="TOO_MANY_STREAMS")
        if self._meetings[meeting_id] >= self.per_meeting:
            raise Problem(429, "för många öppna mötesflöden för det här mötet just nu: försök igen om en stund",
                          reason="TOO_MANY_STREAMS")
        self._sessions[session_id] += 1
        self._meetings[meeting_id] += 1

    def give_back(self, session_id: str, meeting_id: str) -> None:
        for counter, key in ((self._sessions, session_id), (self._meetings, meeting_id)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def watch(self, topic: str, session_id: str, open_call) -> FanOut[dict]:
        """The shared stream of `topic` (a meeting id, or a desk's feed) for this session: each event
        as JSON (each carries the whole state, so the latest one is a new page's snapshot)."""
        def open_source():
            call = open_call()

            async def events():
                async for event in call:
                    yield protojson.to_json(event)
            return events(), call.cancel

        return self._watches.get(f"{session_id}|{topic}", open_source)


EventStreamsDep = Annotated[EventStreams, Depends(get_event_streams)]


async def _session_ends(keys: auth.KeySet, session: Session) -> Problem:
    """Returns when the session is logged out (the revocation list this process follows) or expires."""
    revocations = keys.revocations
    step = min(1.0, revocations.poll) if revocations else 1.0
    while True:
        if revocations is not None and revocations.is_revoked(session.caller.token_id):
            return Problem(401, "du har loggat ut: logga in igen", reason="LOGGED_OUT")
        if session.expires_at and time.time() >= session.expires_at:
            return Problem(401, "inloggningen har gått ut: logga in igen", reason="SESSION_EXPIRED")
        await asyncio.sleep(step)


@router.websocket("/api/v1/meetings/{meeting_id}/events")
@access.relays("roster", "WatchMeeting")
async def meeting_events(ws: WebSocket, meeting_id: str, backends: BackendsDep, settings: SettingsDep,
                         streams: EventStreamsDep) -> None:
    if await refused_origin(ws, settings):
        return
    if not MEETING_ID.match(meeting_id):
        await _refuse(ws, Problem(400, "meeting_id: inte ett mötes-id"))
        return
    await stream_events(ws, backends, streams, meeting_id, lambda session: access.stub_method(ws, backends.roster)(
        roster_pb2.WatchMeetingRequest(meeting_id=meeting_id), metadata=clients.metadata(session.token)))


async def stream_events(ws: WebSocket, backends: Backends, streams: EventStreams,
                        topic: str | Callable[[Session], str], open_call: Callable[[Session], object],
                        snapshot_kind: str = SNAPSHOT) -> None:
    """Relay a server stream (`open_call(session)`, the person's own token) to this WebSocket as
    JSON, one message per event, shared by the session's pages of `topic` (a meeting id, or a
    function of the session); the caller has checked the origin. Refusals are sent as a problem
    and a 4000 + status close code."""
    try:
        session = await session_from(ws, backends.keys)
    except Problem as problem:
        await _refuse(ws, problem)
        return
    token_id = session.caller.token_id
    topic = topic(session) if callable(topic) else topic
    try:
        streams.take(token_id, topic)
    except Problem as problem:
        await _refuse(ws, problem)
        return
    try:
        watch = streams.watch(topic, token_id, lambda: open_call(session))
        await _relay(ws, backends, watch, session, snapshot_kind)
    finally:
        streams.give_back(token_id, topic)


async def _relay(ws: WebSocket, backends: Backends, watch: FanOut[dict], session: Session, snapshot_kind: str) -> None:
    page = watch.join(lambda last: {**last, "kind": snapshot_kind})
    OPEN_EVENT_STREAMS.inc()
    try:
        await ws.accept()

        async def client_gone() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await ws.receive_text()

        async def relay() -> Problem | None:
            while True:
                item = await page.get()
                if isinstance(item, SourceEnded):
                    await ws.close(code=1000, reason="the meeting stream ended")
                    return None
                if isinstance(item, Lagging):
                    await ws.close(code=1013, reason="too far behind: reconnect")
                    return None
                if isinstance(item, grpc.aio.AioRpcError):
                    return None if item.code() == grpc.StatusCode.CANCELLED else from_rpc_error(item)
                await ws.send_text(json.dumps(item, ensure_ascii=False))

        # Whichever ends first ends all: a page closed (or its network gone) leaves the shared
        # stream at once, not at the meeting's next change; a logout or expiry closes the page.
        tasks = [asyncio.create_task(client_gone()), asyncio.create_task(relay()),
                 asyncio.create_task(_session_ends(backends.keys, session))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finished = done.pop()
            problem = None if finished is tasks[0] else finished.result()
            if problem is not None:
                with contextlib.suppress(Exception):
                    await ws.send_text(json.dumps({"error": problem.body(ws.url.path)}))
                    await ws.close(code=4000 + problem.status, reason=problem.detail[:100])
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        OPEN_EVENT_STREAMS.dec()
        await watch.leave(page)
