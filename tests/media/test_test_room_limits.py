"""Echo test rooms cannot take a meeting's media ports or peer connections (security issue #14, item 1).

One test room per person (keyed by the session token's subject: a new one replaces the previous one),
at most SVPL_TEST_ROOM_SHARE of the participant capacity per instance, reserved beyond that capacity
(with a port range: only the ports beyond capacity_participants), and counted in the load that room
placement (GetLoad) and the HPA (svpl_media_participants) see. Real aiortc peers through real media,
in both network modes: a small UDP port range (turn.enabled=false) and ephemeral ports (behind TURN,
where only peer connections can be counted)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from prometheus_client import REGISTRY
from svpl.media.v1 import media_pb2

from devstack.peers import Peer
from services.media.config import MediaSettings
from services.media.ports import PortRange
from services.media.rooms import PeerCounter
from services.runtime import auth
from services.runtime.config import load_settings
from tests.media.conftest import INSTANCE, MediaWorld
from tests.media.test_rtc_ports import candidate_ports, free_udp_range
from tests.polling import poll

CAPACITY = 4


def staff(person_token, n: int) -> str:
    """A session token of a distinct person (HSA-ids: no personnummer needed for many people)."""
    return person_token(person_id=f"SE2321000057-9{n:03d}", id_kind="hsa_id", name=f"Person {n}", method="siths",
                        roles=[auth.ROLE_STAFF, auth.ROLE_REGION_STAFF])


async def echo(world: MediaWorld, token: str, sdp: str):
    return await world.media.NegotiateTestRoom(media_pb2.NegotiateTestRoomRequest(session_token=token, sdp_offer=sdp),
                                               metadata=world.gateway_md)


async def flood(world: MediaWorld, tokens: list[str], sdp: str) -> list:
    """Every token's offer at once, as a script would send them; the results (responses or errors)."""
    return await asyncio.gather(*(echo(world, t, sdp) for t in tokens), return_exceptions=True)


def codes(results: list) -> list:
    return [r.code() if isinstance(r, grpc.aio.AioRpcError) else "OK" for r in results]


async def start(system_factory, keyring, service_token, **media) -> MediaWorld:
    system = await system_factory(["identity", "media"], overrides={"media": {"instance_id": INSTANCE, **media}})
    return MediaWorld(system, keyring, service_token)


@pytest.fixture
async def ranged(system_factory, keyring, service_token):
    """No TURN: 6 ports for capacity 4 and a 50 % share: meetings 4 ports, test rooms the top 2."""
    low = free_udp_range(CAPACITY + 2)
    world = await start(system_factory, keyring, service_token, capacity_participants=CAPACITY,
                        rtc_port_min=low, rtc_port_max=low + CAPACITY + 1, test_room_share=0.5)
    yield world, range(low, low + CAPACITY + 2)


@pytest.fixture
async def behind_turn(system_factory, keyring, service_token):
    """Behind TURN: ephemeral ports (no range); capacity 10 and a 20 % share: 2 test rooms."""
    yield await start(system_factory, keyring, service_token, capacity_participants=10, test_room_share=0.2)


async def join_meeting(world: MediaWorld, n: int) -> list[Peer]:
    meeting = await world.open_room()
    peers = [Peer(slots=1, publish=i < 2) for i in range(n)]
    for i, p in enumerate(peers):
        await world.join(p, meeting, f"p{i}")  # raises (RESOURCE_EXHAUSTED) when no port is left
    await asyncio.wait_for(asyncio.gather(*(p.connected.wait() for p in peers)), 10)
    return peers


