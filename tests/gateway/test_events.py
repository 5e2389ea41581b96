"""The meeting events WebSocket: roster.WatchMeeting relayed as JSON (a snapshot, then every
change), only for a logged-in person and only from the portal's own origin."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.gateway.conftest import COORDINATOR
from tests.gateway.flow import book_video_meeting, start
from tests.polling import poll


def cookie_header(browser) -> str:
    return "; ".join(f"{k}={v}" for k, v in browser.http.cookies.items())


async def next_event(ws, kind: str, timeout: float = 10.0) -> dict:
    async def find():
        while True:
            event = json.loads(await ws.recv())
            if event.get("kind") == kind:
                return event

    return await asyncio.wait_for(find(), timeout)


async def test_events_start_with_a_snapshot_and_follow_agenda_and_end(served):
    address, _, _, new_browser = served
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    await start(coordinator, meeting_id)
    url = f"ws://{address}/api/v1/meetings/{meeting_id}/events"
    async with connect(url, additional_headers={"Cookie": cookie_header(coordinator),
                                                "Origin": f"http://{address}"}) as ws:
        snapshot = await next_event(ws, "MEETING_EVENT_KIND_SNAPSHOT")
        assert snapshot["meeting"]["meeting_id"] == meeting_id
        assert snapshot["meeting"]["state"] == "MEETING_STATE_LIVE"
        step = snapshot["agenda"]["step"]
        advanced = await coordinator.post(f"/api/v1/meetings/{meeting_id}/agenda/advance", json={"from_step": step})
        assert advanced.status_code == 200, advanced.text
        changed = await next_event(ws, "MEETING_EVENT_KIND_AGENDA_CHANGED")
        assert changed["agenda"]["step"] == advanced.json()["agenda"]["step"] != step
        assert (await coordinator.post(f"/api/v1/meetings/{meeting_id}/end")).status_code == 200
        ended = await next_event(ws, "MEETING_EVENT_KIND_STATE_CHANGED")
        assert ended["meeting"]["state"] == "MEETING_STATE_ENDED"


def open_streams() -> float:
    return REGISTRY.get_sample_value("svpl_gateway_event_streams") or 0.0


async def test_a_closed_page_ends_its_roster_stream_at_once(served):
    """Nothing happens in the meeting after the page goes: its stream (and roster's, and the
    database change stream behind it) still ends now, not at the meeting's next change."""
    address, _, _, new_browser = served
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    before = open_streams()
    async with connect(f"ws://{address}/api/v1/meetings/{meeting_id}/events",
                       additional_headers={"Cookie": cookie_header(coordinator), "Origin": f"http://{address}"}) as ws:
        await next_event(ws, "MEETING_EVENT_KIND_SNAPSHOT")
        assert open_streams() == before + 1
    await poll(lambda: open_streams() == before, 5, "the stream to end with its page")


async def refusal(url: str, headers: dict) -> tuple[int, dict]:
    async with connect(url, additional_headers=headers) as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except ConnectionClosed as closed:
            if closed.rcvd is None:
                raise AssertionError("the connection closed without a close frame") from closed
            return closed.rcvd.code, message
    raise AssertionError("the connection stayed open")


async def test_a_cross_site_page_cannot_open_the_events_of_a_logged_in_person(served):
    address, _, _, new_browser = served
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    code, message = await refusal(f"ws://{address}/api/v1/meetings/m1/events",
                                  {"Cookie": cookie_header(coordinator), "Origin": "https://evil.example"})
    assert code == 4403 and message["error"]["reason"] == "ORIGIN"


async def test_events_need_a_session(served):
    address, _, _, _ = served
    code, message = await refusal(f"ws://{address}/api/v1/meetings/m1/events", {"Origin": f"http://{address}"})
    assert code == 4401 and message["error"]["status"] == 401
