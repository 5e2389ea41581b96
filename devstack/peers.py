"""Real aiortc client peers for the media tests and benchmarks: synthetic camera + microphone, N receive slots,
frame counting per received track. No STUN servers; TURN only where a test gives one."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from av import AudioFrame, VideoFrame

VIDEO_CLOCK = 90000


class SyntheticVideo(MediaStreamTrack):
    """A paced camera: `fps` frames a second of a small moving pattern (cheap to encode)."""

    kind = "video"

    def __init__(self, width: int, height: int, fps: int = 15) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.sent = 0
        self._start: float | None = None
        base = np.zeros((height, width, 3), np.uint8)
        base[:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        self._images = [np.roll(base, 4 * i, axis=1) for i in range(fps)]

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.sent / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = VideoFrame.from_ndarray(self._images[self.sent % self.fps], format="rgb24")
        frame.pts = int(self.sent * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.sent += 1
        return frame


class SyntheticAudio(MediaStreamTrack):
    """A paced microphone: 20 ms frames of a quiet tone at 48 kHz."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self._start: float | None = None
        t = np.arange(960) / 48000
        self._samples = (np.sin(2 * np.pi * 440 * t) * 3000).astype(np.int16).reshape(1, -1)

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.sent * 0.02
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = AudioFrame.from_ndarray(self._samples, format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self.sent * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self.sent += 1
        return frame


async def count_frames(track: MediaStreamTrack, frames: MutableMapping[str, int]) -> None:
    """Receive `track` until it ends, counting its frames by kind into `frames`."""
    try:
        while True:
            await track.recv()
            frames[track.kind] += 1
    except MediaStreamError:
        pass


@dataclass
class Received:
    kind: str
    mid: str | None = ""
    frames: int = 0
    first_at: float | None = None
    sizes: set = field(default_factory=set)
    times: list = field(default_factory=list)

    def rate(self, since: float, until: float) -> float:
        n = sum(1 for t in self.times if since <= t < until)
        return n / (until - since)


class Peer:
    """One participant's browser stand-in."""

    def __init__(self, width: int = 160, height: int = 120, slots: int = 2, fps: int = 15, publish: bool = True,
                 ice_servers: list[RTCIceServer] | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers or [],
                                                     bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.video = SyntheticVideo(width, height, fps) if publish else None
        self.audio = SyntheticAudio() if publish else None
        self.received: list[Received] = []
        self.connected_at: float | None = None
        self._tasks: list[asyncio.Task] = []
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        if self.audio is not None and self.video is not None:  # publish
            self.pc.addTrack(self.audio)
            self.pc.addTrack(self.video)
        for _ in range(slots):
            self.pc.addTransceiver("audio", direction="recvonly")
            self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track) -> None:
            mid = next((t.mid for t in self.pc.getTransceivers() if t.receiver.track is track), "")
            rec = Received(track.kind, mid)
            self.received.append(rec)
            self._tasks.append(asyncio.ensure_future(self._consume(track, rec)))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected_at = time.monotonic()
                self.connected.set()
            elif self.pc.connectionState in ("closed", "failed"):
                self.closed.set()

    async def _consume(self, track, rec: Received) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if rec.first_at is None:
                    rec.first_at = now
                rec.frames += 1
                rec.times.append(now)
                if rec.kind == "video":
                    rec.sizes.add((frame.width, frame.height))
        except MediaStreamError:
            pass

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def video_received(self) -> list[Received]:
        return [r for r in self.received if r.kind == "video" and r.frames]

    def first_video_at(self) -> float | None:
        """When the first video frame arrived (time.monotonic), None before one did."""
        return min((r.first_at for r in self.received if r.kind == "video" and r.first_at is not None), default=None)

    def audio_received(self) -> list[Received]:
        return [r for r in self.received if r.kind == "audio" and r.frames]

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()

