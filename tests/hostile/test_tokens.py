"""Hostile tokens: tampered (a flipped signature byte, a changed claim), expired, replayed,
cross-meeting, wrong kind (session ↔ join), and service tokens used as a session cookie are refused
at the gateway (401/409 problem) and at the services (UNAUTHENTICATED / PERMISSION_DENIED),
and a refused token changes nothing stored. A join token admits one connection, once."""

from __future__ import annotations

import base64
import datetime as dt
import json

import grpc
import pytest
from svpl.media.v1 import media_pb2
from svpl.roster.v1 import roster_pb2

from devstack.harness import as_token
from devstack.peers import Peer
from services.media.rooms import PeerCounter
from tests.gateway.conftest import COORDINATOR, REGION_STAFF
from tests.gateway.flow import book_video_meeting, register, start
from tests.hostile.conftest import changed, settled
from tests.media.conftest import INSTANCE, world  # noqa: F401


def flip_signature(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{body}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"


def change_claim(token: str, **claims) -> str:
    """The same signature over a payload with other claims (e.g. more roles, another meeting)."""
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(claims)
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"{head}.{body}.{sig}"


def unsigned(token: str) -> str:
    """alg "none": the classic downgrade."""
    _, body, _ = token.split(".")
    head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    return f"{head}.{body}."


async def test_a_join_token_admits_once_and_a_replay_gets_no_peer_connection(world):  # noqa: F811
    meeting = await world.open_room()
    token, token_id = world.join_token(meeting, "p1")
    first, second, third = Peer(), Peer(), Peer()
    try:
        await world.join(first, meeting, "p1", token)
        created, live = PeerCounter.created, len(PeerCounter.live)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=await second.offer()),
                                        metadata=world.gateway_md)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "join token already used" in err.value.details()
        assert (PeerCounter.created, len(PeerCounter.live)) == (created, live)
        connection = world.rooms.rooms[meeting].participants["p1"].connection_id
        # The replay did not replace the first connection; a newly admitted token does (a reconnect).
        await world.join(third, meeting, "p1")
        assert world.rooms.rooms[meeting].participants["p1"].connection_id != connection
        # The use is recorded durably, expiring with the token.
        db = world.system.running["media"].component.mongo[world.system.settings("media").database_name]
        used = await db.used_join_tokens.find_one({"_id": token_id})
        assert used["meeting_id"] == meeting and used["expires_at"] > dt.datetime.now(dt.timezone.utc)
        indexes = await db.used_join_tokens.index_information()
        assert any(i.get("expireAfterSeconds") == 0 and i["key"] == [("expires_at", 1)] for i in indexes.values())
    finally:
        for p in (first, second, third):
            await p.close()


async def test_a_token_refused_for_a_bad_offer_stays_usable(world):  # noqa: F811
    meeting = await world.open_room()
    token, _ = world.join_token(meeting, "p1")
    peer = Peer()
    try:
        offer = await peer.offer()
        broken = offer.replace("a=fingerprint:", "a=fingerprint-x:")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=broken),
                                        metadata=world.gateway_md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await world.join(peer, meeting, "p1", token)
    finally:
        await peer.close()


async def test_tampered_tokens_are_refused_by_the_media_service(world, keyring):  # noqa: F811
    meeting, other = await world.open_room(), await world.open_room()
    token, _ = world.join_token(meeting, "p1")
    peer = Peer()
    try:
        sdp = await peer.offer()
        live = len(PeerCounter.live)
        for bad in (flip_signature(token), change_claim(token, mid=other), change_claim(token, inst="media-x"),
                    unsigned(token), change_claim(token, exp=4102444800)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=bad, sdp_offer=sdp),
                                            metadata=world.gateway_md)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
        # Cross-meeting: a valid token for one meeting, offered for the other.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=sdp, meeting_id=other),
                                        metadata=world.gateway_md)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A service token is no join token either.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.Negotiate(media_pb2.NegotiateRequest(
                join_token=keyring.issue_service_token("gateway"), sdp_offer=sdp), metadata=world.gateway_md)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert len(PeerCounter.live) == live and not world.rooms.rooms[other].participants
        # The genuine token was not spent by the refusals.
        await world.join(peer, meeting, "p1", token)
    finally:
        await peer.close()


