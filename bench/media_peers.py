"""Load generator for `make bench-media`: synthetic participants in one process.

Publishers replay a pre-encoded clip (640x360 VP8 at 15 fps + Opus, encoded once at start),
so sending costs only packetisation. Subscribers count complete frames without decoding; one
video track per room goes through aiortc's whole receive path and is decoded, as a check that
what arrives is a decodable picture. The other subscriber slots are counted where the datagram
arrives (`LightCounter`): the RTP header of an SRTP packet is in clear, so a frame is complete
when its packets' sequence numbers run without a gap from the one after the previous frame's
marker to its own marker. They skip decryption and aiortc's jitter buffer (and send a receiver
report per slot about every second, as aiortc's receiver does, so the server handles as much
RTCP as from real subscribers): on 2 cores, a load generator running aiortc's Python receive path for every stream
costs as much CPU as the server it measures, and starves it.

Protocol with the orchestrator (bench/media.py): the first stdin line is a JSON config (with the
clip, encoded once by the orchestrator, base64 over the pipe: nothing on disk); this process prints
"ready" when every subscriber slot has received video, then answers each stdin line
"report <t0> <t1>" with one JSON line of results for that wall-clock window, until a line "stop".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from typing import TypeVar

import aioice.ice
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket
from aiortc.sdp import SessionDescription

from services.media.forwarding import enlarge_socket_buffers
from services.media.rtc_internals import throttle_estimates

WIDTH, HEIGHT, FPS = 640, 360, 15
CLIP_FRAMES = 60  # 4 s: a keyframe at the start of each loop, or on request
SETUP_TIMEOUT = 120  # s, for a signalling request: generous, on a shared machine that may be saturated
READY_TIMEOUT = 60  # s, from the last connection set up to media on every slot
SOCKET_BUFFER = 4 << 20  # the peers' UDP buffers, as the media service sets its own


def loopback_only(address: str = "127.0.0.1") -> None:
    """aioice skips 127.0.0.1 when gathering; the benchmark runs on loopback only (or, for Janus,
    which never gathers loopback either, on the host's own address: still through the kernel's loopback)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [address]


def encode_clip() -> tuple[list[bytes], list[bytes]]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base = Fraction(1, FPS)
    codec.framerate = Fraction(FPS)
    codec.bit_rate = 600_000
    codec.gop_size = 10_000
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    # A camera-like picture: smooth gradients, mild grain, and a moving object (not white noise,
    # which no real camera sends and which makes keyframes ten times larger).
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([x * 255 // WIDTH, y * 255 // HEIGHT, (x + y) * 255 // (WIDTH + HEIGHT)], axis=-1).astype(np.int16)
    video = []
    for i in range(CLIP_FRAMES):
        img = base + rng.integers(-6, 7, base.shape, dtype=np.int16)
        cx, cy = 80 + 7 * i, 120 + int(60 * np.sin(i / 6))
        img[cy - 40:cy + 40, cx - 40:cx + 40] = (220, 180, 140)
        frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        video += [bytes(p) for p in codec.encode(frame)]
    video += [bytes(p) for p in codec.encode(None)]
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate, opus.layout, opus.format = 48000, "stereo", "s16"
    opus.bit_rate = 32000
    t = np.arange(960) / 48000
    tone = (np.sin(2 * np.pi * 440 * t) * 3000).astype(np.int16)
    audio = []
    for i in range(50):
        sound = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        sound.sample_rate, sound.pts = 48000, i * 960
        audio += [bytes(p) for p in opus.encode(sound)]
    return video[:CLIP_FRAMES], audio


class Replay(MediaStreamTrack):
    """Paced replay of pre-encoded packets; a keyframe request restarts the clip (frame 0 is a keyframe)."""

    def __init__(self, kind: str, packets: list[bytes], rate: float, ticks: int, clock: int) -> None:
        super().__init__()
        self.kind = kind
        self._packets, self._rate, self._ticks, self._clock = packets, rate, ticks, clock
        self._n = 0
        self._pos = 0
        self.times: list[float] = []
        self._start: float | None = None
        self._time_base = Fraction(1, clock)

    def keyframe(self) -> None:
        self._pos = 0

    async def recv(self) -> av.Packet:
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._n / self._rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self._packets[self._pos % len(self._packets)])
        packet.pts, packet.time_base = self._n * self._ticks, self._time_base
        self._n += 1
        self._pos += 1
        self.times.append(time.time())
        return packet


class Slot:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.times: list[float] = []
        self.decoded: list[float] = []


class LightCounter:
    """Counts one subscriber slot's complete frames from the clear RTP headers of its SRTP packets."""

    __slots__ = ("slot", "audio", "timestamp", "first", "count", "expected", "clean", "highest", "received")

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.audio = slot.kind == "audio"
        self.timestamp = b""
        self.first = self.count = 0
        self.expected: int | None = None
        self.clean = False
        self.highest = self.received = 0

    def packet(self, data: bytes) -> None:
        self.received += 1
        self.highest = (data[2] << 8) | data[3]
        if self.audio:  # one Opus frame per packet
            self.slot.times.append(time.time())
            return
        seq = (data[2] << 8) | data[3]
        timestamp = data[4:8]
        if timestamp != self.timestamp:  # a new frame starts: its first packet must follow the last marker
            self.timestamp, self.first, self.count = timestamp, seq, 0
            self.clean = self.expected is None or seq == self.expected
        self.count += 1
        if data[1] & 0x80:  # marker: the frame's last packet
            if self.clean and (seq - self.first) & 0xFFFF == self.count - 1:
                self.slot.times.append(time.time())
            self.expected = (seq + 1) & 0xFFFF


def count_light(pc: RTCPeerConnection, counters: dict[int, LightCounter]) -> None:
    """Divert the RTP of the counted SSRCs at the ICE socket, before aioice's STUN check and the DTLS loop."""
    connection = pc.getTransceivers()[0].receiver.transport.transport._connection
    for protocol in connection._protocols:
        received = protocol.datagram_received

        def datagram_received(data, addr, received=received) -> None:
            # SRTP (first byte 128-191), not SRTCP (second byte 192-208), of a counted SSRC.
            if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 209:
                counter = counters.get(int.from_bytes(data[8:12], "big"))
                if counter is not None:
                    counter.packet(data)
                    return
            received(data, addr)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign]  # patched per socket on purpose


