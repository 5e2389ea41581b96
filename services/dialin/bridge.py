"""A phone caller in the meeting's room: one aiortc peer connection to the room's media instance,
negotiated with the join token exactly as a browser's (media verifies it the same way). It
publishes the caller's voice as one audio track and receives everyone else's audio in receive
slots (media forwards each publisher's audio into one slot), which RoomMix sums for the caller."""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy

from services.dialin.audio import CallerTrack, RoomMix
from services.dialin.peers import Admission, Media


class RoomBridge:
    def __init__(self, slots: int) -> None:
        self.caller = CallerTrack()
        self.mix = RoomMix()
        self.closed = asyncio.Event()  # media dropped the connection (removed, room closed) or it failed
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc.addTrack(self.caller)
        for _ in range(slots):
            self.pc.addTransceiver("audio", direction="recvonly")
        self.connected = asyncio.Event()

        @self.pc.on("track")
        def on_track(track) -> None:
            if track.kind == "audio":
                self.mix.add(track)

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()
            elif self.pc.connectionState in ("failed", "closed"):
                self.closed.set()

    async def join(self, media: Media, admission: Admission, meeting_id: str, within: float) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await media.negotiate(admission.media_address, admission.join_token, self.pc.localDescription.sdp,
                                       meeting_id)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(self.connected.wait(), within)

    async def close(self) -> None:
        self.caller.stop()
        await self.mix.close()
        await self.pc.close()
        self.closed.set()