async def test_hostile_bearer_tokens_are_unauthenticated_at_the_services(system_factory, person_token, keyring):
    system = await system_factory(["identity", "roster"])
    roster = system.stub("roster")
    good = person_token("coordinator")
    join, _, _ = keyring.issue_join_token(meeting_id="m1", participant_id="p1", media_instance="i",
                                          ttl=dt.timedelta(minutes=5))
    expired = person_token("coordinator", ttl=dt.timedelta(seconds=-60))
    hostile = {
        "flipped signature": flip_signature(good),
        "changed claim": change_claim(good, roles=["coordinator", "support_desk", "access_log"]),
        "alg none": unsigned(good),
        "expired": expired,
        "join token as bearer": join,
        "garbage": "a.b.c",
    }
    for what, token in hostile.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await roster.ListMyMeetings(roster_pb2.ListMyMeetingsRequest(), metadata=as_token(token))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, what
    # A person's session token where a service is required.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await roster.ResolveDialInCode(roster_pb2.ResolveDialInCodeRequest(dial_in_code="123456"),
                                       metadata=as_token(good))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_hostile_session_cookies_and_join_tokens_are_refused_at_the_gateway(gateway, keyring):
    app, system, new_browser = gateway
    coordinator, staff = new_browser(), new_browser()
    await coordinator.login(COORDINATOR)
    await staff.login(REGION_STAFF)
    meeting_id = (await book_video_meeting(coordinator))["meeting_id"]
    other_meeting = (await book_video_meeting(coordinator))["meeting_id"]
    await register(coordinator, meeting_id, "Rita Region", "PARTICIPANT_ROLE_REGION_STAFF", REGION_STAFF)
    await start(coordinator, meeting_id)
    await start(coordinator, other_meeting)
    session = coordinator.http.cookies.get("svpl_session")

    # Session cookies that are not a session of this system.
    service = system.tokens["gateway"]
    admitted = (await staff.post(f"/api/v1/meetings/{meeting_id}/admission")).json()
    forged = {
        "flipped signature": flip_signature(session),
        "changed claim": change_claim(session, roles=["support_desk", "access_log", "coordinator"]),
        "alg none": unsigned(session),
        "expired": keyring.issue_session_token(person_id=COORDINATOR, id_kind="hsa_id", name="V", method="siths",
                                               assurance="high", roles=["coordinator"],
                                               ttl=dt.timedelta(seconds=-60))[0],
        "service token": service,
        "join token": admitted["join_token"],
    }
    intruder = new_browser()
    await intruder.prime()
    before = await settled(system, frozenset({"audit.access_records"}))
    for what, token in forged.items():
        intruder.http.cookies.set("svpl_session", token, domain="gateway.test")
        for response in (await intruder.get("/api/v1/session"), await intruder.get(f"/api/v1/meetings/{meeting_id}"),
                         await intruder.post(f"/api/v1/meetings/{meeting_id}/abort", json={"reason": "x"})):
            assert response.status_code == 401, (what, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json"

    # Join tokens at the signalling endpoint: a session token, a tampered one, one for another meeting.
    peer = Peer()
    try:
        offer = await peer.offer()
        for what, token, meeting in (("session token as join token", session, meeting_id),
                                     ("flipped", flip_signature(admitted["join_token"]), meeting_id),
                                     ("other meeting", admitted["join_token"], other_meeting)):
            response = await staff.post(f"/api/v1/meetings/{meeting}/negotiation",
                                        json={"join_token": token, "sdp_offer": offer})
            assert 400 <= response.status_code < 500, (what, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        assert not changed(before, await settled(system, frozenset({"audit.access_records"})))

        # Replayed: the same admission answers once; the portal admits again before each negotiation.
        first = await staff.post(f"/api/v1/meetings/{meeting_id}/negotiation",
                                 json={"join_token": admitted["join_token"], "sdp_offer": offer})
        assert first.status_code == 200, first.text
        await peer.answer(first.json()["sdp_answer"])
        again = Peer()
        try:
            replay = await staff.post(f"/api/v1/meetings/{meeting_id}/negotiation",
                                      json={"join_token": admitted["join_token"], "sdp_offer": await again.offer()})
            assert replay.status_code == 401 and "already used" in replay.json()["detail"], replay.text
            readmitted = (await staff.post(f"/api/v1/meetings/{meeting_id}/admission")).json()
            renegotiated = await staff.post(f"/api/v1/meetings/{meeting_id}/negotiation",
                                            json={"join_token": readmitted["join_token"],
                                                  "sdp_offer": again.pc.localDescription.sdp})
            assert renegotiated.status_code == 200, renegotiated.text
        finally:
            await again.close()
    finally:
        await peer.close()