def new_connection() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


def publish(pc: RTCPeerConnection, video: list[bytes], audio: list[bytes]) -> tuple[Replay, Replay]:
    """The clip's audio and video as tracks of `pc`; returns (video, audio)."""
    replays = Replay("video", video, FPS, 90000 // FPS, 90000), Replay("audio", audio, 50, 960, 48000)
    for track in reversed(replays):
        sender = pc.addTrack(track)
        if track.kind == "video":
            # a PLI/FIR restarts the clip at its keyframe
            sender._send_keyframe = track.keyframe  # type: ignore[method-assign]  # aiortc's hook, replaced
    return replays


class Participant:
    """Publishes the clip and receives `spec["slots"]` audio+video slots on one connection (our
    media service's and the MediaRelay baseline's layout; bench/janus.py has Janus's)."""

    def __init__(self, spec: dict, clip, decode_one: bool) -> None:
        self.spec = spec
        self.decode_one = decode_one
        self.pc = new_connection()
        self.video, self.audio = publish(self.pc, *clip)
        self.slots: list[Slot] = []
        self.light: dict[RTCRtpTransceiver, Slot] = {}  # transceiver -> slot counted by LightCounter
        for _ in range(spec["slots"]):
            for kind in ("audio", "video"):
                self.add_slot(self.pc.addTransceiver(kind, direction="recvonly"))

    def add_slot(self, transceiver: RTCRtpTransceiver) -> None:
        """One receive slot: counted at the socket, or (the first video slot of a room) decoded."""
        slot = Slot(transceiver.kind)
        self.slots.append(slot)
        if self.decode_one and slot.kind == "video" and not any(s.kind == "video" for s in self.slots[:-1]):
            self._decode(transceiver, slot)
        else:
            self.light[transceiver] = slot

    def count_light(self, sdp: str) -> None:
        """After negotiation: the server's description names the SSRC it sends on each slot."""
        description = SessionDescription.parse(sdp)
        ssrcs: dict[str | None, int] = {m.rtp.muxId: m.ssrc[0].ssrc for m in description.media if m.ssrc}
        self.counters = {t: (ssrcs[t.mid], LightCounter(slot)) for t, slot in self.light.items()}
        count_light(self.pc, {ssrc: counter for ssrc, counter in self.counters.values()})
        # The decoded slot's receiver estimates bandwidth: its REMBs paced as a browser's (libwebrtc's
        # RembThrottler), not aiortc's one per packet while it sees overuse, which costs the server it
        # measures (both servers alike) work no browser asks of it.
        for t in self.pc.getTransceivers():
            estimator = t.receiver._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
            if estimator is not None:
                throttle_estimates(estimator)
        self.reports = asyncio.ensure_future(self.report_light())

    async def close(self) -> None:
        self.reports.cancel()
        await self.pc.close()

    async def report_light(self) -> None:
        """A receiver report per counted slot every 0.5-1.5 s, as aiortc's receiver sends them."""
        while True:
            await asyncio.sleep(0.5 + random.random())
            for t, (ssrc, counter) in self.counters.items():
                if counter.received:
                    info = RtcpReceiverInfo(ssrc=ssrc, fraction_lost=0, packets_lost=0, highest_sequence=counter.highest,
                                            jitter=0, lsr=0, dlsr=0)
                    # aiortc's private __rtcp_ssrc, by its mangled name (which mypy does not model)
                    rtcp_ssrc = t.receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
                    await t.receiver._send_rtcp(RtcpRrPacket(ssrc=rtcp_ssrc, reports=[info]))

    def _decode(self, transceiver, slot: Slot) -> None:
        async def consume(track) -> None:
            try:
                while True:
                    await track.recv()
                    now = time.time()
                    slot.times.append(now)
                    slot.decoded.append(now)
            except MediaStreamError:
                pass

        if transceiver.receiver._track is not None:  # an answerer's slot: its track exists already
            asyncio.ensure_future(consume(transceiver.receiver.track))
            return

        @self.pc.on("track")
        def on_track(track) -> None:
            if transceiver.receiver.track is track:
                asyncio.ensure_future(consume(track))


async def negotiate(p: Participant, cfg: dict, light: bool = True) -> None:
    await p.pc.setLocalDescription(await p.pc.createOffer())
    enlarge_socket_buffers(p.pc, SOCKET_BUFFER)
    offer = p.pc.localDescription.sdp
    if cfg["target"] == "sfu":
        import grpc
        from svpl.media.v1 import media_pb2, media_pb2_grpc

        async with grpc.aio.insecure_channel(p.spec["address"]) as channel:
            response = await media_pb2_grpc.MediaServiceStub(channel).Negotiate(
                media_pb2.NegotiateRequest(join_token=p.spec["token"], sdp_offer=offer),
                metadata=(("authorization", f"Bearer {cfg['gateway_token']}"),), timeout=30)
            answer = response.sdp_answer
    else:
        host, port = p.spec["address"].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write((json.dumps({"room": p.spec["room"], "sdp": offer}) + "\n").encode())
        await writer.drain()
        answer = json.loads(await reader.readline())["sdp"]
        writer.close()
    await p.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    if light:
        p.count_light(answer)


async def main() -> None:
    cfg = json.loads(sys.stdin.readline())
    async with contextlib.AsyncExitStack() as stack:
        people: Sequence[Participant]
        try:
            if cfg["target"] == "janus":
                from bench import janus

                people = await janus.join(cfg, stack)
            else:
                loopback_only()
                people = participants(cfg, Participant)
                for p in people:
                    await negotiate(p, cfg)
        except Exception as e:  # the orchestrator prints it, naming the case, instead of "no output"
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
            raise
        await measure(people)


P = TypeVar("P", bound=Participant)


def participants(cfg: dict, cls: type[P]) -> list[P]:
    """One per spec; the first of each room decodes one video slot."""
    clip = tuple([base64.b64decode(p) for p in cfg["clip"][kind]] for kind in ("video", "audio"))
    rooms_seen: set[str] = set()
    people = []
    for spec in cfg["participants"]:
        people.append(cls(spec, clip, spec["room"] not in rooms_seen))
        rooms_seen.add(spec["room"])
    return people


async def measure(people: Sequence[Participant]) -> None:
    """Ready when every slot has received media; then a JSON line per "report <t0> <t1>" until "stop"."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(s.times for p in people for s in p.slots):
        if time.monotonic() > deadline:
            counts = [[len(s.times) for s in p.slots] for p in people]
            print(json.dumps({"error": f"not every slot received media: {counts}"}), flush=True)
            return
        await asyncio.sleep(0.1)
    print("ready", flush=True)
    while (line := await asyncio.to_thread(sys.stdin.readline)).startswith("report"):
        _, t0, t1 = line.split()
        t0, t1 = float(t0), float(t1)
        span = t1 - t0
        video_fps = [sum(t0 <= t < t1 for t in s.times) / span for p in people for s in p.slots if s.kind == "video"]
        audio_fps = [sum(t0 <= t < t1 for t in s.times) / span for p in people for s in p.slots if s.kind == "audio"]
        decoded = [sum(t0 <= t < t1 for t in s.decoded) / span for p in people for s in p.slots if s.decoded]
        sent_fps = [sum(t0 <= t < t1 for t in p.video.times) / span for p in people]
        print(json.dumps({"sent_fps": sent_fps, "video_fps": video_fps, "audio_fps": audio_fps, "decoded_fps": decoded}),
              flush=True)
    for p in people:
        await p.close()


if __name__ == "__main__":
    asyncio.run(main())
