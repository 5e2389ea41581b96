"""Only a valid join token for this instance and an open room gets a peer connection."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from svpl.identity.v1 import identity_pb2
from svpl.media.v1 import media_pb2

from devstack.peers import Peer
from services.media.rooms import PeerCounter
from tests.media.conftest import INSTANCE


async def refused(world, token: str, sdp: str, code: grpc.StatusCode, meeting_id: str = "") -> str:
    created, live = PeerCounter.created, len(PeerCounter.live)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=sdp, meeting_id=meeting_id),
                                    metadata=world.gateway_md)
    assert err.value.code() == code, err.value.details()
    assert PeerCounter.created == created, "a peer connection was created for a refused offer"
    assert len(PeerCounter.live) == live
    return err.value.details() or ""


async def test_bad_join_tokens_get_no_peer_connection(world):
    meeting = await world.open_room()
    peer = Peer()
    try:
        sdp = await peer.offer()
        good, _ = world.join_token(meeting, "p1")
        # Garbage, and a token signed by someone else's key.
        await refused(world, "not-a-token", sdp, grpc.StatusCode.UNAUTHENTICATED)
        await refused(world, good[:-4] + "AAAA", sdp, grpc.StatusCode.UNAUTHENTICATED)
        await refused(world, "", sdp, grpc.StatusCode.UNAUTHENTICATED)
        # Expired.
        expired, _ = world.join_token(meeting, "p1", ttl=dt.timedelta(seconds=-30))
        await refused(world, expired, sdp, grpc.StatusCode.UNAUTHENTICATED)
        # A session token is not a join token.
        session, _, _ = world.keyring.issue_session_token(
            person_id="SE2321000057-1001", id_kind="hsa_id", name="Vera", method="siths", assurance="high", roles=["staff"])
        await refused(world, session, sdp, grpc.StatusCode.UNAUTHENTICATED)
        # Revoked (identity's revocation list, as roster revokes a removed participant's token).
        revoked, token_id = world.join_token(meeting, "p2")
        await world.system.stub("identity").RevokeTokens(
            identity_pb2.RevokeTokensRequest(token_id=token_id, reason="removed"), metadata=world.roster_md)
        await refused(world, revoked, sdp, grpc.StatusCode.UNAUTHENTICATED)
        # Wrong instance.
        other, _ = world.join_token(meeting, "p1", instance="media-other")
        assert "instance" in await refused(world, other, sdp, grpc.StatusCode.PERMISSION_DENIED)
        # Wrong meeting: for a room not open here, and for another meeting than the one asked for.
        elsewhere, _ = world.join_token("m-not-here", "p1")
        assert "not open" in await refused(world, elsewhere, sdp, grpc.StatusCode.FAILED_PRECONDITION)
        second = await world.open_room()
        assert "another meeting" in await refused(world, good, sdp, grpc.StatusCode.PERMISSION_DENIED, meeting_id=second)
        # Only the gateway relays offers.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=good, sdp_offer=sdp), metadata=world.roster_md)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert not world.rooms.rooms[meeting].participants
        # The valid token for this instance and meeting is admitted.
        response = await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=good, sdp_offer=sdp, meeting_id=meeting),
                                               metadata=world.gateway_md)
        assert "a=candidate" in response.sdp_answer  # non-trickle: the answer carries the gathered candidates
        # max-bundle: every m-line in one BUNDLE group (aiortc issue 1414), one ICE/DTLS transport.
        mids = [line.split(":", 1)[1] for line in response.sdp_answer.splitlines() if line.startswith("a=mid:")]
        group = next(line for line in response.sdp_answer.splitlines() if line.startswith("a=group:BUNDLE"))
        assert len(mids) == 6 and group.split()[1:] == mids
        assert len({t.receiver.transport for t in world.rooms.rooms[meeting].participants["p1"].pc.getTransceivers()}) == 1
        assert world.rooms.rooms[meeting].participants["p1"].connection_id == response.connection_id
    finally:
        await peer.close()


@pytest.mark.parametrize("sdp", ["", "hello", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
                                 "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"])
async def test_malformed_offer_is_invalid_argument_and_leaks_no_peer_connection(world, sdp):
    meeting = await world.open_room()
    token, _ = world.join_token(meeting, "p1")
    live = len(PeerCounter.live)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=sdp), metadata=world.gateway_md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sdp_offer" in err.value.details()
    assert len(PeerCounter.live) == live
    assert not world.rooms.rooms[meeting].participants


async def test_an_offer_without_vp8_is_refused_without_a_leak(world):
    meeting = await world.open_room()
    token, _ = world.join_token(meeting, "p1")
    peer = Peer()
    try:
        sdp = await peer.offer()
        # Remove every VP8 payload type from the video m-lines.
        lines, vp8 = [], set()
        for line in sdp.split("\r\n"):
            if line.startswith("a=rtpmap:") and "VP8" in line:
                vp8.add(line.split(":")[1].split()[0])
        for line in sdp.split("\r\n"):
            if line.startswith("m=video"):
                parts = line.split()
                line = " ".join(parts[:3] + [p for p in parts[3:] if p not in vp8])
            elif any(line.startswith(f"a={k}:{pt} ") or line == f"a={k}:{pt}"
                     for pt in vp8 for k in ("rtpmap", "fmtp", "rtcp-fb")):
                continue
            lines.append(line)
        h264_only = "\r\n".join(lines)
        live = len(PeerCounter.live)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=h264_only),
                                        metadata=world.gateway_md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(PeerCounter.live) == live
    finally:
        await peer.close()


def test_instance_id_is_the_setting(world):
    assert world.rooms.instance_id == INSTANCE
