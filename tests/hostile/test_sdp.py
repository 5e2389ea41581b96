"""Hostile SDP offers at media's Negotiate: garbage, a real offer truncated or with lines dropped,
repeated or mangled, and huge offers. Each is answered (when it is still a valid offer) or refused
with INVALID_ARGUMENT on sdp_offer, never INTERNAL, and no peer connection outlives a refusal:
the process's live peer connections are exactly the room's participants after every example."""

from __future__ import annotations

import os

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from svpl.media.v1 import media_pb2

from devstack.peers import Peer
from services.media.rooms import PeerCounter
from tests.media.conftest import world  # noqa: F401

OFFER: dict = {}


def udp_sockets() -> int:
    """This process's open UDP sockets (ICE candidates are UDP sockets)."""
    inodes: set[str] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            inodes.update(line.split()[9] for line in f.readlines()[1:])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += link.startswith("socket:[") and link[8:-1] in inodes
    return count


def lines_of(sdp: str) -> list[str]:
    return [line for line in sdp.split("\r\n") if line]


@st.composite
def hostile_offers(draw, offer: str) -> str:
    lines = lines_of(offer)
    kind = draw(st.sampled_from(["garbage", "truncated", "dropped", "repeated", "mangled", "huge", "many_media"]))
    event(kind)
    if kind == "garbage":
        return draw(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
    if kind == "truncated":
        return offer[: draw(st.integers(min_value=0, max_value=len(offer)))]
    if kind == "dropped":
        drop = draw(st.sets(st.integers(min_value=0, max_value=len(lines) - 1), min_size=1, max_size=8))
        return "\r\n".join(line for i, line in enumerate(lines) if i not in drop) + "\r\n"
    if kind == "repeated":
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        return "\r\n".join(lines[: i + 1] + [lines[i]] * draw(st.integers(1, 50)) + lines[i + 1:]) + "\r\n"
    if kind == "mangled":
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        key = lines[i].split(":", 1)[0] if ":" in lines[i] else lines[i][:2]
        value = draw(st.sampled_from(["", "-1", "99999999999999999999", "\x00", "a" * 5000, "%s%s%n", "0 0 0 0"])
                     | st.text(max_size=40))
        return "\r\n".join(lines[:i] + [f"{key}:{value}"] + lines[i + 1:]) + "\r\n"
    if kind == "huge":  # one attribute line of most of a message
        return offer + "a=x-padding:" + "p" * draw(st.integers(100_000, 1_000_000)) + "\r\n"
    # Hundreds of media sections: each would become a transceiver of a peer connection.
    head, _, media = offer.partition("\r\nm=")
    section = "m=" + media.split("\r\nm=")[0]
    return head + "\r\n" + (section + "\r\n") * draw(st.integers(65, 400))


@settings(max_examples=45, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_hostile_offers_are_refused_without_leaking_a_peer_connection(world, data):  # noqa: F811
    if "meeting" not in OFFER:
        peer = Peer()
        OFFER["sdp"] = await peer.offer()
        await peer.close()
        OFFER["meeting"] = await world.open_room()
        OFFER["live"] = len(PeerCounter.live)
    meeting = OFFER["meeting"]
    sdp = data.draw(hostile_offers(OFFER["sdp"]), label="sdp_offer")
    token, _ = world.join_token(meeting, "p1")
    try:
        await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=sdp, meeting_id=meeting),
                                    metadata=world.gateway_md)
        answered = True
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        assert "sdp_offer" in err.details()
        answered = False
    event("answered" if answered else "refused")
    room = world.rooms.rooms[meeting]
    assert len(PeerCounter.live) == OFFER["live"] + len(room.participants)
    # No socket outlives a refusal either: no more UDP sockets than the first time the room looked the
    # same (fewer is fine: an answered offer no client ever connects to is closed by ICE meanwhile).
    sockets = OFFER.setdefault("udp", {}).setdefault(len(room.participants), udp_sockets())
    assert udp_sockets() <= sockets, "a refused offer left UDP sockets open"
    if answered:
        assert "p1" in room.participants
        assert sdp.count("\r\nm=") <= 64, "an offer with more media sections than any client sends was answered"


async def test_an_offer_whose_answer_fails_half_way_leaves_no_socket(world):  # noqa: F811
    """A video section's m= line dropped: aiortc takes the offer, fails creating the answer, and then
    fails closing the half-built connection; media still refuses with INVALID_ARGUMENT and stops it all."""
    meeting = await world.open_room()
    peer = Peer()
    lines = (await peer.offer()).split("\r\n")
    await peer.close()
    video = next(i for i, line in enumerate(lines) if line.startswith("m=video"))
    sdp = "\r\n".join(lines[:video] + lines[video + 1:])
    token, _ = world.join_token(meeting, "p1")
    live, sockets = len(PeerCounter.live), udp_sockets()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=sdp, meeting_id=meeting),
                                    metadata=world.gateway_md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sdp_offer" in err.value.details()
    assert (len(PeerCounter.live), udp_sockets()) == (live, sockets)
    assert not world.rooms.rooms[meeting].participants


async def test_an_offer_larger_than_any_client_sends_is_refused_before_any_peer_connection(world):  # noqa: F811
    meeting = await world.open_room()
    token, _ = world.join_token(meeting, "p1")
    peer = Peer()
    try:
        offer = await peer.offer()
        live, created = len(PeerCounter.live), PeerCounter.created
        huge = offer + "a=x-padding:" + "p" * 200_000 + "\r\n"
        with pytest.raises(grpc.aio.AioRpcError) as err:  # a 200 kB offer is not taken
            await world.media.Negotiate(media_pb2.NegotiateRequest(join_token=token, sdp_offer=huge, meeting_id=meeting),
                                        metadata=world.gateway_md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sdp_offer" in err.value.details()
        assert (len(PeerCounter.live), PeerCounter.created) == (live, created)
        await world.join(peer, meeting, "p1", token)  # the same offer at its real size is answered
    finally:
        await peer.close()
