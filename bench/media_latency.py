"""One-way delay through the media service, next to a direct connection: the last part of
`make bench-media` (or alone: `bench/media.py latency`). Not a test.

A publisher replays the clip (video) and numbered Opus-sized payloads (audio, so that every
audio packet is recognisable); a subscriber receives it once through the media service and once
from the same kind of publisher connected to it directly (the baseline, in the same run). Both
ends are tapped where aiortc's DTLS transport handles plain RTP: the publisher's ``_send_rtp``
(as a packet leaves) and the subscriber's ``_handle_rtp_data`` (as it arrives, before any jitter
buffer). An audio packet is matched by its payload; a video frame by the tail of its last
packet's payload (the frame's last bytes, whatever the VP8 payload descriptor in front). The
delay is arrival minus the latest earlier send of that payload (the clip loops every 4 s).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
import uuid

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RtpPacket
from svpl.media.v1 import media_pb2

from bench.media_peers import Participant, loopback_only, negotiate
from devstack.harness import as_token

TAIL = 64  # bytes of a frame's last packet that identify it
AUDIO_SIZE = 64  # numbered audio payloads: 0xFC (an Opus TOC byte), a 3-byte number, padding


def _key(data: bytes) -> tuple[str, bytes] | None:
    packet = RtpPacket.parse(data)
    payload = packet.payload
    if len(payload) == AUDIO_SIZE and payload[0] == 0xFC:  # ours: a VP8 payload descriptor never has 0x40 set
        return ("audio", payload)
    if packet.marker and len(payload) > TAIL:
        return ("video", payload[-TAIL:])
    return None


class Tap:
    def __init__(self) -> None:
        self.sent: dict[tuple, list[float]] = {}
        self.arrived: list[tuple[tuple, float]] = []

    def on_send(self, pc: RTCPeerConnection) -> None:
        dtls = pc.getTransceivers()[0].sender.transport
        send = dtls._send_rtp

        async def tapped(data: bytes) -> None:
            key = _key(data) if 127 < data[0] < 192 and not 191 < data[1] < 209 else None  # RTP, not RTCP
            if key:
                self.sent.setdefault(key, []).append(time.monotonic())
            await send(data)

        dtls._send_rtp = tapped  # type: ignore[method-assign]  # a tap on this one transport

    def on_receive(self, pc: RTCPeerConnection) -> None:
        dtls = pc.getTransceivers()[0].receiver.transport
        handle = dtls._handle_rtp_data

        async def tapped(data: bytes, arrival_time_ms: int) -> None:
            key = _key(data)
            if key:
                self.arrived.append((key, time.monotonic()))
            await handle(data, arrival_time_ms=arrival_time_ms)

        dtls._handle_rtp_data = tapped  # type: ignore[method-assign]  # a tap on this one transport

    def delays(self, kind: str, since: float) -> list[float]:
        out = []
        for key, at in self.arrived:
            if key[0] != kind or at < since:
                continue
            earlier = [t for t in self.sent.get(key, ()) if t <= at]
            if earlier:
                out.append((at - max(earlier)) * 1000)
        return out


def _clip(video: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """The clip's video, and 60 s of numbered audio payloads (the SFU never decodes them)."""
    return video, [b"\xfc" + i.to_bytes(3, "big") + bytes(AUDIO_SIZE - 4) for i in range(50 * 60)]


async def _direct(clip, tap: Tap) -> list[RTCPeerConnection]:
    publisher = Participant({"slots": 0}, clip, decode_one=False)
    subscriber = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    await publisher.pc.setLocalDescription(await publisher.pc.createOffer())
    await subscriber.setRemoteDescription(publisher.pc.localDescription)
    await subscriber.setLocalDescription(await subscriber.createAnswer())
    await publisher.pc.setRemoteDescription(subscriber.localDescription)
    tap.on_send(publisher.pc)
    tap.on_receive(subscriber)
    return [publisher.pc, subscriber]


async def measure(video: list[bytes], server, keyring, tokens: dict, seconds: float = 10.0) -> list[str]:
    """Returns the report lines: p50 / p95 / max one-way delay for audio and video, via media and direct."""
    loopback_only()
    clip = _clip(video)
    room = f"bench-latency-{uuid.uuid4().hex[:8]}"
    await server.stub.OpenRoom(media_pb2.OpenRoomRequest(meeting_id=room), metadata=as_token(tokens["roster"]))
    cfg = {"target": "sfu", "gateway_token": tokens["gateway"]}
    via, direct = Tap(), Tap()
    people = []
    pcs = []
    try:
        for i, slots in ((0, 0), (1, 1)):  # p0 publishes, p1 has one slot of each kind
            token = keyring.issue_join_token(meeting_id=room, participant_id=f"p{i}", media_instance=server.instance,
                                             ttl=dt.timedelta(minutes=10))[0]
            p = Participant({"room": room, "slots": slots, "token": token, "address": server.address}, clip, False)
            await negotiate(p, cfg, light=False)
            people.append(p)
        via.on_send(people[0].pc)
        via.on_receive(people[1].pc)
        pcs = await _direct(clip, direct)
        await asyncio.sleep(2.0)  # connected, past the first keyframe
        since = time.monotonic()
        await asyncio.sleep(seconds)
    finally:
        for pc in [p.pc for p in people] + pcs:
            await pc.close()
        await server.stub.CloseRoom(media_pb2.CloseRoomRequest(meeting_id=room), metadata=as_token(tokens["roster"]))
    lines = [f"one-way delay, publisher's send -> subscriber's arrival (plain RTP at DTLS, loopback), {seconds:g} s, ms:"]
    for kind, what in (("audio", "audio packet"), ("video", "video frame (last packet)")):
        cells = []
        for name, tap in (("via media", via), ("direct", direct)):
            d = sorted(tap.delays(kind, since))
            if not d:
                cells.append(f"{name}: nothing arrived")
                continue
            cells.append(f"{name} p50 {statistics.median(d):6.2f} p95 {d[int(0.95 * (len(d) - 1))]:6.2f} "
                         f"max {d[-1]:6.2f} (n={len(d)})")
        lines.append(f"  {what:26} " + "   ".join(cells))
    return lines
