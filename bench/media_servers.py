"""The two servers `make bench-media` compares, each in its own process (so its CPU can be read):

- `sfu`: the media service itself (`services.media`, settings from SVPL_* variables), with
  aioice's host addresses limited to loopback as in the tests.
- `relay <port>`: the baseline, aiortc's MediaRelay (decode once per publisher, encode for every
  receiver), with the same slot layout, signalled by one JSON line over TCP.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import TYPE_CHECKING, TypedDict

from bench.media_peers import loopback_only

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection, RTCRtpTransceiver
    from aiortc.mediastreams import MediaStreamTrack


class Member(TypedDict):
    """One relay participant: its connection, the tracks it publishes and its receive slots per kind."""

    pc: RTCPeerConnection
    tracks: dict[str, MediaStreamTrack]
    slots: dict[str, list[RTCRtpTransceiver]]


async def relay_server(port: int) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRelay
    from aiortc.rtcconfiguration import RTCBundlePolicy

    relay = MediaRelay()
    rooms: dict[str, list[Member]] = {}

    def show(publisher: Member, subscriber: Member) -> None:
        for kind in ("audio", "video"):
            track = publisher["tracks"].get(kind)
            free = [t for t in subscriber["slots"][kind] if t.sender.track is None]
            if track is not None and free:
                free[0].sender.replaceTrack(relay.subscribe(track))

    async def handle(reader, writer) -> None:
        request = json.loads(await reader.readline())
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        me: Member = {"pc": pc, "tracks": {}, "slots": {"audio": [], "video": []}}

        @pc.on("track")
        def on_track(track) -> None:
            me["tracks"][track.kind] = track

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("closed", "failed"):
                room = rooms.get(request["room"], [])
                if me in room:
                    room.remove(me)
                await pc.close()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=request["sdp"], type="offer"))
        for t in pc.getTransceivers():
            if t._offerDirection == "sendonly":
                t.direction = "sendonly"
                me["slots"][t.kind].append(t)
        await pc.setLocalDescription(await pc.createAnswer())
        room = rooms.setdefault(request["room"], [])
        for other in room:
            show(other, me)
            show(me, other)
        room.append(me)
        writer.write((json.dumps({"sdp": pc.localDescription.sdp}) + "\n").encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("listening", flush=True)  # the orchestrator waits for this line
    async with server:
        await server.serve_forever()


def main() -> None:
    loopback_only()
    if os.environ.get("BENCH_MEDIA_PROFILE"):  # cProfile of this server, written at exit (for development)
        import atexit
        import cProfile

        profile = cProfile.Profile()
        atexit.register(profile.dump_stats, os.environ["BENCH_MEDIA_PROFILE"] + f".{os.getpid()}")
        profile.enable()
    if sys.argv[1] == "sfu":
        from services.media.config import MediaSettings
        from services.media.server import build, event_loop
        from services.runtime.server import main as serve

        serve(MediaSettings, build, event_loop)
    else:
        asyncio.run(relay_server(int(sys.argv[2])))


if __name__ == "__main__":
    main()
