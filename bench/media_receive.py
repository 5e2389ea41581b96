"""The media service's receive path alone: CPU per received packet of a publication, the lean path
(rtc_internals.LeanReceive with fastpath.c's parse_rtp) next to aiortc's own (its reference, what runs with
SVPL_COMPILED_FORWARDING=false), in one process, alternating. Not a test.

What it receives is what a publisher sends in a meeting (the bench's clip: 15 VP8 frames of 1-4 packets
of ~1.1 kB with abs-send-time, 50 Opus packets of ~100 B per second), SRTP-protected (AES-CM/HMAC-SHA1-80)
beforehand, and handed to the socket callback the media service installs (rtc_internals._direct: counting,
SRTP unprotect, then the lean path or aiortc's handlers, up to the Publication, which forwards to no
subscriber here). The RTCP the receivers send (REMB) is dropped before the socket. CPU is this process's
(time.process_time), per batch of one publisher-second (~100 packets), the median batch reported; a busy
shared machine disturbs CPU time far less than wall-clock rates. Each round has
fresh sequence numbers (SRTP refuses a replay).

    python bench/media_receive.py [seconds per round, default 2] [rounds, default 3]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.clock import current_ntp_time
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from services.media import rtc_internals
from services.media.forwarding import Publication

KEY = bytes(range(30))
VIDEO_SSRC, RTX_SSRC, AUDIO_SSRC = 1111, 1112, 2222
EXTENSIONS = [RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")]


async def receiving_end(lean: bool) -> tuple[Any, Any, Any]:
    """A connected-looking peer connection with a video and an audio Publication (BUNDLE: one transport), and
    the socket callback the media service gives its ICE sockets."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video: Any = pc.addTransceiver("video", direction="recvonly").receiver
    audio: Any = pc.addTransceiver("audio", direction="recvonly").receiver
    dtls: Any = video.transport
    audio._RTCRtpReceiver__transport = dtls  # bundled, as a browser's offer is
    for kind, receiver in (("video", video), ("audio", audio)):
        Publication("p", kind, receiver)
        receiver._track = RemoteStreamTrack(kind=kind)
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    rtx = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=97, parameters={"apt": 96})
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    await video.receive(RTCRtpReceiveParameters(codecs=[vp8, rtx], headerExtensions=EXTENSIONS, encodings=[
        RTCRtpDecodingParameters(ssrc=VIDEO_SSRC, payloadType=96, rtx=RTCRtpRtxParameters(ssrc=RTX_SSRC))]))
    await audio.receive(RTCRtpReceiveParameters(codecs=[opus], headerExtensions=EXTENSIONS, encodings=[
        RTCRtpDecodingParameters(ssrc=AUDIO_SSRC, payloadType=111)]))
    video._set_rtcp_ssrc(0x5555)
    audio._set_rtcp_ssrc(0x6666)
    dtls._state = State.CONNECTED
    dtls._rx_srtp = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    dtls._tx_srtp = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))

    async def nowhere(data: bytes) -> None:  # the RTCP the receivers send (REMB): not measured
        pass

    dtls.transport._send = nowhere
    callback = rtc_internals._direct(lambda data, addr: None, asyncio.Queue(),
                                     dtls, rtc_internals.LeanReceive(dtls) if lean else None)
    return pc, callback, Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))


def one_second(numbers: dict[str, int], extensions: HeaderExtensionsMap) -> list[bytes]:
    """A publisher's next second as the bench's clip sends it (`numbers`: where its sequence numbers are),
    unprotected."""
    out = []
    for i in range(65):
        if i % 13 == 0 or not i % 4:  # a video frame: a keyframe-sized one (4 packets) or a delta (1 packet)
            n = 4 if i % 13 == 0 else 1
            numbers["ts"] += 6000
            for k in range(n):
                packet = RtpPacket(payload_type=96, sequence_number=numbers["video"] & 0xFFFF,
                                   timestamp=numbers["ts"] & 0xFFFFFFFF, marker=int(k == n - 1), ssrc=VIDEO_SSRC,
                                   payload=b"\x90\x80" + bytes(1100))
                packet.extensions.abs_send_time = (current_ntp_time() >> 14) & 0xFFFFFF
                out.append(packet.serialize(extensions))
                numbers["video"] += 1
        numbers["audio"] += 1
        out.append(RtpPacket(payload_type=111, sequence_number=numbers["audio"] & 0xFFFF,
                             timestamp=(numbers["audio"] * 960) & 0xFFFFFFFF, ssrc=AUDIO_SSRC,
                             payload=b"\xfc" + bytes(100)).serialize(extensions))
    return out


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpReceiveParameters(headerExtensions=EXTENSIONS))
    ends = {path: loop.run_until_complete(receiving_end(path == "lean")) for path in ("aiortc", "lean")}
    numbers = {path: {"video": 0, "audio": 0, "ts": 0} for path in ends}
    addr = ("127.0.0.1", 9)

    def run(path: str) -> float:
        """The median over the round's batches (one second of a publisher each) of the CPU per packet: a
        garbage collection or a neighbour's burst falls into a few batches, not into the figure."""
        _, callback, protect = ends[path]
        per_packet = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            plain = one_second(numbers[path], extensions)
            datagrams = [protect.protect(p) for p in plain]  # the publisher's work: not counted
            t0 = time.process_time()
            for data in datagrams:
                callback(data, addr)
            per_packet.append((time.process_time() - t0) / len(datagrams) * 1e6)
        return statistics.median(per_packet)

    def unprotect_only() -> float:
        """SRTP unprotect alone (pylibsrtp): what both paths spend before their own work."""
        inbound = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
        outbound = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        per_packet, state = [], {"video": 0, "audio": 0, "ts": 0}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            datagrams = [outbound.protect(p) for p in one_second(state, extensions)]
            t0 = time.process_time()
            for data in datagrams:
                inbound.unprotect(data)
            per_packet.append((time.process_time() - t0) / len(datagrams) * 1e6)
        return statistics.median(per_packet)

    results: dict[str, list[float]] = {"aiortc": [], "lean": [], "unprotect only": []}
    for i in range(rounds):
        for path in (("aiortc", "lean") if i % 2 == 0 else ("lean", "aiortc")):
            results[path].append(run(path))
        results["unprotect only"].append(unprotect_only())
    for pc, _, _ in ends.values():
        loop.run_until_complete(pc.close())
    for path, values in results.items():
        print(f"{path:14} us of CPU per received packet: " + " ".join(f"{v:.2f}" for v in values))
    print("lean / aiortc: " + " ".join(f"{lean / ref:.2f}" for lean, ref in zip(results["lean"], results["aiortc"])))


if __name__ == "__main__":
    main()
