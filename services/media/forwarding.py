"""Forwarding encoded media between peer connections, packet by packet, never decoding or re-encoding.

aiortc's MediaRelay decodes every incoming frame and re-encodes it for every receiver
(12-14 % of a core per outgoing stream here). An SFU only needs to rewrite RTP headers.
No library does this for aiortc, so it is written against aiortc's internals, all of them in
services/media/rtc_internals.py (the versions pinned there and in pyproject.toml;
tests/media/test_aiortc_internals.py fails if an upgrade changes any of them):

- Receiving: aiortc's receiver does its receive statistics, NACKs, RTX unwrapping and bandwidth
  estimation (REMB), and then hands each packet to its jitter buffer for frame assembly; a
  :class:`Publication` takes that buffer's place (``rtc_internals.divert_received_packets``), so
  each packet goes on at once and nothing is ever decoded.
- A :class:`Publication` forwards an audio packet as it comes, and a video frame's packets when
  its last one (RTP marker) arrives: a frame cannot be decoded before that, and one batch per
  frame lets the kernel send it in one ``sendmsg`` (UDP GSO, :class:`DatagramBatch`). Late packets
  (the publisher's retransmissions after our NACKs) go on alone, at once.
- Sending: ``rtc_internals.RtpOut`` does what aiortc's sender loop does, per subscriber: the
  publisher's packet keeps its payload and gets the subscriber sender's header, sequence numbers
  and timestamps (continuous when the slot changes publisher), is SRTP-protected and goes straight
  to the nominated ICE pair's socket; the sender's retransmission history, Sender Report counters
  and getStats stay right. aiortc's loop itself stays parked in :meth:`ForwardTrack.recv`.
  Compiled (services/media/fastpath.c, unless SVPL_COMPILED_FORWARDING=0): one ``fan_out`` call per
  packet or frame does that for every subscriber whose track is armed (no rebase pending) and whose
  sender is still ready, checked in C; Python's :meth:`ForwardTrack.push` runs only for the others
  (starting, rebasing, not connected), with the same semantics as the Python path's.
- Keyframe requests (PLI, FIR) from a subscriber go to the publisher, throttled.
- We keep only the codecs we forward (VP8, Opus) in the negotiated list.

No media is written anywhere: packets live in memory only, for as long as a send or the
retransmission ring of 128 packets needs them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from typing import Any

from aiortc import MediaStreamError, MediaStreamTrack, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver

from services.media.bandwidth import PublisherCap, SlotEstimate, hold_to_subscribers
from services.media.rtc_internals import (
    FAN_PYTHON,
    FAN_REFUSED,
    RtpOut,
    RtpPacket,
    VpxPayloadDescriptor,
    attach_rtp_out,
    divert_received_packets,
    fan_out,
    ice_sockets,
    negotiated_codecs,
    ntp_time,
    pli_sender,
    set_negotiated_codecs,
)

log = logging.getLogger("svpl.media.forwarding")

# Codecs we forward (the payloader of the outgoing side must match the incoming bitstream).
FORWARDED_CODECS = {"audio": "audio/opus", "video": "video/VP8"}

CLOCK_RATES = {"audio": 48000, "video": 90000}  # Opus and VP8 RTP clocks (RFC 7587, RFC 7741)


def is_vp8_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: bit 0 of the 3-byte frame tag is 0 for a key frame, and a key frame's tag is
    followed by the start code 9d 01 2a and its size (7 bytes). The start code is checked too: the
    bit alone is true for half of any random payload, and a false keyframe would restart a
    subscriber's stream on garbage (a hostile publisher's, or a stray SSRC's)."""
    return len(data) >= 10 and not (data[0] & 0x01) and data[3:6] == b"\x9d\x01\x2a"


def starts_vp8_keyframe(payload: bytes) -> bool:
    """Whether an RTP payload is the first packet of a VP8 key frame: the payload descriptor marks the
    start of partition 0 (RFC 7741 4.2) and the frame tag's key-frame bit is 0 (RFC 6386 9.1)."""
    if not payload or not payload[0] & 0x10 or payload[0] & 0x07:
        return False
    try:
        _, data = VpxPayloadDescriptor.parse(payload)
    except ValueError:
        return False
    return is_vp8_keyframe(data)


