"""A participant on each network they really have reaches a meeting: real aiortc peers in Linux
network namespaces (tests/network/netns.py), the media service (and coturn) in the root namespace
as "the cluster". Each test has one participant on the built network and one on the cluster side,
and both must receive the other's audio and video."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from aiortc import RTCIceServer
from svpl.media.v1 import media_pb2

from devstack import netns
from devstack.peers import Peer
from devstack.pki import turn_certificate
from services.gateway.routes.joining import turn_credentials
from services.media.quality import HIGH_DELAY, POOR_CONNECTION
from tests.media.conftest import INSTANCE, MediaWorld
from tests.polling import poll

pytestmark = pytest.mark.slow


@pytest.fixture
def world_factory(system_factory, keyring, service_token):
    async def make(**media) -> MediaWorld:
        system = await system_factory(["identity", "media"], overrides={"media": {"instance_id": INSTANCE, **media}})
        return MediaWorld(system, keyring, service_token)

    return make


@dataclass
class Meeting:
    meeting_id: str
    remote: Peer  # on the built network, its loop in the client namespace
    local: Peer  # on the cluster side
    answer: str


async def _new_peer(ice_servers: list[RTCIceServer] | None) -> Peer:
    return Peer(ice_servers=ice_servers)


async def meet(world: MediaWorld, client: netns.NetnsLoop, ice_servers: list[RTCIceServer] | None = None,
               timeout: float = 30.0) -> Meeting:
    """A meeting with one participant on the client's network and one on the cluster side; returns
    once each receives the other's audio and video."""
    meeting_id = await world.open_room()
    local = Peer()
    await world.join(local, meeting_id, "p-cluster")
    remote = await client.call(_new_peer(ice_servers))
    offer = await client.call(remote.offer())
    response = await world.media.Negotiate(
        media_pb2.NegotiateRequest(join_token=world.join_token(meeting_id, "p-client")[0], sdp_offer=offer),
        metadata=world.gateway_md)
    await client.call(remote.answer(response.sdp_answer))
    route_retransmissions(remote)
    meeting = Meeting(meeting_id, remote, local, response.sdp_answer)
    await poll(lambda: all(p.video_received() and p.audio_received() for p in (remote, local)), timeout,
               lambda: f"audio and video both ways (client received {remote.received}, cluster {local.received})")
    return meeting


def route_retransmissions(peer: Peer) -> None:
    """Let the client's receive slots take media's retransmissions, as a browser does. aiortc's RTP
    router (1.16) knows each receiver by its primary SSRC only and routes any other SSRC by payload
    type, which the two video slots share, so a retransmission (RTX, on the SSRC the answer pairs
    with the primary in `a=ssrc-group:FID`) would be dropped and the slot's video stay frozen after
    one lost packet. Browsers route by the answer's SSRCs: so does this test client."""
    for t in peer.pc.getTransceivers():
        router = t.receiver.transport._rtp_router
        for rtx_ssrc in getattr(t.receiver, "_RTCRtpReceiver__rtx_ssrc", {}):
            router.ssrc_table[rtx_ssrc] = t.receiver


def nominated(peer: Peer):
    """The client's nominated ICE candidate pair (aioice's, through aiortc's transports)."""
    for t in peer.pc.getTransceivers():
        if t.sender.transport is not None:
            return t.sender.transport.transport._connection._nominated.get(1)
    return None


async def leave(client: netns.NetnsLoop, meeting: Meeting | None) -> None:
    if meeting is not None:
        await meeting.local.close()
        await client.call(meeting.remote.close())
    client.close()


async def test_client_behind_nat_with_udp_open_connects(topology, world_factory):
    """A nurse's 4G or a home router: the client has a private address behind a NAT that lets its
    own outgoing UDP (and the answers) through and nothing else in."""
    network = netns.behind_nat(topology)
    world = await world_factory(**network.media)
    client = netns.NetnsLoop(network.client_ns)
    meeting = None
    try:
        meeting = await meet(world, client)
        pair = nominated(meeting.remote)
        assert pair is not None and pair.local_candidate.host == network.facts["client_addr"]  # NATed on the way
    finally:
        await leave(client, meeting)
        await network.close()