async def test_one_persons_flood_leaves_one_test_room_and_meetings_keep_their_ports(ranged, person_token, caplog):
    world, ports = ranged
    caplog.set_level(logging.DEBUG)
    offerer = Peer(slots=0)
    sdp = await offerer.offer()
    # One citizen, logged in twice (two session tokens, the same person), floods 40 offers at once.
    sessions = [person_token("patient"), person_token("patient")]
    peers: list[Peer] = [offerer]
    try:
        results = await flood(world, [sessions[i % 2] for i in range(40)], sdp)
        assert "OK" in codes(results)
        # Older offers still waiting give way to the newest; none of them is a second room.
        assert set(codes(results)) <= {"OK", grpc.StatusCode.ABORTED}, codes(results)
        await poll(lambda: len(world.rooms.test_peers) <= 1, 5, what="replaced test rooms closed")
        assert world.rooms.test_room_peers == 1 and len(world.rooms.test_peers) == 1

        # More, one after another (a page reloaded: the old page's connection goes with it): still one at a time.
        for i in range(10):
            if i:
                await peers[-1].close()  # a reloaded page's old connection ends (its packets would reach the port
                # media gives the next room: the replaced room is closed, the port is the test rooms' again)
            p = Peer(slots=0)
            peers.append(p)
            await p.answer((await echo(world, sessions[i % 2], await p.offer())).sdp_answer)
            assert len(world.rooms.test_peers) == 1 and world.rooms.test_room_peers == 1
        # The last one is a full test room: connected, echoing, on one of the test rooms' ports.
        last = peers[-1]
        # (Bounds for a loaded machine: the ten replaced rooms close while this one connects.)
        await asyncio.wait_for(last.connected.wait(), 30)
        await poll(lambda: last.video_received() and last.audio_received(), 20, what="own media echoed back")
        assert candidate_ports(last.pc.remoteDescription.sdp) <= set(ports[-2:])
        # The ones before it were replaced: media closed their peer connections.
        assert [pc.connectionState for pc in world.rooms.test_peers] == ["connected"]

        # A meeting on the same instance: every participant of its capacity finds a port.
        peers += await join_meeting(world, CAPACITY)
        # Another person's test room still fits (2 per instance here).
        other = Peer(slots=0)
        peers.append(other)
        await other.answer((await echo(world, person_token("next_of_kin"), await other.offer())).sdp_answer)
        assert world.rooms.test_room_peers == 2
    finally:
        for p in peers:
            await p.close()
    # The personnummer is nowhere in media's logs.
    media_logs = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("svpl.media"))
    assert "19121212" not in media_logs


async def test_many_persons_stop_at_the_share_and_a_meeting_still_gets_every_port(ranged, person_token):
    world, ports = ranged
    offerer = Peer(slots=0)
    sdp = await offerer.offer()
    peers = [offerer]
    try:
        live = len(PeerCounter.live)
        results = await flood(world, [staff(person_token, n) for n in range(20)], sdp)
        assert codes(results).count("OK") == 2, codes(results)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all("Testrummen" in r.details() and "test rooms on this media instance are full" in r.details()
                   for r in refused)
        # The refusals left no peer connection behind.
        assert len(PeerCounter.live) == live + 2 and world.rooms.test_room_peers == 2
        # The two test rooms hold the two ports beyond capacity, and nothing else.
        held = {port for r in results if not isinstance(r, Exception) for port in candidate_ports(r.sdp_answer)}
        assert held == set(ports[-2:])

        # The meeting's participants all get a port while the test rooms are at their limit.
        meeting = await join_meeting(world, CAPACITY)
        peers += meeting
        used = {port for p in meeting for port in candidate_ports(p.pc.remoteDescription.sdp)}
        assert used == set(ports[:CAPACITY])
        # A person with a test room may still replace it (reloading the page) at the limit.
        again = await echo(world, staff(person_token, codes(results).index("OK")), sdp)
        assert candidate_ports(again.sdp_answer) <= set(ports[-2:]) and world.rooms.test_room_peers == 2
    finally:
        for p in peers:
            await p.close()


