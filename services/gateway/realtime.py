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


class Watch:
    """One roster WatchMeeting stream, fanned out to the pages that subscribe. A page that joins
    late gets the latest event as its snapshot (every event carries the whole meeting)."""

    def __init__(self, call, on_idle, snapshot_kind: str = SNAPSHOT) -> None:
        self._call = call
        self._snapshot_kind = snapshot_kind
        self._on_idle = on_idle
        self._pages: set[asyncio.Queue] = set()
        self._last: dict | None = None
        self._end: tuple[str, object] | None = None
        self._task = asyncio.create_task(self._pump(), name="svpl-meeting-watch")
        ROSTER_WATCHES.inc()

    async def _pump(self) -> None:
        try:
            async for event in self._call:
                self._last = protojson.to_json(event)
                for page in list(self._pages):
                    self._put(page, ("event", self._last))
            self._end = ("end", None)
        except grpc.aio.AioRpcError as exc:
            self._end = ("error", exc)
        finally:
            # Ended or cancelled: a page that comes now opens a new stream (and a new snapshot).
            self._on_idle(self)
            ROSTER_WATCHES.dec()
        for page in list(self._pages):
            self._put(page, self._end)

    def _put(self, page: asyncio.Queue, item: tuple[str, object]) -> None:
        try:
            page.put_nowait(item)
        except asyncio.QueueFull:  # a page too slow to keep up: it ends, and the portal reconnects
            page.get_nowait()
            page.put_nowait(("lagging", None))
            self._pages.discard(page)

    def subscribe(self) -> asyncio.Queue:
        page: asyncio.Queue = asyncio.Queue(BACKLOG)
        if self._last is not None:
            page.put_nowait(("event", {**self._last, "kind": self._snapshot_kind}))
        if self._end is not None:
            page.put_nowait(self._end)
        else:
            self._pages.add(page)
        return page

    async def unsubscribe(self, page: asyncio.Queue) -> None:
        self._pages.discard(page)
        if not self._pages and not self._task.done():
            self._call.cancel()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class EventStreams:
    """This process's open event pages: the caps, and the shared roster watches."""

    def __init__(self, per_session: int, per_meeting: int) -> None:
        self.per_session = per_session
        self.per_meeting = per_meeting
        self._sessions: collections.Counter[str] = collections.Counter()
        self._meetings: collections.Counter[str] = collections.Counter()
        self._watches: dict[tuple[str, str], Watch] = {}

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

    def watch(self, topic: str, session_id: str, open_call, snapshot_kind: str = SNAPSHOT) -> Watch:
        """The shared stream of `topic` (a meeting id, or a desk's feed) for this session."""
        key = (topic, session_id)
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = Watch(open_call(), lambda w: self._forget(key, w), snapshot_kind)
        return watch

    def _forget(self, key: tuple[str, str], watch: Watch) -> None:
        if self._watches.get(key) is watch:
            del self._watches[key]


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
        watch = streams.watch(topic, token_id, lambda: open_call(session), snapshot_kind)
        await _relay(ws, backends, watch, session)
    finally:
        streams.give_back(token_id, topic)


async def _relay(ws: WebSocket, backends: Backends, watch: Watch, session: Session) -> None:
    page = watch.subscribe()
    OPEN_EVENT_STREAMS.inc()
    try:
        await ws.accept()

        async def client_gone() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await ws.receive_text()

        async def relay() -> Problem | None:
            while True:
                kind, value = await page.get()
                if kind == "event":
                    await ws.send_text(json.dumps(value, ensure_ascii=False))
                elif kind == "end":
                    await ws.close(code=1000, reason="the meeting stream ended")
                    return None
                elif kind == "lagging":
                    await ws.close(code=1013, reason="too far behind: reconnect")
                    return None
                else:
                    exc: grpc.aio.AioRpcError = value
                    return None if exc.code() == grpc.StatusCode.CANCELLED else from_rpc_error(exc)

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
        await watch.unsubscribe(page)