def restrict_codecs(transceiver: RTCRtpTransceiver) -> None:
    """Keep only the forwarded codec (and its RTX) in the negotiated list."""
    wanted = FORWARDED_CODECS[transceiver.kind].lower()
    codecs = negotiated_codecs(transceiver)
    keep = [c for c in codecs if c.mimeType.lower() == wanted]
    pts = {c.payloadType for c in keep}
    rtx = [c for c in codecs if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") in pts]
    if not keep:
        raise ValueError(f"the offer has no {wanted} for {transceiver.kind}")
    set_negotiated_codecs(transceiver, keep + rtx)


def enlarge_socket_buffers(pc, size: int) -> int:
    """Give a peer connection's UDP sockets `size`-byte kernel buffers; returns how many were set.

    A forwarding process serves many streams from one event loop: when it is briefly not
    scheduled, the default ~208 kB receive buffer (a few dozen datagrams on loopback) overflows
    and whole frames are lost. The kernel caps the size at net.core.rmem_max / wmem_max."""
    count = 0
    for sock in ice_sockets(pc):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        count += 1
    return count


MAX_MISORDER = 100  # as aiortc's jitter buffer: a packet further behind than this means the source restarted


class Publication:
    """One incoming track of a participant, fanned out to subscriber tracks packet by packet."""

    def __init__(self, owner: str, kind: str, receiver: RTCRtpReceiver, keyframe_interval: float = 0.3) -> None:
        self.owner = owner
        self.kind = kind
        self.receiver = receiver
        self.subscribers: set[ForwardTrack] = set()
        self.frames = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self._interval = keyframe_interval
        self._last_request = -1e9
        self._pending: asyncio.TimerHandle | None = None
        self._frame: list[RtpPacket] = []  # the video frame being received (its packets so far)
        self._ssrc: int | None = None  # the source's SSRC and highest sequence number received
        self._highest = 0
        # The subscribers as fan_out takes them: (compiled tracks, their routes, the other tracks); None: to be made.
        self._targets: tuple[tuple[ForwardTrack, ...], list, tuple[ForwardTrack, ...]] | None = None
        self._pli = pli_sender(receiver)
        divert_received_packets(receiver, self._on_packet)
        # Video: held to the weakest subscriber's link (bandwidth.py).
        self.bandwidth: PublisherCap | None = (hold_to_subscribers(receiver, lambda: self.subscribers)
                                               if kind == "video" else None)

    def _on_packet(self, packet: RtpPacket) -> None:
        if not packet.payload:  # padding only (bandwidth probing): nothing to forward
            return
        seq = packet.sequence_number
        if packet.ssrc != self._ssrc:
            self._restart(packet)
        elif not 0 < (seq - self._highest) & 0xFFFF < 0x8000:  # not ahead of what came before
            if (self._highest - seq) & 0xFFFF <= MAX_MISORDER:
                self._fan_out([packet], False)  # late or retransmitted: on at once, on its own
                return
            self._restart(packet)  # a jump in the numbering
        self._highest = seq
        if self.kind != "video":
            self.frames += 1
            self._fan_out([packet], False)
            return
        if self._frame and packet.timestamp != self._frame[0].timestamp:
            self._flush()  # the previous frame's last packet is lost or late
        self._frame.append(packet)
        if packet.marker or len(self._frame) >= GSO_MAX_SEGMENTS:
            self._flush()

    def _restart(self, packet: RtpPacket) -> None:
        """The source (re)starts its numbering (a new SSRC, or a jump): every subscriber starts it anew."""
        if self._frame:
            self._flush()
        self._ssrc = packet.ssrc
        for track in tuple(self.subscribers):
            track.restart()

    def _flush(self) -> None:
        frame, self._frame = self._frame, []
        keyframe = starts_vp8_keyframe(frame[0].payload)
        self.frames += frame[-1].marker
        self.keyframes += keyframe
        self._fan_out(frame, keyframe)

    def subscribe(self, track: ForwardTrack) -> None:
        """`track` forwards this publication (again: its sender may have changed)."""
        self.subscribers.add(track)
        self._targets = None

    def unsubscribe(self, track: ForwardTrack) -> None:
        self.subscribers.discard(track)
        self._targets = None

    def _fan_out(self, packets: list[RtpPacket], keyframe: bool) -> None:
        # One NTP send time for the whole fan-out (aiortc's loop reads the clock twice per packet).
        ntp = ntp_time()
        abs_send_time = (ntp >> 14) & 0x00FFFFFF  # RTP abs-send-time: 6.18 fixed-point seconds
        targets = self._targets
        if targets is None:
            tracks = tuple(self.subscribers)
            compiled = tuple(t for t in tracks if t.route is not None)
            targets = self._targets = compiled, [t.route for t in compiled], tuple(t for t in tracks if t.route is None)
        compiled, routes, others = targets
        if routes:
            # Compiled: every armed, ready subscriber's send in one call (fastpath.c); the rest as `push` does.
            todo = fan_out(routes, packets, abs_send_time, ntp)  # routes only when it is built (RtpOut)
            for i, what, rest in todo or ():
                if what == FAN_PYTHON:
                    compiled[i].push(packets, keyframe, ntp, abs_send_time)
                elif isinstance(rest, BaseException):  # FAN_FAILED: the route's error
                    if not isinstance(rest, ConnectionError):  # (SRTP refused, the transport closed under us: as
                        log.error("forwarding to a subscriber failed", exc_info=rest)  # push, the track ends soon)
                else:
                    compiled[i].deliver(rest, what == FAN_REFUSED)
        for track in others:
            track.push(packets, keyframe, ntp, abs_send_time)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe: at most one PLI per interval, none lost."""
        if self.kind != "video":
            return
        now = time.monotonic()
        wait = self._last_request + self._interval - now
        if wait <= 0:
            self._send_pli(now)
        elif self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(wait, self._deferred)

    def _deferred(self) -> None:
        self._pending = None
        self._send_pli(time.monotonic())

    def _send_pli(self, now: float) -> None:
        self._last_request = now
        for source in self.receiver.getSynchronizationSources():
            self.keyframe_requests += 1
            asyncio.ensure_future(self._pli(source.source))

    def close(self) -> None:
        if self._pending:
            self._pending.cancel()
        if self.bandwidth is not None:
            self.bandwidth.close()
        for track in tuple(self.subscribers):
            track.unbind()


# Linux UDP GSO (udp(7) UDP_SEGMENT, Linux >= 4.18; Python 3.11's socket module has no constant): one
# sendmsg carries a frame's packets, the kernel cuts it into datagrams of the given size (only the
# last may be shorter). No library wraps this for asyncio datagram transports.
SOL_UDP, UDP_SEGMENT = 17, 103
GSO_MAX_SEGMENTS = 32  # kernel limit 64 segments and 64 KiB per send; 32 x ~1.3 kB stays below both


class DatagramBatch:
    """Sends a frame's datagrams on an asyncio datagram transport: one GSO ``sendmsg`` per up to 32 where
    the sizes allow it (all but the last equal) and nothing is queued in the transport (order is kept),
    otherwise, and from the first refusal on, the transport's own per-datagram ``sendto``."""

    __slots__ = ("gso", "_cmsg")

    def __init__(self) -> None:
        self.gso = True  # turned off if the kernel refuses UDP_SEGMENT on this route
        self._cmsg: dict[int, list] = {}

    def send(self, transport, datas: list[bytes], addr) -> None:
        size = len(datas[0])
        sock = getattr(transport, "_sock", None)  # asyncio's _SelectorDatagramTransport socket
        if (self.gso and len(datas) > 1 and sock is not None and not transport.get_write_buffer_size()
                and not transport.is_closing() and len(datas[-1]) <= size
                and all(len(d) == size for d in datas[1:-1])):
            cmsg = self._cmsg.get(size)
            if cmsg is None:
                cmsg = self._cmsg[size] = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
            done = 0
            try:
                for done in range(0, len(datas), GSO_MAX_SEGMENTS):
                    sock.sendmsg(datas[done:done + GSO_MAX_SEGMENTS], cmsg, 0, addr)
                return
            except (BlockingIOError, InterruptedError):
                pass  # the socket buffer is full: the transport queues the rest
            except OSError:
                self.gso = False  # e.g. EINVAL/EIO where the socket or route cannot segment
                log.warning("UDP GSO refused; sending datagram by datagram", exc_info=True)
            datas = datas[done:]
        sendto = transport.sendto
        for data in datas:
            sendto(data, addr)

    @staticmethod
    def send_one(transport, data: bytes, addr) -> None:
        """One datagram straight on the socket when nothing is queued (what the transport's ``sendto``
        does after its argument checks), else through the transport, which queues it in order."""
        sock = getattr(transport, "_sock", None)
        if sock is not None and not transport.get_write_buffer_size() and not transport.is_closing():
            try:
                sock.sendto(data, addr)
                return
            except OSError:
                pass  # a full buffer or an error: the transport queues it or reports it to its protocol
        transport.sendto(data, addr)


class ForwardTrack(MediaStreamTrack):
    """An outgoing slot: a publication's packets, sent on the subscriber's sender by `RtpOut`.

    Its source can change: a subscriber's slot is bound to whichever participant fills it.
    aiortc's own sender loop waits in `recv` until the track stops (it never gets a frame: packets
    go through `push`)."""

    def __init__(self, kind: str, mid: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.mid = mid  # the subscriber's transceiver this track is sent on
        self.source: Publication | None = None
        self.bandwidth_slot: SlotEstimate | None = None  # video in a meeting: the subscriber's reports (bandwidth.py)
        self._out: RtpOut | None = None
        self.route: Any = None  # compiled: the sender's fastpath.Route, which Publication's fan-out sends on
        self._rebase = True  # the next packets start a source on this sender (video: at a keyframe)
        self._live = True  # readyState == "live", without the property call per frame
        self._ended = asyncio.get_event_loop().create_future()

    def attach_sender(self, sender: RTCRtpSender, fastpath: bool = False) -> None:
        """Send on `sender` (`fastpath`: its per-packet work in compiled code, services/media/fastpath.c)."""
        # PLI / FIR from the subscriber: forward to the publisher instead of "encoding" a keyframe.
        self._out = attach_rtp_out(sender, self.request_keyframe, DatagramBatch(), fastpath)
        self.route = self._out.state if fastpath else None  # what Publication's fan-out sends on (compiled)
        if self.source is not None:
            self.source.subscribe(self)

    @property
    def sent(self) -> int:
        """Sends (frames, audio packets) that found the subscriber's sender ready."""
        return self._out.sends if self._out is not None else 0

    def bind(self, publication: Publication) -> None:
        self.unbind()
        self.source = publication
        self.restart()
        publication.subscribe(self)
        publication.request_keyframe()  # a new subscriber needs a keyframe to start decoding

    def restart(self) -> None:
        """The source's numbering changes: map it afresh from its next packet (video: its next keyframe)."""
        self._rebase = True
        if self._out is not None:
            self._out.arm(False)

    def unbind(self) -> None:
        if self.source is not None:
            self.source.unsubscribe(self)
            self.source = None

    def deliver(self, rest: list[bytes] | None, refused: bool) -> None:
        """After the compiled fan-out: what the socket did not take now, through the transport."""
        if self._out is not None:
            self._out.deliver(rest, refused)

    def request_keyframe(self) -> None:
        if self.source is not None:
            self.source.request_keyframe()

    def push(self, packets: list[RtpPacket], keyframe: bool, ntp: int, abs_send_time: int) -> None:
        out = self._out
        if out is None or not self._live:
            return
        if self._rebase:
            if self.kind == "video" and not keyframe:
                # Keep asking until a keyframe gets through (the publication throttles the PLIs): one
                # request can be lost, or answered while this sender was not ready yet, and the
                # subscriber's browser, having decoded nothing, never asks by itself.
                if out.ready():
                    self.request_keyframe()
                return
            if not out.ready():
                return
            out.rebase(packets[0], CLOCK_RATES[self.kind])
        try:
            sent = out.send(packets, ntp, abs_send_time)
        except ConnectionError:  # the transport closed under us (SRTP/ICE gone): the track ends soon
            return
        self._rebase = not sent  # what is dropped now must be followed by a fresh start (for video, a keyframe)
        out.arm(sent)  # compiled: from now on the fan-out sends on it in C, while the sender stays ready

    async def recv(self):
        """aiortc's sender loop parks here: frames never pass through it."""
        if self.readyState != "live":
            raise MediaStreamError
        await asyncio.shield(self._ended)
        raise MediaStreamError

    def stop(self) -> None:
        self._live = False
        self.unbind()
        super().stop()
        if not self._ended.done():
            self._ended.set_result(None)

