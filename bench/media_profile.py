"""Break a py-spy raw profile of the media process down into the parts of its receive path, RTCP and
send path, as shares of the busy samples (docs/MEDIA-RECEIVE.md). Not a test.

    py-spy record --nonblocking -r 100 -d 12 -p <media pid> -f raw -o out.txt
    python bench/media_profile.py out.txt

A stack belongs to the first part whose functions it passes through (in the order below); samples of the
event loop waiting in epoll are idle and left out.
"""

from __future__ import annotations

import collections
import re
import sys

# (part, any of these function names in the stack), first match wins.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("send: NACK retransmissions", ("_retransmit",)),
    ("send, all subscribers (fan-out)", ("_fan_out", "ForwardTrack.push", "RtpOut.")),
    ("RTCP: Sender Reports (per-sender loop)", ("RTCRtpSender._run_rtcp",)),
    ("RTCP: Receiver Reports (per-receiver loop)", ("RTCRtpReceiver._run_rtcp",)),
    ("RTCP: incoming (parse, route, handlers)", ("_handle_rtcp_data", "_handle_rtcp_packet")),
]
RECEIVE = ("datagram_received", "_handle_rtp_data", "_handle_rtp_packet", "PacketSink", "_on_packet", "LeanReceive")
RECEIVE_PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("SRTP unprotect", ("unprotect",)),
    ("RtpPacket.parse", ("RtpPacket.parse", "HeaderExtensionsMap.get")),
    ("parse_rtp (lean)", ("parse_rtp",)),
    ("REMB estimator", ("RemoteBitrateEstimator", "RateCounter", "InterArrival", "Overuse", "AimdRateControl")),
    ("REMB/NACK send (build, SRTCP protect, sendto)", ("_send_rtcp",)),
    ("receive statistics", ("StreamStatistics",)),
    ("NACK generator", ("NackGenerator",)),
    ("RTX unwrap", ("unwrap_rtx", "is_rtx")),
    ("VP8 depayloading", ("depayload", "VpxPayloadDescriptor")),
    ("clock (current_ms, current_datetime)", ("current_datetime", "current_ms")),
    ("router", ("route_rtp",)),
    ("Publication._on_packet before the fan-out", ("_on_packet", "PacketSink", "_flush", "starts_vp8")),
]


def part(frames: list[str]) -> str:
    def through(names: tuple[str, ...]) -> bool:
        return any(name in frame for frame in frames for name in names)

    for name, names in PARTS:
        if through(names):
            return name
    if through(RECEIVE):
        for name, names in RECEIVE_PARTS:
            if through(names):
                return "receive: " + name
        if frames[-1].startswith("LeanReceive"):
            return "receive: LeanReceive's own lines"
        return "receive: handlers and callback (coroutines, counters, demux)"
    if through(("_read_ready",)):
        return "socket reads, other datagrams"
    return "event loop, other"


def main() -> None:
    shares: collections.Counter[str] = collections.Counter()
    for line in open(sys.argv[1], encoding="utf-8"):
        stack, _, samples = line.rstrip().rpartition(" ")
        frames = [re.sub(r" \(.*", "", frame) for frame in stack.split(";")]
        if frames[-1].startswith("EpollSelector.select"):
            continue
        shares[part(frames)] += int(samples)
    total = sum(shares.values())
    print(f"busy samples: {total}")
    print("| part | share of busy |\n|---|---|")
    for name, count in shares.most_common():
        print(f"| {name} | {100 * count / total:.1f} % |")
    receive = sum(count for name, count in shares.items() if name.startswith("receive"))
    print(f"| receive, total | {100 * receive / total:.1f} % |")


if __name__ == "__main__":
    main()
