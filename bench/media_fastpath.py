"""The media service's send path alone: CPU per forwarded packet (one publisher packet to one subscriber)
for a publication fanned out to N subscribers, three ways, in one process, alternating. Not a test.

- python: the Python reference (SVPL_COMPILED_FORWARDING=false): per subscriber ForwardTrack.push ->
  RtpOut.send -> RtpOut._send_python;
- per subscriber: compiled, one call into fastpath.c per subscriber and packet (ForwardTrack.push ->
  RtpOut.send -> RtpOut._send_compiled -> fastpath.send), as before the fan-out;
- fan-out: compiled, one fastpath.fan_out call per packet (or video frame) for all subscribers, as the
  media service now does (forwarding.Publication._fan_out).

All three go through Publication._fan_out and the same RtpOut code as the service, on real aiortc senders
whose DTLS transport and nominated ICE pair are stand-ins (connected, one pair): each subscriber's packets
are re-headed, kept for retransmission, SRTP-protected (AES-CM/HMAC-SHA1-80, a session per subscriber),
counted for Sender Reports and sent on a real loopback UDP socket through asyncio's datagram transport,
where a receiving socket reads them off (not counted). What is sent is one second of a publisher as the
bench's clip sends it (15 video frames of 1-4 packets of ~1.1 kB, 50 audio packets of ~100 B). CPU is this
process's (user + system: the kernel's send work is in it), from time.process_time, which a busy shared
machine disturbs far less than wall-clock rates. "syscalls only" is the same datagrams, already protected,
sent with the same system calls: what no user-space work goes below.

    python bench/media_fastpath.py [seconds per round, default 2] [rounds, default 3] [subscribers, default 9]
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from types import SimpleNamespace
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpParameters
from pylibsrtp import Policy, Session

from services.media.forwarding import ForwardTrack, Publication
from services.media.rtc_internals import RtpPacket

KEY = bytes(range(30))
WAYS = ("python", "per subscriber", "fan-out")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    subscribers = int(sys.argv[3]) if len(sys.argv) > 3 else 9
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    receiver.setblocking(False)
    transport: Any
    transport, _ = loop.run_until_complete(loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                         local_addr=("127.0.0.1", 0)))
    addr = receiver.getsockname()

    def subscriber(fastpath: bool) -> ForwardTrack:
        """A subscriber's video slot on a real aiortc sender; its DTLS transport and ICE pair stand-ins."""
        sender: Any = pc.addTransceiver("video").sender
        sender._RTCRtpSender__rtp_header_extensions_map.configure(
            RTCRtpParameters(headerExtensions=HEADER_EXTENSIONS["video"]))
        sender._RTCRtpSender__mid = "1"
        pair = SimpleNamespace(protocol=SimpleNamespace(transport=transport), remote_addr=addr)
        sender._RTCRtpSender__transport = SimpleNamespace(
            _state=State.CONNECTED, transport=SimpleNamespace(_connection=SimpleNamespace(_nominated={1: pair})),
            _tx_srtp=Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND)),
            _RTCDtlsTransport__tx_bytes=0, _RTCDtlsTransport__tx_packets=0)
        track = ForwardTrack("video")
        track.attach_sender(sender, fastpath)
        assert track._out is not None
        track._out.payload_type = 96
        return track

    publications = {}
    for way in WAYS:
        tracks = {subscriber(way != "python") for _ in range(subscribers)}
        if way == "per subscriber":
            for track in tracks:
                track.route = None  # the publication then calls push per subscriber, as before the fan-out
        publications[way] = SimpleNamespace(subscribers=tracks, _targets=None)
    # One second of a publisher as the bench's clip sends it: 15 video frames (1-4 packets), 50 audio packets.
    frames: list[list[RtpPacket]] = []
    seq = ts = 0
    for i in range(65):
        n = 1 if i % 13 else 4
        size = 100 if i % 13 and i % 4 else 1100
        frames.append([RtpPacket(payload_type=100, sequence_number=(seq + k) & 0xFFFF, timestamp=ts, marker=int(k == n - 1),
                                 payload=bytes([k]) * size) for k in range(n)])
        seq, ts = seq + n, ts + 3000

    def drain() -> None:
        try:
            while True:
                receiver.recv(4096)
        except BlockingIOError:
            pass

    def run(way: str) -> float:
        publication = publications[way]
        for track in publication.subscribers:  # the source's numbering moved on in the other ways' runs
            track.restart()
        packets = 0
        cpu = 0.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for frame in frames:  # numbers go on: SRTP never sees one twice
                for p in frame:
                    p.sequence_number = (p.sequence_number + seq) & 0xFFFF
            t0 = time.process_time()
            for frame in frames:
                Publication._fan_out(publication, frame, True)  # type: ignore[arg-type]
                packets += len(frame) * subscribers
            cpu += time.process_time() - t0
            drain()
        return cpu / packets * 1e6

    def floor() -> float:
        sock = transport._sock
        datagrams = [[bytes(len(p.payload) + 40) for p in frame] for frame in frames]
        packets = 0
        cpu = 0.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.process_time()
            for datas in datagrams:
                for _ in range(subscribers):
                    if len(datas) == 1:
                        sock.sendto(datas[0], addr)
                    else:
                        sock.sendmsg(datas, [(17, 103, len(datas[0]).to_bytes(2, sys.byteorder))], 0, addr)
                    packets += len(datas)
            cpu += time.process_time() - t0
            drain()
        return cpu / packets * 1e6

    for way in WAYS:  # warm up: every sender started (rebased, armed)
        run_once = publications[way]
        for frame in frames[:2]:
            Publication._fan_out(run_once, frame, True)  # type: ignore[arg-type]
    drain()
    results: dict[str, list[float]] = {way: [] for way in (*WAYS, "syscalls only")}
    for r in range(rounds):
        for way in WAYS if r % 2 == 0 else reversed(WAYS):
            results[way].append(run(way))
        results["syscalls only"].append(floor())
    transport.close()
    loop.run_until_complete(pc.close())
    print(f"{subscribers} subscribers; load average before: {os.getloadavg()[0]:.2f} (1 min)")
    for way, values in results.items():
        print(f"{way:14} us of CPU per forwarded packet: " + " ".join(f"{v:.2f}" for v in values))
    for a, b in (("fan-out", "per subscriber"), ("fan-out", "python"), ("per subscriber", "python")):
        print(f"{a} / {b}: " + " ".join(f"{x / y:.2f}" for x, y in zip(results[a], results[b])))
    above = [(f - s) for f, s in zip(results["fan-out"], results["syscalls only"])]
    print("fan-out above the system calls, us: " + " ".join(f"{v:.2f}" for v in above))


if __name__ == "__main__":
    main()