async def test_behind_turn_peer_connections_are_capped_and_counted_in_the_load(behind_turn, person_token):
    world = behind_turn
    offerer = Peer(slots=0)
    sdp = await offerer.offer()
    peers = [offerer]
    try:
        results = await flood(world, [staff(person_token, n) for n in range(30)]
                              + [staff(person_token, 100)] * 20, sdp)
        # Two people got a room: of the 30, and the one who sent 20 (answered maybe more than once, each
        # answer replacing the previous one); everyone else was refused.
        people = codes(results[:30]).count("OK") + ("OK" in codes(results[30:]))
        assert people == 2, codes(results)
        assert set(codes(results)) <= {"OK", grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
        await poll(lambda: len(world.rooms.test_peers) == 2, 5, what="replaced test rooms closed")
        assert world.rooms.test_room_peers == 2

        # Placement and the HPA see the test rooms.
        load = await world.media.GetLoad(media_pb2.GetLoadRequest(), metadata=world.roster_md)
        assert (load.participants, load.test_room_peers, load.capacity_test_room_peers) == (0, 2, 2)
        assert load.accepting and load.capacity_participants == 10  # they take nothing from meetings' capacity
        assert REGISTRY.get_sample_value("svpl_media_test_room_peers") == 2
        assert REGISTRY.get_sample_value("svpl_media_participants") == 2

        # A meeting negotiates as usual next to them, and is counted on top.
        peers += await join_meeting(world, 3)
        load = await world.media.GetLoad(media_pb2.GetLoadRequest(), metadata=world.roster_md)
        assert (load.participants, load.test_room_peers) == (3, 2)
        assert REGISTRY.get_sample_value("svpl_media_participants") == 5
    finally:
        for p in peers:
            await p.close()


async def test_a_test_room_lasts_its_time_and_then_frees_its_place(system_factory, keyring, service_token,
                                                                    person_token):
    world = await start(system_factory, keyring, service_token, capacity_participants=10, test_room_share=0.1,
                        test_room_seconds=2.0)
    assert world.rooms.test_room_limit == 1
    peer, late = Peer(slots=0), Peer(slots=0)
    try:
        await peer.answer((await echo(world, person_token("patient"), await peer.offer())).sdp_answer)
        await asyncio.wait_for(peer.connected.wait(), 10)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await echo(world, person_token("next_of_kin"), await late.offer())
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Not shortened: it echoes for its configured time ...
        await asyncio.sleep(1.0)
        assert peer.pc.connectionState == "connected" and world.rooms.test_room_peers == 1
        # ... then ends, and its place is free for the next person.
        await poll(lambda: world.rooms.test_room_peers == 0 and not world.rooms.test_peers, 5,
                   what="test room ended")
        await late.answer((await echo(world, person_token("next_of_kin"), late.pc.localDescription.sdp)).sdp_answer)
        await asyncio.wait_for(late.connected.wait(), 10)
    finally:
        await peer.close()
        await late.close()


@pytest.mark.parametrize(("share", "capacity", "rtc_ports", "limit"), [
    (0.1, 60, None, 6),                       # behind TURN: a share of the participant capacity
    (0.1, 60, PortRange(40000, 40099), 6),    # the chart's default range: 40 ports beyond capacity
    (0.1, 60, PortRange(40000, 40061), 2),    # only the ports beyond capacity are the test rooms'
    (0.1, 60, PortRange(40000, 40059), 0),    # none beyond capacity: no test rooms (meetings first)
    (0.01, 60, None, 1),                      # at least one
    (0.0, 60, None, 0),                       # 0 turns test rooms off
])
def test_the_limit_is_a_share_of_capacity_reserved_beyond_it(share, capacity, rtc_ports, limit):
    from services.media.rooms import allowed_test_rooms

    assert allowed_test_rooms(share, capacity, rtc_ports) == limit


def test_the_share_is_a_setting(monkeypatch):
    assert load_settings(MediaSettings, mongodb_uri="mongodb://x").test_room_share == 0.1
    monkeypatch.setenv("SVPL_TEST_ROOM_SHARE", "0.25")
    assert load_settings(MediaSettings, mongodb_uri="mongodb://x").test_room_share == 0.25
