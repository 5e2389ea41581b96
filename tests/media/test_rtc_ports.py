"""SVPL_RTC_PORT_MIN/MAX: media's ICE host sockets inside a fixed UDP range (chart turn.enabled=false).

Real aiortc peers through real media; a 4-port range so that running out is cheap to reach."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from svpl.media.v1 import media_pb2

from devstack.embedded_db import free_port
from devstack.peers import Peer
from services.media.config import MediaSettings
from services.media.ports import advertise_node_address
from services.media.rooms import PeerCounter
from services.runtime.config import SettingsError, load_settings
from tests.media.conftest import INSTANCE, MediaWorld

SIZE = 4


def free_udp_range(size: int) -> int:
    """The first of `size` consecutive ports free on 127.0.0.1 (devstack's, never handed out twice)."""
    return free_port(udp=True, span=size)


def candidate_ports(sdp: str) -> set[int]:
    """Ports of the host candidates in an SDP (a=candidate:<foundation> <component> udp <prio> <addr> <port> typ host);
    with max-bundle every media section repeats the one transport's candidates."""
    return {int(line.split()[5]) for line in sdp.splitlines() if line.startswith("a=candidate:") and " typ host" in line}


@pytest.fixture
async def ranged(system_factory, keyring, service_token):
    low = free_udp_range(SIZE)
    system = await system_factory(["identity", "media"], overrides={"media": {
        "instance_id": INSTANCE, "rtc_port_min": low, "rtc_port_max": low + SIZE - 1, "capacity_participants": SIZE}})
    yield MediaWorld(system, keyring, service_token), range(low, low + SIZE)


async def test_peers_connect_on_ports_in_the_range_a_full_range_refuses_and_a_freed_port_is_reused(ranged):
    world, ports = ranged
    meeting = await world.open_room()
    peers = [Peer(slots=1, publish=i < 2) for i in range(SIZE)]
    extra: list[Peer] = []
    try:
        answers = {}
        for i, p in enumerate(peers):
            answers[f"p{i}"] = candidate_ports((await world.join(p, meeting, f"p{i}")).sdp_answer)
        # Each peer connection got one host socket (max-bundle, loopback only), each inside the range.
        assert all(len(a) == 1 and a <= set(ports) for a in answers.values()), answers
        assert set().union(*answers.values()) == set(ports)
        await asyncio.wait_for(asyncio.gather(*(p.connected.wait() for p in peers)), 10)
        # The client peers in this same process bound ephemeral ports as usual: only media's binds are ranged.
        assert all(port not in ports for p in peers for port in candidate_ports(p.pc.localDescription.sdp))

        # The range is full: a further offer is refused and leaves nothing behind (twice: nothing accumulates).
        live, room = len(PeerCounter.live), world.rooms.rooms[meeting]
        for n in range(2):
            late = Peer(slots=1, publish=False)
            extra.append(late)
            token, _ = world.join_token(meeting, f"late{n}")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await world.join(late, meeting, f"late{n}", token=token)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "no free media port on this instance" in err.value.details()
            assert len(PeerCounter.live) == live and set(room.participants) == {f"p{i}" for i in range(SIZE)}
            # The refused offer's join token was given back: the same token admits once a port is free.
            retry_token = token
        # Every port of the range is still held by a connected participant, none by the refusals.
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
                s.bind(("127.0.0.1", port))

        # A participant leaves: its port is the one the next offer gets.
        freed = answers["p3"]
        await world.media.Disconnect(media_pb2.DisconnectRequest(meeting_id=meeting, participant_id="p3"),
                                     metadata=world.roster_md)
        again = Peer(slots=1, publish=False)
        extra.append(again)
        response = await world.join(again, meeting, "late1", token=retry_token)
        assert candidate_ports(response.sdp_answer) == freed
        await asyncio.wait_for(again.connected.wait(), 10)
    finally:
        for p in peers + extra:
            await p.close()


@pytest.mark.parametrize(("env", "message"), [
    ({"SVPL_RTC_PORT_MIN": "40000"},
     "SVPL_RTC_PORT_MAX: Value error, SVPL_RTC_PORT_MIN and SVPL_RTC_PORT_MAX are set together"),
    ({"SVPL_RTC_PORT_MAX": "40000"},
     "SVPL_RTC_PORT_MAX: Value error, SVPL_RTC_PORT_MIN and SVPL_RTC_PORT_MAX are set together"),
    ({"SVPL_RTC_PORT_MIN": "80", "SVPL_RTC_PORT_MAX": "200"},
     "SVPL_RTC_PORT_MIN: Value error, must be 0 (ephemeral ports) or between 1024"),
    ({"SVPL_RTC_PORT_MIN": "40010", "SVPL_RTC_PORT_MAX": "40000"},
     "SVPL_RTC_PORT_MAX: Value error, must not be below SVPL_RTC_PORT_MIN (40010)"),
    ({"SVPL_RTC_PORT_MIN": "40000", "SVPL_RTC_PORT_MAX": "70000"},
     "SVPL_RTC_PORT_MAX: Input should be less than or equal to 65535"),
    ({"SVPL_RTC_PORT_MIN": "40000", "SVPL_RTC_PORT_MAX": "40031"},
     "the range 40000-40031 holds 32 ports, fewer than SVPL_CAPACITY_PARTICIPANTS (60)"),
    ({"SVPL_RTC_PORT_MIN": "40000", "SVPL_RTC_PORT_MAX": "40031", "SVPL_CAPACITY_PARTICIPANTS": "40"},
     "fewer than SVPL_CAPACITY_PARTICIPANTS (40)"),
])
def test_a_bad_port_range_stops_start_up_naming_the_variable(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings(MediaSettings, mongodb_uri="mongodb://x")
    assert message in str(err.value)


def test_ports_are_ephemeral_unless_both_are_set_and_a_range_as_large_as_capacity_is_accepted(monkeypatch):
    assert load_settings(MediaSettings, mongodb_uri="mongodb://x").rtc_ports is None
    monkeypatch.setenv("SVPL_RTC_PORT_MIN", "40000")
    monkeypatch.setenv("SVPL_RTC_PORT_MAX", "40059")
    ports = load_settings(MediaSettings, mongodb_uri="mongodb://x").rtc_ports
    assert (ports.min, ports.max, len(ports)) == (40000, 40059, 60)


def test_a_node_address_that_is_not_an_ip_address_stops_start_up(monkeypatch):
    monkeypatch.setenv("SVPL_NODE_IP", "node-7.example")
    with pytest.raises(SettingsError) as err:
        load_settings(MediaSettings, mongodb_uri="mongodb://x")
    assert "SVPL_NODE_IP: Value error, must be an IP address" in str(err.value)
    monkeypatch.setenv("SVPL_NODE_IP", "192.0.2.7")
    assert load_settings(MediaSettings, mongodb_uri="mongodb://x").node_ip == "192.0.2.7"


def test_the_answer_names_the_nodes_address_on_the_same_port_next_to_the_pods():
    answer = ("v=0\r\nm=audio 40007 UDP/TLS/RTP/SAVPF 96\r\n"
              "a=candidate:abc 1 udp 2130706431 10.1.2.3 40007 typ host\r\n"
              "a=candidate:def 1 udp 2130706431 fd00::3 40012 typ host\r\n"
              "a=end-of-candidates\r\n")
    advertised = advertise_node_address(answer, "192.0.2.7").splitlines()
    node = [line for line in advertised if " 192.0.2.7 " in line]
    # One candidate per host candidate of the node's family (IPv4 here), same port, server-reflexive.
    assert len(node) == 1 and node[0].endswith("192.0.2.7 40007 typ srflx raddr 10.1.2.3 rport 40007")
    assert advertised.index(node[0]) == 3  # right after the pod's own, which stays
    assert advertise_node_address(answer, "") == answer
