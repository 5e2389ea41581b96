"""Forwarding encoded media between peer connections, packet by packet, never decoding or re-encoding.

aiortc's MediaRelay decodes every incoming frame and re-encodes it for every receiver
(12-14 % of a core per outgoing stream here). An SFU only needs to rewrite RTP headers.
No library does this for aiortc, so it is written here against aiortc 1.16.0's internals
(pinned in pyproject.toml with aioice and pylibsrtp; tests/media/test_aiortc_internals.py fails
if an upgrade changes any of them):

- Receiving: ``RTCRtpReceiver._handle_rtp_packet`` feeds the bitrate estimator (REMB), the
  receive statistics (Receiver Reports, getStats) and the NACK generator, unwraps RTX, and then
  hands every packet to its private jitter buffer (``_RTCRtpReceiver__jitter_buffer.add``),
  which assembles frames for the decoder. We replace that jitter buffer with a
  :class:`PacketSink`: all of aiortc's receive bookkeeping stays, and each packet goes on at
  once. aiortc's buffer would hold audio for 4 packets (its prefetch, ~80 ms) and a video frame
  until the next frame starts (~67 ms at 15 fps); nothing is ever decoded, the decoder thread
  only sees the final ``None``.
- A :class:`Publication` forwards an audio packet as it comes, and a video frame's packets when
  its last one (RTP marker) arrives: a frame cannot be decoded before that, and one batch per
  frame lets the kernel send it in one ``sendmsg`` (UDP GSO). Late packets (the publisher's
  retransmissions after our NACKs) go on alone, at once.
- Sending: aiortc's own sender loop (``RTCRtpSender._run_rtp``) costs several nested awaits and
  an ``RtpPacket`` serialisation per packet, and needs frames. :class:`RtpOut` does what that
  loop does: for each subscriber the publisher's packet keeps its payload (the VP8 payload
  descriptor included) and gets the subscriber sender's header (its SSRC, payload type, MID and
  abs-send-time extensions, serialised by aiortc once and then patched), its sequence number and
  timestamp shifted into the sender's own spaces (continuous when the slot changes publisher),
  is SRTP-protected by the DTLS transport's libsrtp session and goes straight to the nominated
  ICE pair's socket (asyncio's ``_SelectorDatagramTransport._sock``) when nothing is queued in
  the transport; otherwise through the transport, which keeps the order.
  It keeps the sender's RTP history (NACK retransmission: the sender's ``__rtp_history`` is
  replaced by a :class:`RawHistory` ring of plain RTP bytes, parsed only for ``_retransmit``),
  its Sender Report counters and the DTLS transport's byte counters as aiortc's loop does.
  aiortc's loop itself stays parked in :meth:`ForwardTrack.recv` until the track stops.
- ``RTCRtpSender._handle_rtcp_packet`` calls ``self._send_keyframe()`` for PLI and
  FIR; we override it per sender to ask the publisher (throttled).
- ``RTCRtpReceiver._send_rtcp_pli(media_ssrc)`` sends a PLI to the publisher.
- ``RTCRtpTransceiver._codecs`` is the negotiated codec list the answer and the
  sender use; we keep only the codecs we forward (VP8, Opus).
- aiortc's ICE transport keeps its aioice ``Connection`` in ``_connection``, whose
  ``_protocols`` hold the UDP sockets; we enlarge their buffers (see enlarge_socket_buffers).

No media is written anywhere: packets live in memory only, for as long as a send or the
retransmission ring of 128 packets needs them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import sys
import time
from typing import Callable

from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver, clock
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from pylibsrtp import SRTP_MAX_TRAILER_LEN
from pylibsrtp._binding import ffi as srtp_ffi, lib as srtp_lib

log = logging.getLogger("svpl.media.forwarding")

# Codecs we forward (the payloader of the outgoing side must match the incoming bitstream).
FORWARDED_CODECS = {"audio": "audio/opus", "video": "video/VP8"}
RTP_HISTORY_SIZE = 128  # aiortc.rtcrtpsender's: NACKs look packets up by sequence number modulo this

CLOCK_RATES = {"audio": 48000, "video": 90000}  # Opus and VP8 RTP clocks (RFC 7587, RFC 7741)
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_HEADER_FIELDS = struct.Struct("!BHI")  # RTP header bytes 1-7: marker and payload type, sequence number, timestamp


def is_vp8_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: bit 0 of the first byte of the frame tag is 0 for a key frame."""
    return bool(data) and not (data[0] & 0x01)


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


