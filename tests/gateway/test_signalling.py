"""WebRTC signalling through the gateway with real peers (aiortc stand-ins for browsers):
admission, the offer relayed to the media instance roster named, media flowing both ways,
the connected list, the caller's own connection quality; abort refuses every later join."""

from __future__ import annotations

import asyncio

from devstack.peers import Peer
from tests.gateway.flow import live_meeting_with_staff
from tests.polling import poll


async def join(browser, meeting_id: str, peer: Peer) -> dict:
    admitted = await browser.post(f"/api/v1/meetings/{meeting_id}/admission")
    assert admitted.status_code == 200, admitted.text
    answer = await browser.post(f"/api/v1/meetings/{meeting_id}/negotiation", json={
        "join_token": admitted.json()["join_token"], "sdp_offer": await peer.offer()})
    assert answer.status_code == 200, answer.text
    await peer.answer(answer.json()["sdp_answer"])
    return admitted.json()


async def test_two_peers_meet_through_the_gateway_then_abort_ends_it_for_good(gateway):
    _, _, new_browser = gateway
    coordinator, staff = new_browser(), new_browser()
    meeting_id = await live_meeting_with_staff(coordinator, staff)
    peers = [Peer(), Peer()]
    try:
        mine = await join(coordinator, meeting_id, peers[0])
        await join(staff, meeting_id, peers[1])
        await poll(lambda: all(p.video_received() and p.video_received()[0].frames > 5 for p in peers), 20,
                   what="each peer receiving the other's video")

        async def connected() -> dict:
            return (await staff.get(f"/api/v1/meetings/{meeting_id}/connected")).json()

        for _ in range(100):  # media reports the connections to roster as they come up
            listed = await connected()
            if listed["count"] == 2:
                break
            await asyncio.sleep(0.1)
        assert sorted(p["full_name"] for p in listed["people"]) == ["Rita Region", "Vera Samordnare"]

        quality = await coordinator.get(f"/api/v1/meetings/{meeting_id}/quality")
        assert quality.status_code == 200, quality.text
        assert [s["participant_id"] for s in quality.json()["stats"]] == [mine["participant_id"]]

        aborted = await coordinator.post(f"/api/v1/meetings/{meeting_id}/abort", json={"reason": "oidentifierad"})
        assert aborted.json()["meeting"]["state"] == "MEETING_STATE_ABORTED"
        await poll(lambda: all(p.closed.is_set() for p in peers), 10, what="media closing both connections")
        refused = await staff.post(f"/api/v1/meetings/{meeting_id}/admission")
        assert refused.status_code == 409 and refused.json()["reason"] == "ADMIT_REFUSAL_FINISHED"
    finally:
        for peer in peers:
            await peer.close()
