"""Rooms: close, disconnect, reconnect, state and load, the late joiner's first frame, draining."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from svpl.media.v1 import media_pb2

from devstack.peers import Peer
from tests.polling import poll


@contextlib.asynccontextmanager
async def connected_peers(world, meeting: str, n: int = 2):
    """`n` peers joined to the room and connected; closed on the way out."""
    peers = [Peer(slots=1) for _ in range(n)]
    try:
        for i, p in enumerate(peers):
            await world.join(p, meeting, f"p{i}")
        await asyncio.wait_for(asyncio.gather(*(p.connected.wait() for p in peers)), 10)
        yield peers
    finally:
        for p in peers:
            await p.close()


async def test_close_room_disconnects_everyone_at_once_and_the_room_never_reopens(world):
    meeting = await world.open_room()
    async with connected_peers(world, meeting) as peers:
        closed = await world.media.CloseRoom(media_pb2.CloseRoomRequest(meeting_id=meeting), metadata=world.roster_md)
        assert closed.disconnected == 2
        # Media ends the connections itself (DTLS close): the clients see them end well within a second
        # on an idle machine. The bound is generous for a loaded one and still far below the ~30 s a
        # connection left alone takes to end (aioice's consent checks: 6 failures, 5 s apart).
        await poll(lambda: all(p.pc.connectionState in ("closed", "failed") for p in peers),
                   timeout=10.0, what="peers disconnected")
        state = await world.media.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=meeting), metadata=world.roster_md)
        assert state.status == media_pb2.ROOM_STATUS_CLOSED and not state.participants
        # A new offer for the room is refused, and the room id can never be opened again.
        late = Peer(slots=1)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.join(late, meeting, "p9")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "closed" in err.value.details()
        await late.close()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.open_room(meeting)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # ... not even after a restart of media (the closed id is in media's database).
        await world.system.stop_service("media")
        await world.system.start_service("media", instance_id=world.rooms.instance_id)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.open_room(meeting)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_release_room_disconnects_everyone_and_leaves_the_room_free_to_open_again(world):
    """A room that moved to another instance: everyone here is let go (their clients re-admit into
    the moved room), and, unlike CloseRoom, nothing records the room closed: the meeting goes on."""
    meeting = await world.open_room()
    async with connected_peers(world, meeting) as peers:
        released = await world.media.ReleaseRoom(media_pb2.ReleaseRoomRequest(meeting_id=meeting),
                                                 metadata=world.roster_md)
        assert released.disconnected == 2
        await poll(lambda: all(p.pc.connectionState in ("closed", "failed") for p in peers),
                   timeout=2.0, what="peers disconnected")
        state = await world.media.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=meeting), metadata=world.roster_md)
        assert state.status == media_pb2.ROOM_STATUS_UNKNOWN and not state.participants
        late = Peer(slots=1)
        with pytest.raises(grpc.aio.AioRpcError) as err:  # a token issued before the move: no room here now
            await world.join(late, meeting, "p9")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "not open" in err.value.details()
        await late.close()
        again = await world.media.ReleaseRoom(media_pb2.ReleaseRoomRequest(meeting_id=meeting),
                                              metadata=world.roster_md)
        assert again.disconnected == 0  # asked twice (a retry): nothing more to do
        await world.open_room(meeting)  # not closed: the room may come back here
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.media.ReleaseRoom(media_pb2.ReleaseRoomRequest(), metadata=world.roster_md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "meeting_id" in err.value.details()


async def test_disconnect_reconnect_state_and_load(world):
    meeting = await world.open_room()
    a, b = Peer(slots=1), Peer(slots=1)
    try:
        await world.join(a, meeting, "pa")
        first = await world.join(b, meeting, "pb")
        await asyncio.wait_for(asyncio.gather(a.connected.wait(), b.connected.wait()), 10)
        state = await world.media.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=meeting), metadata=world.roster_md)
        assert state.status == media_pb2.ROOM_STATUS_OPEN
        assert {p.participant_id: p.published_tracks for p in state.participants} == {"pa": 2, "pb": 2}
        await poll(lambda: all(p.state == "connected" for p in world.rooms.rooms[meeting].participants.values()),
                   5, what="server side connected")
        load = await world.media.GetLoad(media_pb2.GetLoadRequest(), metadata=world.roster_md)
        assert (load.rooms, load.participants, load.forwarded_streams) == (1, 2, 2)
        assert load.accepting and load.media_instance == world.rooms.instance_id and load.cpu >= 0
        # The same load on /metrics, for the HPA (through the Prometheus adapter) and the dashboards.
        scraped = {name: REGISTRY.get_sample_value(name) for name in
                   ("svpl_media_rooms", "svpl_media_participants", "svpl_media_forwarded_streams")}
        assert scraped == {"svpl_media_rooms": 1, "svpl_media_participants": 2, "svpl_media_forwarded_streams": 2}

        # b reconnects (a new offer with a new token): the old connection is replaced, not doubled.
        b2 = Peer(slots=1)
        second = await world.join(b2, meeting, "pb")
        assert second.connection_id != first.connection_id
        await asyncio.wait_for(b2.connected.wait(), 10)
        await poll(lambda: b.pc.connectionState != "connected", 3, what="old connection dropped")
        room = world.rooms.rooms[meeting]
        assert list(room.participants) == ["pa", "pb"] and room.participants["pb"].connection_id == second.connection_id
        await poll(lambda: b2.video_received() and a.video_received(), 5, what="media after reconnect")

        # Roster disconnects a (removed): a is gone, b2 stops receiving a.
        gone = await world.media.Disconnect(media_pb2.DisconnectRequest(meeting_id=meeting, participant_id="pa"),
                                            metadata=world.roster_md)
        assert gone.disconnected == 1
        await poll(lambda: a.pc.connectionState != "connected", 3, what="a disconnected")
        assert list(world.rooms.rooms[meeting].participants) == ["pb"]
        load = await world.media.GetLoad(media_pb2.GetLoadRequest(), metadata=world.roster_md)
        assert (load.participants, load.forwarded_streams) == (1, 0)
        await b2.close()
        await b.close()
    finally:
        await a.close()


async def test_late_joiner_gets_a_first_decoded_frame_from_a_keyframe_asked_for_it(world):
    meeting = await world.open_room()
    early = [Peer(160, 120, slots=2), Peer(176, 144, slots=2)]
    late = Peer(192, 112, slots=2, publish=False)
    try:
        for i, p in enumerate(early):
            await world.join(p, meeting, f"p{i}")
        await poll(lambda: all(len(p.video_received()) == 1 for p in early), 10, what="early peers see each other")
        # Let the publishers run well past their first keyframe: the late joiner needs a fresh one.
        await asyncio.sleep(1.5)
        pubs = [pub for p in world.rooms.rooms[meeting].participants.values() for pub in p.publications if pub.kind == "video"]
        keyframes_before = sum(pub.keyframes for pub in pubs)
        await world.join(late, meeting, "late")
        await asyncio.wait_for(late.connected.wait(), 10)
        await poll(lambda: len(late.video_received()) == 2, 10, what="late joiner decoding both publishers")
        delays = [r.first_at - late.connected_at for r in late.video_received()]
        print(f"late joiner: first decoded frames {delays} s after connecting")
        # Well under half a second on an idle machine. The bound is generous for a loaded one and still
        # far below the publishers' own next keyframe (aiortc's VP8 encoder: every 3000 frames, 200 s at 15 fps).
        assert max(delays) < 5, f"first decoded frames {delays} s after connecting"
        # It was a keyframe requested for the newcomer (PLI forwarded to each publisher).
        assert sum(pub.keyframes for pub in pubs) >= keyframes_before + 2
        assert {s for r in late.video_received() for s in r.sizes} == {(160, 120), (176, 144)}
    finally:
        for p in early + [late]:
            await p.close()


async def test_draining_refuses_new_rooms_and_keeps_the_live_one(world):
    meeting = await world.open_room()
    a, b = Peer(slots=1), Peer(slots=1)
    running = world.system.running["media"]
    health = health_pb2_grpc.HealthStub(world.system.channel("media"))
    try:
        await world.join(a, meeting, "pa")
        await world.join(b, meeting, "pb")
        await poll(lambda: a.video_received() and b.video_received(), 10, what="media flowing")
        stopping = asyncio.create_task(running.stop(grace=30))  # what SIGTERM does
        await poll(lambda: world.rooms.draining, 2, what="draining")
        ready = await health.Check(health_pb2.HealthCheckRequest(service="svpl.media.v1.MediaService"))
        assert ready.status == health_pb2.HealthCheckResponse.NOT_SERVING
        live = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert live.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await world.open_room()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "draining" in err.value.details()
        load = await world.media.GetLoad(media_pb2.GetLoadRequest(), metadata=world.roster_md)
        assert not load.accepting and load.rooms == 1
        # The live room keeps forwarding while draining.
        before = [r.frames for r in a.video_received() + b.video_received()]
        await asyncio.sleep(1.0)
        after = [r.frames for r in a.video_received() + b.video_received()]
        assert all(y >= x + 5 for x, y in zip(before, after)), (before, after)
        assert not stopping.done()
        # The room ends: draining finishes and the server stops.
        await world.media.CloseRoom(media_pb2.CloseRoomRequest(meeting_id=meeting), metadata=world.roster_md)
        await asyncio.wait_for(stopping, 5)
        world.system.running.pop("media", None)
    finally:
        await a.close()
        await b.close()
