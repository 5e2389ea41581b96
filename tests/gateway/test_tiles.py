"""Naming the video tiles: GET /api/v1/meetings/{id}/tiles answers, for the caller's own connection
only, which receive slot (MID) shows whom, with the name roster lists as connected. Real aiortc
peers (each with its own picture size, so a slot's video proves whom it carries) through the
gateway to the real media and roster services."""

from __future__ import annotations

import asyncio

from devstack.peers import Peer
from tests.gateway.conftest import COORDINATOR, MUNICIPALITY_STAFF, PATIENT, REGION_STAFF
from tests.gateway.flow import book_video_meeting, register, start
from tests.gateway.test_signalling import join
from tests.polling import poll

SIZES = {"Vera Samordnare": (160, 120), "Rita Region": (176, 144), "Mona Kommun": (192, 144)}


async def tiles_when(browser, meeting_id: str, done, what: str) -> list[dict]:
    """Poll the caller's tiles until `done(tiles)` (media reports connections to roster as they come up)."""
    last = None
    for _ in range(150):
        response = await browser.get(f"/api/v1/meetings/{meeting_id}/tiles")
        assert response.status_code == 200, response.text
        last = response.json()["tiles"]
        if done(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last tiles: {last}")


async def test_each_caller_gets_its_own_slots_named_by_whom_they_carry(gateway):
    app, system, new_browser = gateway
    coordinator, staff, municipality, patient = new_browser(), new_browser(), new_browser(), new_browser()
    await coordinator.login(COORDINATOR)
    await staff.login(REGION_STAFF)
    await municipality.login(MUNICIPALITY_STAFF)
    await patient.login(PATIENT)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    await register(coordinator, meeting_id, "Rita Region", "PARTICIPANT_ROLE_REGION_STAFF", REGION_STAFF)
    await register(coordinator, meeting_id, "Mona Kommun", "PARTICIPANT_ROLE_MUNICIPALITY_STAFF", MUNICIPALITY_STAFF)
    await start(coordinator, meeting_id)

    # Registered but not joined (no admission by this gateway): refused, nothing about the room.
    refused = await patient.get(f"/api/v1/meetings/{meeting_id}/tiles")
    assert refused.status_code == 409 and refused.json()["reason"] == "NOT_JOINED", refused.text

    people = {"Vera Samordnare": coordinator, "Rita Region": staff, "Mona Kommun": municipality}
    peers = {name: Peer(*SIZES[name], slots=2) for name in people}
    try:
        admitted = {name: await join(people[name], meeting_id, peers[name]) for name in people}
        ids = {name: a["participant_id"] for name, a in admitted.items()}
        await poll(lambda: all(len(p.video_received()) == 2 and all(r.sizes for r in p.video_received())
                                   for p in peers.values()), 20, what="each peer receiving the other two's video")

        for name, browser in people.items():
            others = {n for n in people if n != name}
            tiles = await tiles_when(browser, meeting_id, lambda t, others=others: {x["full_name"] for x in t} == others,
                                     f"{name}'s tiles naming {sorted(others)}")
            # Only what the portal needs: no media address, no person identifier beyond a participant id.
            assert all(set(t) == {"mid", "participant_id", "full_name", "phone"} for t in tiles), tiles
            assert {t["participant_id"]: t["full_name"] for t in tiles} == {ids[n]: n for n in others}
            # Only this caller's own receive slots: each MID is one of its own recvonly transceivers, and
            # the video arriving in that slot is the named person's picture (their own size).
            own = {t.mid: t for t in peers[name].pc.getTransceivers() if t.direction == "recvonly"}
            assert {t["mid"] for t in tiles} <= set(own), (tiles, list(own))
            received = {r.mid: r for r in peers[name].received}
            video = [t for t in tiles if own[t["mid"]].kind == "video"]
            assert sorted(t["full_name"] for t in video) == sorted(others)
            for t in video:
                assert received[t["mid"]].sizes == {SIZES[t["full_name"]]}, (name, t, received[t["mid"]].sizes)

        # Removed: the removed person is refused (roster's rule, their own token relayed); the others'
        # slots no longer show them once media has dropped their connection.
        removed = await coordinator.post(f"/api/v1/meetings/{meeting_id}/removals",
                                         json={"participant_id": ids["Mona Kommun"], "reason": "test"})
        assert removed.status_code == 200, removed.text
        gone = await municipality.get(f"/api/v1/meetings/{meeting_id}/tiles")
        assert gone.status_code == 403, gone.text
        tiles = await tiles_when(staff, meeting_id, lambda t: {x["full_name"] for x in t} == {"Vera Samordnare"},
                                 "Rita's tiles without the removed participant")
        assert {t["participant_id"] for t in tiles} == {ids["Vera Samordnare"]}
    finally:
        for peer in peers.values():
            await peer.close()


async def test_tiles_of_a_meeting_the_caller_was_not_admitted_to_are_refused(gateway):
    _, _, new_browser = gateway
    coordinator, staff = new_browser(), new_browser()
    await coordinator.login(COORDINATOR)
    await staff.login(REGION_STAFF)
    first = (await book_video_meeting(coordinator))["meeting_id"]
    second = (await book_video_meeting(coordinator, patient="198112289874"))["meeting_id"]
    await register(coordinator, first, "Rita Region", "PARTICIPANT_ROLE_REGION_STAFF", REGION_STAFF)
    await start(coordinator, first)
    admitted = await staff.post(f"/api/v1/meetings/{first}/admission")
    assert admitted.status_code == 200, admitted.text
    # Admitted to one meeting is not admitted to another; an unknown id is refused the same way.
    for meeting_id in (second, "no-such-meeting"):
        other = await staff.get(f"/api/v1/meetings/{meeting_id}/tiles")
        assert other.status_code == 409 and other.json()["reason"] == "NOT_JOINED", other.text
    # Admitted but not yet connected to media: no slots, so no tiles (and no error).
    assert (await staff.get(f"/api/v1/meetings/{first}/tiles")).json() == {"tiles": []}
    anonymous = await new_browser().get(f"/api/v1/meetings/{first}/tiles")
    assert anonymous.status_code == 401, anonymous.text
