"""Real aiortc peers on loopback through the SFU: everyone receives everyone else, without re-encoding."""

from __future__ import annotations

import asyncio
import time

import pytest
from svpl.media.v1 import media_pb2

from devstack.peers import Peer
from services.media.forwarding import ForwardTrack
from tests.media.conftest import SEND_PATHS
from tests.polling import poll

SIZES = [(160, 120), (176, 144), (192, 112)]


@pytest.mark.parametrize("world", SEND_PATHS, indirect=True)
async def test_three_participants_receive_each_others_audio_and_video_at_the_sent_rate(world, monkeypatch):
    meeting = await world.open_room()
    peers = [Peer(w, h, slots=2) for w, h in SIZES]
    try:
        for i, peer in enumerate(peers):
            await world.join(peer, meeting, f"p{i}")
        await poll(lambda: all(len(p.video_received()) == 2 and len(p.audio_received()) == 2 for p in peers),
                   timeout=10, what="every peer receiving two audio and two video tracks")
        # Measure over a 3 s window once everything flows.
        await asyncio.sleep(0.5)
        room = world.rooms.rooms[meeting]
        tracks = [t for p in room.participants.values() for ts in p.assigned.values() for t in ts]
        pushes, push = [0], ForwardTrack.push

        def counted(track, *args):
            pushes[0] += 1
            return push(track, *args)

        monkeypatch.setattr(ForwardTrack, "push", counted)  # per subscriber and packet in Python: the reference
        sends = [t.sent for t in tracks]
        start = time.monotonic()
        sent_v = [p.video.sent for p in peers]
        sent_a = [p.audio.sent for p in peers]
        await asyncio.sleep(3.0)
        end = time.monotonic()
        forwarded = sum(t.sent for t in tracks) - sum(sends)
        assert len(tracks) == 12 and forwarded > 12 * 3 * 10
        if world.compiled:  # one C call per packet for all its subscribers; Python only while one is not ready
            assert all(t.route.armed for t in tracks) and pushes[0] <= forwarded // 100, (pushes, forwarded)
        else:
            assert pushes[0] >= forwarded
        sent_fps = min((p.video.sent - s) / (end - start) for p, s in zip(peers, sent_v))
        sent_aps = min((p.audio.sent - s) / (end - start) for p, s in zip(peers, sent_a))
        for i, peer in enumerate(peers):
            others = {SIZES[j] for j in range(3) if j != i}
            seen = set().union(*(r.sizes for r in peer.video_received()))
            assert seen == others, f"peer {i} sees {seen}, expected the other two {others}"
            for r in peer.video_received():
                assert r.rate(start, end) >= 0.85 * sent_fps, f"peer {i} video {r.rate(start, end):.1f} fps < sent {sent_fps:.1f}"
            for r in peer.audio_received():
                assert r.rate(start, end) >= 0.85 * sent_aps, f"peer {i} audio {r.rate(start, end):.1f}/s < sent {sent_aps:.1f}"
        # GetRoomState tells each participant's client which of its slots (MIDs) shows whom.
        state = await world.media.GetRoomState(media_pb2.GetRoomStateRequest(meeting_id=meeting), metadata=world.roster_md)
        for row in state.participants:
            me = int(row.participant_id[1:])
            assert {a.publisher_participant_id for a in row.showing} == {f"p{j}" for j in range(3) if j != me}
            by_mid = {r.mid: r for r in peers[me].received}
            for a in row.showing:
                video = [by_mid[m] for m in a.mids if by_mid[m].kind == "video"]
                assert len(a.mids) == 2 and video[0].sizes == {SIZES[int(a.publisher_participant_id[1:])]}
        # The server never decoded: its receivers' tracks got no frames, every frame went out as a packet.
        for p in room.participants.values():
            for pub in p.publications:
                assert pub.frames > 0
                assert pub.receiver.track._queue.qsize() == 0
            assert len(p.assigned) == 2
    finally:
        for p in peers:
            await p.close()


@pytest.mark.parametrize("world", SEND_PATHS, indirect=True)
async def test_keyframe_requests_from_subscribers_reach_the_publisher_throttled(world):
    meeting = await world.open_room()
    a, b = Peer(160, 120, slots=1), Peer(176, 144, slots=1)
    try:
        await world.join(a, meeting, "pa")
        await world.join(b, meeting, "pb")
        await poll(lambda: a.video_received() and b.video_received(), 10, what="media")
        await asyncio.sleep(0.6)  # past the throttle interval of the join-time requests
        pub = next(p for p in world.rooms.rooms[meeting].participants["pa"].publications if p.kind == "video")
        requests, keyframes = pub.keyframe_requests, pub.keyframes
        # b's receiver sends 20 real RTCP PLIs for a's video within a few milliseconds.
        receiver = next(t.receiver for t in b.pc.getTransceivers()
                        if t.kind == "video" and t.receiver.track is not None and t.currentDirection == "recvonly")
        (ssrc,) = [s.source for s in receiver.getSynchronizationSources()]
        began = time.monotonic()
        for _ in range(20):
            await receiver._send_rtcp_pli(ssrc)
        took = time.monotonic() - began
        await poll(lambda: pub.keyframes > keyframes, 10, what="a keyframe from the publisher")
        await asyncio.sleep(0.5)
        sent = pub.keyframe_requests - requests
        # One per 0.3 s: 1-2 when the 20 go out within milliseconds; a loaded machine may spread them wider.
        assert 1 <= sent <= 2 + int(took / 0.3), (
            f"{sent} PLIs reached the publisher for 20 requests sent over {took:.2f} s (throttled to one per 0.3 s)")
    finally:
        await a.close()
        await b.close()
