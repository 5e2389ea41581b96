"""Incoming media handled in the socket's callback (services/media/receive.py): it arrives whole and
counted, never through aioice's queue once connected, and DTLS (including the peer's close) still
takes aiortc's own path."""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcdtlstransport import State as DtlsState

from devstack.peers import SyntheticAudio, SyntheticVideo, count_frames
from services.media.receive import receive_directly
from services.media.rtc_internals import HandlerSuspended, run_now
from tests.polling import poll


async def test_media_arrives_through_the_direct_path_and_a_close_still_closes(monkeypatch):
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    server, client = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    frames: dict[str, int] = {"audio": 0, "video": 0}
    server.on("track", lambda track: asyncio.ensure_future(count_frames(track, frames)))
    try:
        client.addTrack(SyntheticAudio())
        client.addTrack(SyntheticVideo(160, 120))
        await client.setLocalDescription(await client.createOffer())
        await server.setRemoteDescription(client.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        dtls = server.getTransceivers()[0].receiver.transport
        connection = dtls.transport._connection
        assert receive_directly(server) == len(connection._protocols) >= 1
        queued = []  # (first byte, DTLS connected?) of every datagram that went through aioice's queue
        put = connection._queue.put_nowait

        def watch(item) -> None:
            if item is not None:
                queued.append((item[0][0], dtls._state is DtlsState.CONNECTED))
            put(item)

        connection._queue.put_nowait = watch
        await client.setRemoteDescription(server.localDescription)
        await poll(lambda: frames["video"] >= 20 and frames["audio"] >= 50, 15, what="media through the direct path")
        # Once connected, no RTP/RTCP datagram took the queue: before, DTLS (and early media) did.
        assert any(20 <= first < 64 for first, _ in queued)
        assert not [first for first, connected in queued if connected and 127 < first < 192]
        stats = [s for s in (await server.getStats()).values() if s.type == "transport"][0]
        assert stats.packetsReceived >= 70 and stats.bytesReceived > 0  # counted as aiortc counts them
        await client.close()  # the DTLS close_notify takes aiortc's own path and ends the connection
        await poll(lambda: server.connectionState == "closed", 10, what="the server side closed")
    finally:
        await client.close()
        await server.close()


async def test_run_now_finishes_in_place_and_fails_loudly_if_a_handler_suspends():
    done = []

    async def at_once() -> None:
        done.append("at once")

    run_now(at_once())
    assert done == ["at once"]  # ran to the end in the call
    gate = asyncio.get_running_loop().create_future()

    async def suspends() -> None:
        done.append(await gate)

    # aiortc's handlers never suspend (test_aiortc_internals checks it with real packets): one that does
    # breaks the assumption, and says so; its rest still runs, in a task.
    with pytest.raises(HandlerSuspended, match="suspends.* suspended"):
        run_now(suspends())
    assert done == ["at once"]
    gate.set_result("later")
    await poll(lambda: done == ["at once", "later"], 2, what="the suspended rest finished by a task")

    async def fails() -> None:
        raise ValueError("bad datagram")

    run_now(fails())  # logged and dropped, as aiortc's receive task would
