"""The media service's send path alone: CPU per forwarded packet, compiled (services/media/fastpath.c) next
to its Python reference (rtc_internals.RtpOut._send_python), in one process, alternating. Not a test.

What it sends is what one subscriber's sender sends in a meeting: video frames of 1-4 packets (~1.1 kB)
and audio packets (~100 B), re-headed, kept for retransmission, SRTP-protected (AES-CM/HMAC-SHA1-80)
and sent on a real loopback UDP socket through asyncio's datagram transport, where a receiving socket
reads them off (its reads are not counted). CPU is this process's (user + system, so the kernel's
send work is in it), from time.process_time, which a busy shared machine disturbs far less than
wall-clock rates.

    python bench/media_fastpath.py [seconds per round, default 2] [rounds, default 3]
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcrtpparameters import RTCRtpParameters
from pylibsrtp import Policy, Session

from services.media import _fastpath
from services.media.forwarding import DatagramBatch
from services.media.rtc_internals import RtpOut, RtpPacket, SrtpProtect, srtp_context, srtp_protect_function

KEY = bytes(range(30))


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    loop = asyncio.new_event_loop()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender: Any = pc.addTransceiver("video").sender
    sender._RTCRtpSender__rtp_header_extensions_map.configure(RTCRtpParameters(headerExtensions=HEADER_EXTENSIONS["video"]))
    sender._RTCRtpSender__mid = "1"
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    receiver.setblocking(False)
    transport: Any
    transport, _ = loop.run_until_complete(loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                                         local_addr=("127.0.0.1", 0)))
    addr = receiver.getsockname()
    outs = {}
    for path in ("compiled", "python"):
        out = RtpOut(sender, DatagramBatch(), fastpath=path == "compiled")
        session = Session(policy=Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        out.payload_type, out._transport, out._addr = 96, transport, addr
        out._protect = SrtpProtect(session)
        out._route_c = _fastpath.Route(transport._sock, addr[0], addr[1], srtp_protect_function(), srtp_context(session), session)
        outs[path] = out
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

    def run(path: str) -> float:
        out = outs[path]
        send = out._send_compiled if path == "compiled" else out._send_python
        packets = 0
        cpu = 0.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            out._sequence_offset = (out._sequence_offset + seq) & 0xFFFF  # numbers go on: SRTP never sees one twice
            t0 = time.process_time()
            for frame in frames:
                send(frame, 0x123456)
                packets += len(frame)
            cpu += time.process_time() - t0
            drain()
        return cpu / packets * 1e6

    def floor() -> float:
        """The system calls alone: the same datagrams, already protected, on the same socket (sendto, or one
        GSO sendmsg per multi-packet frame): what no user-space work can go below."""
        sock = transport._sock
        datagrams = [[bytes(len(p.payload) + 40) for p in frame] for frame in frames]
        packets = 0
        cpu = 0.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.process_time()
            for datas in datagrams:
                if len(datas) == 1:
                    sock.sendto(datas[0], addr)
                else:
                    sock.sendmsg(datas, [(17, 103, len(datas[0]).to_bytes(2, sys.byteorder))], 0, addr)
                packets += len(datas)
            cpu += time.process_time() - t0
            drain()
        return cpu / packets * 1e6

    results: dict[str, list[float]] = {"compiled": [], "python": [], "syscalls only": []}
    for _ in range(rounds):
        for path in ("python", "compiled"):
            results[path].append(run(path))
        results["syscalls only"].append(floor())
    transport.close()
    loop.run_until_complete(pc.close())
    for path, values in results.items():
        print(f"{path:13} us of CPU per forwarded packet: " + " ".join(f"{v:.2f}" for v in values))
    ratios = [c / p for c, p in zip(results["compiled"], results["python"])]
    print("compiled / python: " + " ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