class PacketSink:
    """Stands in for a receiver's jitter buffer: each packet aiortc's receiver has counted, checked and
    NACK-tracked goes to `on_packet` at once instead of into frame assembly for a decoder."""

    def __init__(self, on_packet: Callable[[RtpPacket], None]) -> None:
        self._on_packet = on_packet

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        """aiortc's ``JitterBuffer.add``: (send a PLI?, a complete frame for the decoder): never either."""
        try:
            self._on_packet(packet)
        except Exception:  # noqa: BLE001 - never break the receiver's RTP path
            log.exception("forwarding a packet failed")
        return False, None


def restrict_codecs(transceiver: RTCRtpTransceiver) -> None:
    """Keep only the forwarded codec (and its RTX) in the negotiated list."""
    wanted = FORWARDED_CODECS[transceiver.kind].lower()
    keep = [c for c in transceiver._codecs if c.mimeType.lower() == wanted]
    pts = {c.payloadType for c in keep}
    rtx = [c for c in transceiver._codecs if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") in pts]
    if not keep:
        raise ValueError(f"the offer has no {wanted} for {transceiver.kind}")
    transceiver._codecs = keep + rtx


def enlarge_socket_buffers(pc, size: int) -> int:
    """Give a peer connection's UDP sockets `size`-byte kernel buffers; returns how many were set.

    A forwarding process serves many streams from one event loop: when it is briefly not
    scheduled, the default ~208 kB receive buffer (a few dozen datagrams on loopback) overflows
    and whole frames are lost. The kernel caps the size at net.core.rmem_max / wmem_max."""
    count = 0
    for t in pc.getTransceivers():
        connection = getattr(t.receiver.transport.transport, "_connection", None)
        for protocol in getattr(connection, "_protocols", ()):
            sock = protocol.transport.get_extra_info("socket") if getattr(protocol, "transport", None) else None
            if sock is not None:
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
        setattr(receiver, _JITTER_BUFFER, PacketSink(self._on_packet))

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

    def _fan_out(self, packets: list[RtpPacket], keyframe: bool) -> None:
        # One NTP send time for the whole fan-out (aiortc's loop reads the clock twice per packet).
        ntp = clock.current_ntp_time()
        abs_send_time = (ntp >> 14) & 0x00FFFFFF  # RTP abs-send-time: 6.18 fixed-point seconds
        for track in tuple(self.subscribers):
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
            asyncio.ensure_future(self.receiver._send_rtcp_pli(source.source))

    def close(self) -> None:
        if self._pending:
            self._pending.cancel()
        for track in tuple(self.subscribers):
            track.unbind()


class RawHistory:
    """The sender's RTP history (aiortc's ``__rtp_history``: sequence number % 128 -> packet) kept as
    the plain RTP bytes sent, in a fixed ring; a packet object is parsed only when a NACK asks for it.

    aiortc's ``RTCRtpSender._retransmit`` is its only reader and calls only ``get``; its own send loop
    (parked, see ForwardTrack.recv) would store packets with ``[]=``."""

    __slots__ = ("ring", "extensions_map")

    def __init__(self, extensions_map) -> None:
        self.ring: list[bytes | None] = [None] * RTP_HISTORY_SIZE
        self.extensions_map = extensions_map  # the sender's, configured when it starts

    def get(self, index: int, default=None):
        data = self.ring[index]
        return default if data is None else RtpPacket.parse(data, self.extensions_map)

    def __setitem__(self, index: int, packet: RtpPacket) -> None:
        self.ring[index] = packet.serialize(self.extensions_map)


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


class SrtpProtect:
    """libsrtp's ``srtp_protect`` on a DTLS transport's outgoing SRTP session, without pylibsrtp's
    per-call wrapping.

    ``pylibsrtp.Session.protect`` checks its argument's type, allocates a length cell and resolves the
    binding on every call; under cProfile at a forwarder's packet rate that wrapping took about
    twice the time of the encryption itself. This keeps one length cell and calls the same function on the session's own buffer
    (``_srtp``, ``_cdata``, ``_buffer``: pylibsrtp 1.0.0, pinned; tests/media/test_aiortc_internals.py
    checks them). One event loop thread uses a session, so sharing its buffer is safe, as it is
    for pylibsrtp's own calls."""

    __slots__ = ("_session", "_call", "_srtp", "_cdata", "_buffer", "_length", "_limit")

    def __init__(self, session) -> None:
        self._session = session  # keeps the libsrtp context (freed with the session) alive
        self._call = srtp_lib.srtp_protect
        self._srtp = session._srtp[0]
        self._cdata = session._cdata
        self._buffer = session._buffer
        self._length = srtp_ffi.new("int *")
        self._limit = len(session._cdata) - SRTP_MAX_TRAILER_LEN

    def __call__(self, plain: bytes) -> bytes:
        size = len(plain)
        if size > self._limit:
            raise ValueError("packet is too long")
        buffer = self._buffer
        buffer[0:size] = plain
        length = self._length
        length[0] = size
        status = self._call(self._srtp, self._cdata, length)
        if status:
            raise ConnectionError(f"SRTP protect failed (libsrtp status {status})")
        return buffer[0:length[0]]


class RtpOut:
    """Sends a source's RTP packets on one `RTCRtpSender`, re-headed as its `_run_rtp` loop would.

    What a send needs from the connection (the nominated pair's transport and address, the SRTP
    session) is looked up again only when the DTLS transport or the nominated pair changes."""

    def __init__(self, sender: RTCRtpSender) -> None:
        self.sender = sender
        self.payload_type: int | None = None  # set once the sender has started (ForwardTrack.attach_sender)
        self._sequence = random.randint(0, 0xFFFF)  # the next sequence number this sender uses
        self._timestamp_origin = random.getrandbits(32)
        self._sequence_offset = self._timestamp_offset = 0  # source -> this sender (see rebase)
        self._first = 0  # the source's first sequence number sent since rebase
        self._last_timestamp: int | None = None
        self._last_time = 0.0
        history = RawHistory(sender._RTCRtpSender__rtp_header_extensions_map)
        sender._RTCRtpSender__rtp_history = history
        self._ring = history.ring
        self._extensions = None  # MID and abs-send-time, as aiortc's loop sets them (for _serialize)
        self._header: bytes | None = None  # this sender's serialised RTP header, per frame patched
        self._abs_send_time_at: int | None = None  # offset of the 3 abs-send-time bytes in it
        self._patchable = False  # whether the header differs between frames only in those bytes and the timestamp
        self._batch = DatagramBatch()
        self._dtls = None  # the sender's DTLS transport the route below was taken from
        self._nominated: dict = {}  # its ICE connection's nominated pairs (aioice keeps one dict per connection)
        self._pair = None
        self._transport = self._addr = self._protect = None

    def _serialize(self, timestamp: int, abs_send_time: int) -> bytes:
        packet = RtpPacket(payload_type=self.payload_type, timestamp=timestamp, ssrc=self.sender._ssrc)
        packet.extensions = self._extensions
        self._extensions.abs_send_time = abs_send_time
        return packet.serialize(self.sender._RTCRtpSender__rtp_header_extensions_map)

    def header(self, timestamp: int, abs_send_time: int) -> bytearray:
        """aiortc's serialisation of this sender's header; after the first frame only the timestamp
        and (where negotiated, i.e. video) abs-send-time bytes are rewritten (the rest is the same
        for every frame)."""
        if self._header is None:
            self._extensions = RtpPacket().extensions
            self._extensions.mid = self.sender._RTCRtpSender__mid
            self._header = self._serialize(0, 0)
            probe = self._serialize(0, 0xFFFFFF)
            changed = [i for i, (a, b) in enumerate(zip(self._header, probe)) if a != b]
            if len(changed) == 3 and changed[2] == changed[0] + 2 and len(probe) == len(self._header):
                self._abs_send_time_at = changed[0]
                self._patchable = True
            elif not changed and len(probe) == len(self._header):
                self._patchable = True  # abs-send-time not negotiated (audio): only the timestamp changes
        if not self._patchable:
            return bytearray(self._serialize(timestamp, abs_send_time))
        header = bytearray(self._header)
        header[4:8] = timestamp.to_bytes(4, "big")
        at = self._abs_send_time_at
        if at is not None:
            header[at:at + 3] = abs_send_time.to_bytes(3, "big")
        return header

    def ready(self) -> bool:
        """The sender has started and its DTLS transport is connected (what aiortc's ``_send_rtp`` checks)."""
        return self.payload_type is not None and self.sender._RTCRtpSender__transport._state is DtlsState.CONNECTED

    def _route(self, dtls) -> bool:
        """Take the nominated pair's transport and address and the SRTP session; False while there is none."""
        if dtls is not self._dtls:
            self._dtls, self._nominated, self._pair = dtls, dtls.transport._connection._nominated, None
        pair = self._nominated.get(1)
        if pair is None:
            return False
        if pair is not self._pair:
            self._pair, self._transport, self._addr = pair, pair.protocol.transport, pair.remote_addr
            self._protect = SrtpProtect(dtls._tx_srtp)
        return True

    def rebase(self, first: RtpPacket, clock_rate: int) -> None:
        """Map a (new) source's sequence numbers and timestamps into this sender's, from `first` on:
        the sequence continues where it stopped and the timestamp advances by the time that passed,
        so the subscriber's browser sees one stream whichever participant fills the slot."""
        now = time.monotonic()
        if self._last_timestamp is None:
            timestamp = self._timestamp_origin
        else:
            timestamp = self._last_timestamp + max(1, int((now - self._last_time) * clock_rate))
        self._timestamp_offset = (timestamp - first.timestamp) & 0xFFFFFFFF
        self._sequence_offset = (self._sequence - first.sequence_number) & 0xFFFF
        self._first = first.sequence_number

    def send(self, packets: list[RtpPacket], ntp: int, abs_send_time: int) -> bool:
        """Sends a source's packets (after `rebase`); False (nothing sent) while the sender is not
        started or not connected."""
        sender = self.sender
        dtls = sender._RTCRtpSender__transport
        if self.payload_type is None or dtls._state is not DtlsState.CONNECTED or not sender._enabled:
            return False
        if (dtls is not self._dtls or self._nominated.get(1) is not self._pair) and not self._route(dtls):
            return False
        protect, ring, first = self._protect, self._ring, self._first
        sequence_offset, timestamp_offset = self._sequence_offset, self._timestamp_offset
        header = self.header(0, abs_send_time)
        pt = self.payload_type
        datas = []
        octets = 0
        timestamp = seq = None
        for packet in packets:
            if (packet.sequence_number - first) & 0xFFFF >= 0x8000:
                continue  # from before this source was started on this sender
            seq = (packet.sequence_number + sequence_offset) & 0xFFFF
            timestamp = (packet.timestamp + timestamp_offset) & 0xFFFFFFFF
            _HEADER_FIELDS.pack_into(header, 1, pt | 0x80 if packet.marker else pt, seq, timestamp)
            payload = packet.payload
            plain = bytes(header) + payload
            ring[seq % RTP_HISTORY_SIZE] = plain  # kept for retransmission on NACK, as aiortc's sender keeps it
            datas.append(protect(plain))
            octets += len(payload)
            if ((seq - self._sequence) & 0xFFFF) < 0x8000:  # not before the next number: continue after it
                self._sequence = (seq + 1) & 0xFFFF
        if not datas:
            return True
        if len(datas) == 1:
            self._batch.send_one(self._transport, datas[0], self._addr)
        else:
            self._batch.send(self._transport, datas, self._addr)
        self._last_timestamp, self._last_time = timestamp, time.monotonic()
        # What the sender's Sender Reports and getStats read, and the transport's counters.
        count = len(datas)
        sender._RTCRtpSender__ntp_timestamp = ntp
        sender._RTCRtpSender__rtp_timestamp = timestamp
        sender._RTCRtpSender__octet_count += octets
        sender._RTCRtpSender__packet_count += count
        dtls._RTCDtlsTransport__tx_bytes += sum(map(len, datas))
        dtls._RTCDtlsTransport__tx_packets += count
        return True


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
        self.sent = 0
        self._out: RtpOut | None = None
        self._rebase = True  # the next packets start a source on this sender (video: at a keyframe)
        self._live = True  # readyState == "live", without the property call per frame
        self._ended = asyncio.get_event_loop().create_future()

    def attach_sender(self, sender: RTCRtpSender) -> None:
        # PLI / FIR from the subscriber: forward to the publisher instead of "encoding" a keyframe.
        sender._send_keyframe = self.request_keyframe
        self._out = out = RtpOut(sender)
        start = sender.send

        async def send(parameters) -> None:
            await start(parameters)  # configures the header extensions RtpOut.header serialises with
            # aiortc's sender sends with the first negotiated codec (`_run_rtp(parameters.codecs[0])`).
            out.payload_type = parameters.codecs[0].payloadType

        sender.send = send

    def bind(self, publication: Publication) -> None:
        self.unbind()
        self.source = publication
        publication.subscribers.add(self)
        self._rebase = True
        publication.request_keyframe()  # a new subscriber needs a keyframe to start decoding

    def restart(self) -> None:
        """The source's numbering changes: map it afresh from its next packet (video: its next keyframe)."""
        self._rebase = True

    def unbind(self) -> None:
        if self.source is not None:
            self.source.subscribers.discard(self)
            self.source = None

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
        if sent:
            self._rebase = False
            self.sent += 1
        else:  # what is dropped now must be followed by a fresh start (for video, a keyframe)
            self._rebase = True

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