async def test_client_allowed_only_outgoing_tcp_443_connects_through_turn_over_tls(topology, world_factory,
                                                                                 tmp_path, monkeypatch):
    """A hospital network: the firewall lets out only TCP to port 443 (HTTPS). The client reaches
    coturn's TLS listener on 443 with TURN REST credentials as the gateway mints them; coturn relays
    to media over UDP inside the cluster."""
    network = await netns.https_only(topology, str(tmp_path), turn_certificate(tmp_path))
    monkeypatch.setenv("SSL_CERT_FILE", network.facts["ca"])  # the client trusts the test CA only
    client = netns.NetnsLoop(network.client_ns)
    meeting = None
    try:
        world = await world_factory(**network.media)
        meeting = await meet(world, client, network.ice_servers)
        pair = nominated(meeting.remote)
        assert pair is not None and pair.local_candidate.type == "relay"
        assert network.ice_servers[0].urls.startswith(f"turns:{network.facts['turn_addr']}:443")
        assert " typ relay" in meeting.remote.pc.localDescription.sdp
        # Someone with credentials that expired, or that were not minted with the region's secret,
        # gets no relay from coturn (and so, on this network, no way in).
        valid = network.ice_servers[0]
        expires, user = valid.username.split(":", 1)
        expired = RTCIceServer(urls=valid.urls, username=f"{int(time.time()) - 60}:{user}", credential=valid.credential)
        forged_name = f"{int(time.time()) + 3600}:{user}"
        forged = RTCIceServer(urls=valid.urls, username=forged_name,
                              credential=turn_credentials("not-the-secret", user, 3600, time.time())[1])
        for servers in ([expired], [forged]):
            intruder = await client.call(_new_peer(servers))
            try:
                offer = await client.call(intruder.offer())
                assert " typ relay" not in offer and " typ host" in offer
            finally:
                await client.call(intruder.close())
        assert int(expires) > time.time()
    finally:
        await leave(client, meeting)
        await network.close()


async def test_media_reachable_only_through_its_node_address_connects(topology, world_factory):
    """turn.enabled=false: the node publishes the pod's UDP range (hostPort: the same port numbers,
    DNAT to the pod) and nothing else of the pod network is reachable from outside; media's answer
    carries the node's address (SVPL_NODE_IP) and the client connects to it."""
    network = netns.node_address_only(topology)
    node_ip, (low, high) = network.facts["node_ip"], network.facts["ports"]
    world = await world_factory(**network.media)
    client = netns.NetnsLoop(network.client_ns)
    meeting = None
    try:
        meeting = await meet(world, client)
        assert f" {node_ip} " in meeting.answer and "typ srflx" in meeting.answer
        pair = nominated(meeting.remote)
        assert pair is not None and pair.remote_candidate.host == node_ip
        assert low <= pair.remote_candidate.port <= high
    finally:
        await leave(client, meeting)
        await network.close()


async def test_client_on_a_weak_link_keeps_audio_and_video_gets_the_warning_and_recovers(topology, world_factory):
    """A patient's home on a poor mobile link: 2 % random loss each way (iptables statistic), 500
    kbit/s each way (tc tbf), 200 ms added each way (a user-space relay, this kernel has no netem).
    Audio and video keep flowing, the quality snapshot the portal shows warns of a poor connection,
    and the warning goes once the link clears."""
    network = await netns.weak_link(topology)
    world = await world_factory(**network.media)
    client = netns.NetnsLoop(network.client_ns)
    meeting = None

    async def client_quality():
        assert meeting is not None
        snap = await world.media.GetQualitySnapshot(
            media_pb2.GetQualitySnapshotRequest(meeting_id=meeting.meeting_id, participant_id="p-client"),
            metadata=world.gateway_md)
        return snap.stats[0]

    try:
        meeting = await meet(world, client, timeout=45)
        poor = await poll(client_quality, 30, "a poor-connection warning for the client's delay", interval=0.5,
                          until=lambda s: s.poor and s.round_trip_ms > 300)
        assert poor.warnings[0] == POOR_CONNECTION and HIGH_DELAY in poor.warnings
        # Audio both ways and the client's video keep coming on the weak link. (Video towards the aiortc
        # client can stall for good after a lost packet whose retransmission is lost too; video towards
        # a browser on this link is tested in test_weak_link_browser.py: docs/NETWORK.md "Known gaps".)
        for received in (meeting.remote.audio_received, meeting.local.video_received, meeting.local.audio_received):
            before = sum(r.frames for r in received())
            await poll(lambda received=received, before=before: sum(r.frames for r in received()) > before + 5, 10,
                       lambda received=received: f"frames still arriving on the weak link ({received.__name__})")

        network.facts["clear"]()
        # The warning goes once the link clears (jitter too: media counts audio's only, see quality.py).
        good = await poll(client_quality, 30, "the warning gone once the link cleared", interval=0.5,
                          until=lambda s: not s.poor)
        assert good.round_trip_ms < 300 and good.packet_loss <= 0.05 and good.jitter_ms <= 50
        frames = sum(r.frames for r in meeting.local.video_received())
        await poll(lambda: sum(r.frames for r in meeting.local.video_received()) > frames + 10, 10,
                   "the client's video after the link cleared")
    finally:
        await leave(client, meeting)
        await network.close()
