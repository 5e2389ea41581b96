"""The gateway keeps no admissions of its own: a join admitted by one replica is negotiated, measured
and named by another (what it needs is in the signed join token and in roster's GetMyAdmission),
and a join token is refused when it is not the caller's own, for this meeting, untampered, for the
room's media instance now. Two gateway apps sharing nothing but the services behind them."""

from __future__ import annotations

import base64
import json

from svpl.identity.v1 import identity_pb2

from devstack.peers import Peer
from services.gateway.app import create_app
from tests.gateway.conftest import COORDINATOR, MUNICIPALITY_STAFF, REGION_STAFF, Browser, gateway_settings
from tests.gateway.flow import book_video_meeting, live_meeting_with_staff, register, start
from tests.polling import poll


def on(app, browser: Browser) -> Browser:
    """The same browser (its cookies) talking to another replica."""
    other = Browser(app)
    other.http.cookies = browser.http.cookies
    return other


def with_claims(token: str, **changes) -> str:
    """The token with its payload rewritten and the signature kept (what an attacker can do)."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def negotiate(browser: Browser, meeting_id: str, token: str, offer: str = "v=0"):
    return await browser.post(f"/api/v1/meetings/{meeting_id}/negotiation", json={"join_token": token, "sdp_offer": offer})


async def test_admitted_by_one_replica_negotiated_measured_and_named_by_another(gateway):
    first, system, new_browser = gateway
    second = create_app(gateway_settings(system))
    coordinator, staff = new_browser(), new_browser()
    meeting_id = await live_meeting_with_staff(coordinator, staff)
    staff_there = on(second, staff)
    peer = Peer()
    try:
        admitted = await staff.post(f"/api/v1/meetings/{meeting_id}/admission")
        assert admitted.status_code == 200, admitted.text
        answer = await negotiate(staff_there, meeting_id, admitted.json()["join_token"], await peer.offer())
        assert answer.status_code == 200, answer.text
        await peer.answer(answer.json()["sdp_answer"])
        for replica in (staff, staff_there):
            quality = await replica.get(f"/api/v1/meetings/{meeting_id}/quality")
            assert quality.status_code == 200, quality.text
            assert {s["participant_id"] for s in quality.json()["stats"]} <= {admitted.json()["participant_id"]}
            tiles = await replica.get(f"/api/v1/meetings/{meeting_id}/tiles")
            assert tiles.status_code == 200, tiles.text
        # A reconnect, admitted by the other replica this time and negotiated by the first.
        await peer.close()
        peer = Peer()
        again = await staff_there.post(f"/api/v1/meetings/{meeting_id}/admission")
        assert again.status_code == 200, again.text
        answer = await negotiate(staff, meeting_id, again.json()["join_token"], await peer.offer())
        assert answer.status_code == 200, answer.text
        await peer.answer(answer.json()["sdp_answer"])
        await poll(lambda: peer.pc.connectionState == "connected", 20, what="the reconnected peer connected")
    finally:
        await peer.close()
        await staff_there.close()
        await second.state.backends.close()


async def test_a_join_token_not_the_callers_own_for_this_meeting_and_room_is_refused(gateway):
    first, system, new_browser = gateway
    second = create_app(gateway_settings(system))
    coordinator, staff, attacker = new_browser(), new_browser(), new_browser()
    await coordinator.login(COORDINATOR)
    await staff.login(REGION_STAFF)
    await attacker.login(MUNICIPALITY_STAFF)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    other_meeting = (await book_video_meeting(coordinator, patient="198112289874"))["meeting_id"]
    for m in (meeting_id, other_meeting):
        await register(coordinator, m, "Rita Region", "PARTICIPANT_ROLE_REGION_STAFF", REGION_STAFF)
        await start(coordinator, m)
    mona = await register(coordinator, meeting_id, "Mona Kommun", "PARTICIPANT_ROLE_MUNICIPALITY_STAFF",
                          MUNICIPALITY_STAFF)
    attacker_there = on(second, attacker)
    try:
        ritas = (await staff.post(f"/api/v1/meetings/{meeting_id}/admission")).json()
        assert (await attacker.post(f"/api/v1/meetings/{meeting_id}/admission")).status_code == 200

        # Another person's token (the attacker is in the meeting too, with a valid login): refused.
        stolen = await negotiate(attacker_there, meeting_id, ritas["join_token"])
        assert stolen.status_code == 403 and stolen.json()["reason"] == "ADMISSION_NOT_YOURS", stolen.text
        # Rita's token rewritten to name the attacker's own participant: the signature no longer holds.
        forged = await negotiate(attacker_there, meeting_id, with_claims(ritas["join_token"], pid=mona["participant_id"],
                                                                          sub=mona["participant_id"]))
        assert forged.status_code == 409 and forged.json()["reason"] == "ADMISSION_UNKNOWN", forged.text
        # A token of another meeting (Rita's own, valid there) is not one for this meeting.
        elsewhere = (await staff.post(f"/api/v1/meetings/{other_meeting}/admission")).json()
        crossed = await negotiate(on(second, staff), meeting_id, elsewhere["join_token"])
        assert crossed.status_code == 409 and crossed.json()["reason"] == "ADMISSION_UNKNOWN", crossed.text
        # A genuine token for the attacker's own participant but another media instance than the room's.
        issued = await system.stub("identity").IssueJoinToken(identity_pb2.IssueJoinTokenRequest(
            meeting_id=meeting_id, participant_id=mona["participant_id"], media_instance="media-elsewhere"),
            metadata=(("authorization", f"Bearer {system.tokens['roster']}"),))
        moved = await negotiate(attacker_there, meeting_id, issued.token)
        assert moved.status_code == 409 and moved.json()["reason"] == "ADMISSION_MOVED", moved.text
        # A session token is no join token.
        session = attacker.http.cookies.get("svpl_session", "")
        assert session
        assert (await negotiate(attacker_there, meeting_id, session)).json()["reason"] == "ADMISSION_UNKNOWN"
        # Quality and tiles of a meeting the attacker is not admitted to: refused by every replica alike.
        for replica in (attacker, attacker_there):
            for what in ("quality", "tiles"):
                refused = await replica.get(f"/api/v1/meetings/{other_meeting}/{what}")
                assert refused.status_code == 409 and refused.json()["reason"] == "NOT_JOINED", refused.text
    finally:
        await attacker_there.close()
        await second.state.backends.close()
